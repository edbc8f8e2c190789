package schedule

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"runtime"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/eventstream"
	"github.com/nats-io/nats.go/jetstream"

	"kanade-backend/actors/actorsys"
	"kanade-backend/actors/clock"
	"kanade-backend/messages"
	"kanade-backend/messages/cron"
	"kanade-backend/storage/broker"
)

// Source is where the supervisor reads schedules from.
type Source interface {
	// Schedules opens KV schedules.
	Schedules(ctx context.Context) (jetstream.KeyValue, error)
	// LastFires returns the newest fire time of each schedule that ever
	// fired, for catch-up after downtime.
	LastFires(ctx context.Context) (map[string]time.Time, error)
}

// Config is what the scheduler is built from.
type Config struct {
	Clock  clock.Clock
	Source Source
	Reader Reader
	Writer Writer
	Audit  Auditor
	// Exec is the exec engine; nil records every fire as failed.
	Exec    *actor.PID
	Metrics *Metrics
	Logger  *slog.Logger
	// FireTimeout bounds the wait for the exec engine (default
	// DefaultFireTimeout).
	FireTimeout time.Duration
	// DecommissionAfter is how long a PC may stay silent and still count
	// for once_per_pc / once_per_target being done ([fleet]
	// decommission_after; default DefaultDecommissionAfter).
	DecommissionAfter time.Duration
	// OnTick, if set, is called at the start of every tick with the
	// schedule id, inside the schedule's actor. Tests use it to make a
	// tick panic (fault isolation); production leaves it nil.
	OnTick func(scheduleID string)
	// Fence, if set, returns the fencing token of the leader term this
	// backend holds now (the leader lease's revision), or why it holds
	// none (NATS away, another backend leads). Every fire carries the
	// token (ExecRequest.Fence), so that the store refuses it once a newer
	// leader took over; a tick without one fires nothing and is recorded
	// as skipped with the error. Nil: fires are not fenced (a lone
	// scheduler in tests).
	Fence func() (uint64, error)
	// Context ends when the actors' stop begins (the app cancels it
	// before actorsys.Stop). The scheduler's store and KV calls (the watch, seed loads,
	// settling a fire, the auto-disable write) derive from it, so a stop
	// ends them instead of waiting for their timeouts. Nil: never ends.
	Context context.Context
}

// mailboxThroughput is the library's default: how many messages a schedule
// actor handles before its worker yields to others.
const mailboxThroughput = 300

// workerCount sizes the schedule actors' worker pool. No activation waits
// on I/O (the store and KV calls run on goroutines of their own), so a few
// workers per core suffice; more would only bring back the goroutine churn
// the pool exists to avoid (2, 4 and 8 workers measured the same on 2
// cores).
func workerCount() int { return max(8, 4*runtime.GOMAXPROCS(0)) }

// DefaultDecommissionAfter is how long a PC may stay silent and still be
// waited for by once_per_pc and once_per_target: two weeks covers
// holidays; a PC gone for longer is taken as decommissioned.
const DefaultDecommissionAfter = 14 * 24 * time.Hour

// Name is the supervisor's actor name.
const Name = "schedules"

// Start spawns the supervisor as a top-level actor. Stop it with the
// actor system's Stop (actorsys.Stop); its Stopping handler stops the KV
// watch and every schedule actor.
func Start(sys *actor.ActorSystem, cfg Config) (*actor.PID, error) {
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.FireTimeout <= 0 {
		cfg.FireTimeout = DefaultFireTimeout
	}
	if cfg.DecommissionAfter <= 0 {
		cfg.DecommissionAfter = DefaultDecommissionAfter
	}
	if cfg.Source == nil || cfg.Reader == nil || cfg.Writer == nil || cfg.Audit == nil {
		return nil, fmt.Errorf("schedule supervisor: Source, Reader, Writer and Audit are required")
	}
	if cfg.Context == nil {
		cfg.Context = context.Background()
	}
	log := cfg.Logger.With("component", "scheduler")
	metrics := cfg.Metrics
	e := &env{
		base: cfg.Context, clock: cfg.Clock, reader: cfg.Reader, writer: cfg.Writer, audit: cfg.Audit, exec: cfg.Exec,
		metrics: metrics, log: log, onTick: cfg.OnTick, fence: cfg.Fence,
		fireTimeout: cfg.FireTimeout,
		fleet: newFleetView(func(pc string, err error) {
			metrics.skippedPCs.Inc()
			log.Warn("stored pc_id left out of every schedule target: not a valid subject token", "pc_id", pc, "err", err)
		}),
		workers: actorsys.NewWorkerPool(workerCount(), mailboxThroughput),
		alarms:  newAlarms(cfg.Clock),
	}
	e.fleet.horizon = cfg.DecommissionAfter
	// The failure callback belongs to the props, but must reach whichever
	// supervisor instance is current (a restarted supervisor is a new one).
	// Both the producer and the callback run on the supervisor's own
	// mailbox goroutine, so the holder needs no lock.
	holder := &supervisorHolder{}
	props := actor.PropsFromProducer(func() actor.Actor {
		holder.cur = newSupervisor(e, cfg.Source)
		return holder.cur
	}, actor.WithSupervisor(actorsys.RestartLimited(MaxRestarts, RestartWindow, func(child *actor.PID, reason any) {
		holder.cur.onChildFailure(child, reason)
	})))
	pid, err := sys.Root.SpawnNamed(props, Name)
	if err != nil {
		return nil, fmt.Errorf("spawn schedule supervisor: %w", err)
	}
	return pid, nil
}

type supervisorHolder struct{ cur *supervisor }

// entry is the supervisor's view of one schedule.
type entry struct {
	id      string
	def     messages.Schedule
	rev     uint64
	created time.Time
	// err is set while the current revision is invalid: no actor runs.
	err error
	// expr is the parsed expression of def until the actor takes it.
	expr    *cron.Expr
	pid     *actor.PID
	faulted bool
	rec     *record
	// job is the job the actor is registered under for result routing;
	// "" when it receives none (every_tick needs no results).
	job     string
	seenGen uint64
}

// supervisor owns the KV watch on schedules and one actor per valid
// schedule; it routes projected results to the actors of their job and
// answers the status API.
type supervisor struct {
	env *env
	src Source

	entries map[string]*entry
	byPID   map[string]*entry
	// byJob routes results: job id → schedule id → actor, for the actors
	// that keep dedup state. Results are never broadcast to every actor.
	byJob map[string]map[string]*actor.PID

	lastFires map[string]time.Time
	// initial is true until the first snapshot has been applied: only the
	// schedules it delivers look for an instant missed during downtime.
	initial   bool
	startedAt time.Time
	loadedAt  time.Time

	// stopping is set once the supervisor itself stops or restarts: its
	// children then terminate because their parent stops them, which is
	// not a fault.
	stopping bool

	// Dedup seeds: the schedules waiting for theirs (by schedule id), and
	// the ones the running bulk load covers (schedule → job; one load at a
	// time, see seed).
	seedWant    map[string]*needSeed
	seeding     bool
	seedLoading map[string]string

	sys *actor.ActorSystem
	sub *eventstream.Subscription
	// workCtx ends when the supervisor stops (watchCancel): the watch and
	// a running seed load end with it.
	workCtx     context.Context
	watchCancel context.CancelFunc
	// work counts the goroutines the supervisor owns (the watch, a seed
	// load), waited for when it stops.
	work sync.WaitGroup
}

var _ actor.Actor = (*supervisor)(nil)

func newSupervisor(e *env, src Source) *supervisor {
	return &supervisor{env: e, src: src, entries: map[string]*entry{}, byPID: map[string]*entry{},
		byJob: map[string]map[string]*actor.PID{}, seedWant: map[string]*needSeed{}, initial: true}
}

// Messages from the watch goroutine.
type (
	// kvEntry is one watch event. A put arrives decoded and validated: the
	// watch goroutine does that work, so that on a start with thousands of
	// schedules it runs beside the supervisor instead of inside it.
	kvEntry struct {
		gen     uint64
		key     string
		rev     uint64
		op      jetstream.KeyValueOp
		created time.Time
		v       Versioned
	}
	snapshotDone struct{ gen uint64 }
	lastFires    struct{ fires map[string]time.Time }
)

// Dedup seeds, between the schedule actors and the supervisor.
type (
	// needSeed asks for a schedule's dedup state.
	needSeed struct {
		pid *actor.PID
		key SeedKey
	}
	// seedsLoaded is a bulk load's result.
	seedsLoaded struct {
		asked []*needSeed
		seeds *Seeds
		err   error
	}
)

// Requests from Client (answered to the sender).
type (
	statusRequest  struct{ id string }
	runRequest     struct{ id string }
	summaryRequest struct{}
	statusReply    struct {
		status Status
		err    error
	}
	runReply struct {
		tick Tick
		err  error
	}
)

func (s *supervisor) Receive(ctx actor.Context) {
	switch ctx.Message().(type) {
	case *actor.Started:
		s.start(ctx)
	case *actor.Stopping:
		s.stopping = true
		s.stop()
	case *actor.Restarting:
		s.stopping = true
		s.stop()
	case *actor.Stopped:
		// Every schedule actor has stopped by now; a restart, which keeps
		// the workers for the next incarnation's actors, never gets here.
		s.env.workers.Close()
	default:
		s.receiveWork(ctx)
	}
}

// receiveWork handles the scheduler's own messages: the KV watch, results
// to route, dedup seeds, its actors' ends, and the Client's requests.
func (s *supervisor) receiveWork(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *lastFires:
		s.lastFires = m.fires
	case *kvEntry:
		s.onEntry(ctx, m)
	case *snapshotDone:
		s.onSnapshotDone(ctx, m)
	case *messages.ResultsProjected:
		s.route(ctx, m)
	case *needSeed:
		if s.seeding && s.seedLoading[m.key.ScheduleID] == m.key.JobID {
			return // the running load answers it
		}
		s.seedWant[m.key.ScheduleID] = m
		s.seed(ctx)
	case *seedsLoaded:
		s.onSeeds(ctx, m)
	case *actor.Terminated:
		s.onTerminated(m)
	case *statusRequest:
		st, err := s.status(m.id)
		ctx.Respond(&statusReply{status: st, err: err})
	case *summaryRequest:
		ctx.Respond(s.summary())
	case *runRequest:
		s.run(ctx, m)
	}
}

func (s *supervisor) start(ctx actor.Context) {
	s.startedAt = s.env.clock.Now()
	sys, self := ctx.ActorSystem(), ctx.Self()
	s.sys = sys
	// One subscription for the whole scheduler: the EventStream calls it on
	// the projector's goroutine, so it forwards results, and applies the
	// fleet view's events in place (a map update under the view's lock,
	// which readers hold for map work only: it never waits on I/O or on an
	// actor).
	fl := s.env.fleet
	s.sub = sys.EventStream.Subscribe(func(evt any) {
		if r, ok := evt.(*messages.ResultsProjected); ok {
			sys.Root.Send(self, r)
			return
		}
		if isFleetEvent(evt) {
			fl.apply(evt)
		}
	})
	wctx, cancel := context.WithCancel(s.env.base)
	s.workCtx, s.watchCancel = wctx, cancel
	s.work.Add(1)
	go func() {
		defer s.work.Done()
		w := &watcher{src: s.src, reader: s.env.reader, fleet: fl, log: s.env.log, send: func(m any) { sys.Root.Send(self, m) }}
		w.run(wctx)
	}()
}

// stop ends the watch goroutine, a running seed load and the events
// subscription. The schedule actors are children: the actor system stops
// them after this returns.
func (s *supervisor) stop() {
	if s.sub != nil {
		s.sys.EventStream.Unsubscribe(s.sub)
		s.sub = nil
	}
	if s.watchCancel != nil {
		s.watchCancel()
		s.watchCancel = nil
	}
	s.work.Wait()
}

// seed loads, in one bulk query (Reader.Seeds), the dedup state of every
// schedule that asked for it, unless a load is running (the schedules
// asking meanwhile get the next one) or the initial snapshot is still
// coming in (every schedule of a start asks; they are loaded together once
// it is applied). The load runs on a goroutine; its result comes back as
// seedsLoaded.
func (s *supervisor) seed(ctx actor.Context) {
	if s.seeding || s.initial || len(s.seedWant) == 0 {
		return
	}
	asked := make([]*needSeed, 0, len(s.seedWant))
	keys := make([]SeedKey, 0, len(s.seedWant))
	s.seedLoading = make(map[string]string, len(s.seedWant))
	for _, n := range s.seedWant {
		asked = append(asked, n)
		keys = append(keys, n.key)
		s.seedLoading[n.key.ScheduleID] = n.key.JobID
	}
	s.seedWant = map[string]*needSeed{}
	s.seeding = true
	root, self, reader, now := ctx.ActorSystem().Root, ctx.Self(), s.env.reader, s.env.clock.Now()
	wctx, cancel := context.WithTimeout(s.workCtx, seedTimeout)
	s.work.Add(1)
	go func() {
		defer s.work.Done()
		defer cancel()
		seeds, err := reader.Seeds(wctx, keys, now)
		root.Send(self, &seedsLoaded{asked: asked, seeds: seeds, err: err})
	}()
}

// seedTimeout bounds one bulk seed load.
const seedTimeout = 30 * time.Second

// onSeeds hands each schedule its part of a bulk load: its own copy of its
// job's newest successes (each actor updates its map as results come).
func (s *supervisor) onSeeds(ctx actor.Context, m *seedsLoaded) {
	s.seeding, s.seedLoading = false, nil
	if m.err != nil {
		s.env.log.Error("load the dedup state of schedules", "schedules", len(m.asked), "err", m.err)
	}
	for _, n := range m.asked {
		msg := &seeded{jobID: n.key.JobID, err: m.err}
		if m.err == nil {
			msg.latest = maps.Clone(m.seeds.Latest[n.key.JobID])
			msg.inFlight = m.seeds.InFlight[n.key.ScheduleID]
		}
		ctx.Send(n.pid, msg)
	}
	s.seed(ctx)
}

func (s *supervisor) onEntry(ctx actor.Context, m *kvEntry) {
	en := s.entries[m.key]
	if en != nil {
		en.seenGen = m.gen
		// Events older than what the scheduler has are ignored (a re-watch
		// replays the current revision of every key).
		if m.rev <= en.rev {
			return
		}
	}
	if m.op == jetstream.KeyValueDelete || m.op == jetstream.KeyValuePurge {
		if en != nil {
			s.remove(ctx, en)
			s.env.log.Info("schedule deleted", "schedule", m.key, "rev", m.rev)
		}
		return
	}
	v := m.v
	isNew := en == nil
	if isNew {
		en = &entry{id: m.key, rec: &record{}, seenGen: m.gen}
		s.entries[m.key] = en
	}
	wasInvalid, wasFaulted := en.err != nil, en.faulted
	en.def, en.rev, en.created, en.err = v.Def, v.Rev, m.created, v.Err
	en.expr = v.expr
	if v.Err != nil {
		s.stopActor(ctx, en)
		s.setFaulted(en, false)
		if !wasInvalid {
			s.env.metrics.invalid.Inc()
		}
		s.env.log.Warn("schedule is invalid and will not run", "schedule", m.key, "rev", m.rev, "err", v.Err)
		return
	}
	if wasInvalid {
		s.env.metrics.invalid.Dec()
	}
	if en.pid == nil {
		// New, previously invalid, or faulted: a new revision starts afresh.
		if wasFaulted {
			en.rec.resetFailures()
		}
		s.setFaulted(en, false)
		s.spawn(ctx, en)
	} else {
		ctx.Send(en.pid, &update{def: v.Def, rev: v.Rev, expr: en.expr})
		en.expr = nil
	}
	s.register(en)
}

func (s *supervisor) spawn(ctx actor.Context, en *entry) {
	b := &box{def: en.def, rev: en.rev, expr: en.expr}
	en.expr = nil
	if s.initial {
		since := en.created
		if last, ok := s.lastFires[en.id]; ok && last.After(since) {
			since = last
		}
		if !since.IsZero() {
			b.missed = &missedSince{Since: since}
		}
	}
	pid := ctx.SpawnPrefix(s.env.props(b, en.rec), en.id+"-")
	en.pid = pid
	s.byPID[pid.Id] = en
}

// stopActor stops an entry's actor on purpose (delete, invalid revision).
// It is forgotten first, so its Terminated is not taken for a fault.
func (s *supervisor) stopActor(ctx actor.Context, en *entry) {
	s.unregister(en)
	if en.pid == nil {
		return
	}
	delete(s.byPID, en.pid.Id)
	ctx.Stop(en.pid)
	en.pid = nil
}

func (s *supervisor) remove(ctx actor.Context, en *entry) {
	s.stopActor(ctx, en)
	if en.err != nil {
		s.env.metrics.invalid.Dec()
	}
	s.setFaulted(en, false)
	delete(s.entries, en.id)
}

func (s *supervisor) setFaulted(en *entry, f bool) {
	if en.faulted == f {
		return
	}
	en.faulted = f
	if f {
		s.env.metrics.faulted.Inc()
	} else {
		s.env.metrics.faulted.Dec()
	}
}

// register files the actor under its job for result routing. every_tick
// schedules keep no dedup state, so they get no results at all.
func (s *supervisor) register(en *entry) {
	job := ""
	if en.pid != nil && en.def.EffectiveMode() != messages.ModeEveryTick {
		job = en.def.JobID
	}
	if job == en.job {
		if job != "" {
			s.byJob[job][en.id] = en.pid
		}
		return
	}
	s.unregister(en)
	if job == "" {
		return
	}
	m := s.byJob[job]
	if m == nil {
		m = map[string]*actor.PID{}
		s.byJob[job] = m
	}
	m[en.id] = en.pid
	en.job = job
}

func (s *supervisor) unregister(en *entry) {
	if en.job == "" {
		return
	}
	if m := s.byJob[en.job]; m != nil {
		delete(m, en.id)
		if len(m) == 0 {
			delete(s.byJob, en.job)
		}
	}
	en.job = ""
}

func (s *supervisor) onSnapshotDone(ctx actor.Context, m *snapshotDone) {
	if s.initial {
		s.initial = false
		s.lastFires = nil
		s.loadedAt = s.env.clock.Now()
		d := s.loadedAt.Sub(s.startedAt)
		s.env.metrics.loaded.Set(d.Seconds())
		s.env.log.Info("schedules loaded", "schedules", len(s.entries), "took", d.Round(time.Millisecond))
		// Every schedule that keeps dedup state is seeded now, in one load,
		// whether or not its actor has asked yet (its asking then finds the
		// load running).
		for _, en := range s.entries {
			if en.pid != nil && en.def.EffectiveMode() != messages.ModeEveryTick {
				s.seedWant[en.id] = &needSeed{pid: en.pid, key: SeedKey{ScheduleID: en.id, JobID: en.def.JobID}}
			}
		}
		s.seed(ctx)
	}
	// After a re-watch, a key the new snapshot did not deliver at all is
	// gone (its history expired while the watch was down).
	for _, en := range s.entries {
		if en.seenGen < m.gen {
			s.remove(ctx, en)
		}
	}
}

// route delivers each result only to the actors of its job.
func (s *supervisor) route(ctx actor.Context, m *messages.ResultsProjected) {
	if len(s.byJob) == 0 {
		return
	}
	byJob := map[string][]messages.ProjectedResult{}
	for _, r := range m.Results {
		if r.JobID != "" && s.byJob[r.JobID] != nil {
			byJob[r.JobID] = append(byJob[r.JobID], r)
		}
	}
	for job, rs := range byJob {
		msg := &jobResults{results: rs}
		for _, pid := range s.byJob[job] {
			ctx.Send(pid, msg)
		}
	}
}

// onChildFailure runs on the supervisor's goroutine while it handles a
// child's failure, before the strategy restarts or stops the child.
func (s *supervisor) onChildFailure(child *actor.PID, reason any) {
	en := s.byPID[child.Id]
	if en == nil {
		return
	}
	msg := fmt.Sprint(reason)
	en.rec.failed(s.env.clock.Now(), msg)
	s.env.log.Error("schedule actor failed", "schedule", en.id, "reason", msg)
}

// onTerminated sees every child that stopped. One still filed under its
// PID was not stopped by the supervisor: the restart policy gave up on it.
func (s *supervisor) onTerminated(m *actor.Terminated) {
	en := s.byPID[m.Who.Id]
	if en == nil || s.stopping {
		return
	}
	delete(s.byPID, m.Who.Id)
	en.pid = nil
	s.unregister(en)
	s.setFaulted(en, true)
	s.env.log.Error("schedule faulted: its actor failed too often and was stopped; edit the schedule to restart it",
		"schedule", en.id, "max_restarts", MaxRestarts, "window", RestartWindow, "last_error", en.rec.view(s.env.clock.Now()).lastError)
}

// Schedule states of the status API.
const (
	StateRunning    = "running"
	StateRestarting = "restarting"
	StateFaulted    = "faulted"
	StateDisabled   = "disabled"
	StateInvalid    = "invalid"
)

// Status is one schedule as the status API shows it.
type Status struct {
	// Schedule is the definition; the API shows it beside the status.
	Schedule messages.Schedule `json:"-"`
	Revision uint64            `json:"revision"`
	// State is running, restarting (failed within the last RestartWindow
	// and restarted), faulted, disabled or invalid.
	State string  `json:"state"`
	Error *string `json:"error"`
	// Restarts counts restarts after failures since the revision was
	// loaded.
	Restarts int    `json:"restarts"`
	TZ       string `json:"tz"`
	// NextFires are the next fire times while the schedule runs.
	NextFires []FireTime `json:"next_fires"`
	// NextTick is the instant the actor's timer is set for (null when
	// none is armed: disabled, faulted, invalid, or no further instant).
	NextTick *time.Time `json:"next_tick"`
	// LastTicks are the newest tick outcomes first.
	LastTicks []Tick `json:"last_ticks"`
	// Dedup state (once_per_pc, once_per_target): PCs with a recorded
	// success, PCs a fire is still waiting for.
	Completions int `json:"completions"`
	InFlight    int `json:"in_flight"`
	// Progress is done / remaining / offline over the known PCs of the
	// target (once_per_pc, once_per_target), as of the last tick or
	// result; null before either, and for every_tick.
	Progress *Progress `json:"progress"`
}

// NextFireCount is how many upcoming fire times the status shows.
const NextFireCount = 10

func (s *supervisor) status(id string) (Status, error) {
	en := s.entries[id]
	if en == nil {
		return Status{}, messages.NotFoundf("schedule '%s' not found", id)
	}
	now := s.env.clock.Now()
	v := en.rec.view(now)
	st := Status{Schedule: en.def, Revision: en.rev, Restarts: v.restarts, LastTicks: en.rec.lastTicks(),
		NextFires: []FireTime{}, Completions: v.completions, InFlight: v.inFlight, TZ: en.def.TZ, Progress: v.progress}
	if st.TZ == "" {
		st.TZ = "UTC"
	}
	setErr := func(s string) { st.Error = &s }
	switch {
	case en.err != nil:
		st.State = StateInvalid
		setErr(en.err.Error())
	case en.faulted:
		st.State = StateFaulted
		setErr(v.lastError)
	case !en.def.Enabled:
		st.State = StateDisabled
	case v.recentFailures > 0:
		st.State = StateRestarting
		setErr(v.lastError)
	default:
		st.State = StateRunning
	}
	if !v.nextTick.IsZero() && en.pid != nil {
		nt := v.nextTick.UTC()
		st.NextTick = &nt
	}
	if st.State == StateRunning || st.State == StateRestarting {
		if expr, err := en.def.CronExpr(); err == nil {
			st.NextFires = NextFireTimes(expr, now, NextFireCount)
		}
	}
	return st, nil
}

// Summary counts the schedules by state.
type Summary struct {
	Total    int  `json:"total"`
	Running  int  `json:"running"`
	Invalid  int  `json:"invalid"`
	Faulted  int  `json:"faulted"`
	Disabled int  `json:"disabled"`
	Loaded   bool `json:"loaded"`
}

func (s *supervisor) summary() *Summary {
	sum := &Summary{Total: len(s.entries), Loaded: !s.initial}
	for _, en := range s.entries {
		switch {
		case en.err != nil:
			sum.Invalid++
		case en.faulted:
			sum.Faulted++
		case !en.def.Enabled:
			sum.Disabled++
		default:
			sum.Running++
		}
	}
	return sum
}

func (s *supervisor) run(ctx actor.Context, m *runRequest) {
	en := s.entries[m.id]
	switch {
	case en == nil:
		ctx.Respond(&runReply{err: messages.NotFoundf("schedule '%s' not found", m.id)})
	case en.err != nil:
		ctx.Respond(&runReply{err: messages.Conflictf("schedule '%s' is invalid and cannot run: %v", m.id, en.err)})
	case en.faulted || en.pid == nil:
		ctx.Respond(&runReply{err: messages.Conflictf("schedule '%s' is faulted (%s); edit it to restart it", m.id, en.rec.view(s.env.clock.Now()).lastError)})
	default:
		// The actor answers the caller directly with the tick outcome.
		ctx.RequestWithCustomSender(en.pid, &runNow{}, ctx.Sender())
	}
}

// watcher follows KV schedules on a goroutine the supervisor owns and
// turns every entry into a message to the supervisor.
type watcher struct {
	src    Source
	reader Reader
	fleet  *fleetView
	log    *slog.Logger
	send   func(any)
}

func (w *watcher) run(ctx context.Context) {
	// The last fire of every schedule is read once, before the snapshot, so
	// that the catch-up of the whole fleet costs one query.
	lf, err := w.src.LastFires(ctx)
	if err != nil {
		w.log.Warn("could not read the last fire of each schedule; no catch-up after this downtime", "err", err)
	}
	w.send(&lastFires{fires: lf})
	// The fleet view is loaded before any schedule actor exists, so no
	// tick reads it empty. Events already applied meanwhile are newer
	// facts and are kept.
	backoff := clock.Backoff{Min: 100 * time.Millisecond, Max: 10 * time.Second}
	for ctx.Err() == nil {
		snap, err := w.reader.LoadFleet(ctx)
		if err == nil {
			w.fleet.load(snap)
			break
		}
		d := backoff.Next()
		w.log.Warn("cannot load the fleet view for the scheduler; retrying", "err", err, "in", d)
		if !clock.Sleep(ctx, clock.Real{}, d) {
			return
		}
	}
	backoff.Reset()
	for gen := uint64(1); ctx.Err() == nil; gen++ {
		kw, err := w.open(ctx)
		if err != nil {
			d := backoff.Next()
			w.log.Warn("cannot watch KV schedules; retrying", "err", err, "in", d)
			if !clock.Sleep(ctx, clock.Real{}, d) {
				return
			}
			continue
		}
		backoff.Reset()
		broker.FollowWatch(kw, func(updates <-chan jetstream.KeyValueEntry) { w.pump(ctx, updates, gen) })
	}
}

func (w *watcher) open(ctx context.Context) (jetstream.KeyWatcher, error) {
	kv, err := w.src.Schedules(ctx)
	if err != nil {
		return nil, err
	}
	kw, err := kv.WatchAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("watch kv schedules: %w", err)
	}
	return kw, nil
}

// pump forwards entries until ctx ends or the watch closes.
func (w *watcher) pump(ctx context.Context, updates <-chan jetstream.KeyValueEntry, gen uint64) {
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-updates:
			if !ok {
				return
			}
			if e == nil {
				w.send(&snapshotDone{gen: gen})
				continue
			}
			m := &kvEntry{gen: gen, key: e.Key(), rev: e.Revision(), op: e.Operation(), created: e.Created()}
			if m.op == jetstream.KeyValuePut {
				m.v = decodeEntry(e.Key(), e.Value(), e.Revision())
			}
			w.send(m)
		}
	}
}

// decodeEntry reads one KV schedules value for key.
func decodeEntry(key string, value []byte, rev uint64) Versioned {
	v := DecodeVersioned(value, rev)
	if v.Def.ID == "" {
		v.Def.ID = key
	}
	if v.Err == nil && v.Def.ID != key {
		v.Err = fmt.Errorf("id %q does not match its KV key %q", v.Def.ID, key)
	}
	return v
}
