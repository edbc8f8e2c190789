package schedule

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"kanade-backend/actors/actorsys"
	"kanade-backend/actors/clock"
	"kanade-backend/actors/exec"
	"kanade-backend/messages"
	"kanade-backend/messages/cron"
)

// ioTimeout bounds each store or KV call made for a schedule actor
// (settling an unanswered fire, the auto-disable write; the supervisor's
// bulk dedup seed has seedTimeout). None runs inside Receive: each runs on
// a goroutine and answers with a message, so a slow store never holds a
// worker that thousands of other schedules' ticks need.
const ioTimeout = 5 * time.Second

// DefaultFireTimeout is how long a schedule waits for the exec engine to
// answer a fire before it settles the fire by looking its exec up.
const DefaultFireTimeout = 30 * time.Second

// maxDecideAttempts bounds how often one tick re-decides after losing the
// compare-and-set of an auto-disable to a concurrent edit.
const maxDecideAttempts = 3

// env is what every schedule actor shares: its injected dependencies. It
// is immutable once the supervisor has built it.
type env struct {
	// base ends when the backend begins to stop (Config.Context): the
	// actors' I/O goroutines derive their contexts from it.
	base        context.Context
	clock       clock.Clock
	reader      Reader
	writer      Writer
	audit       Auditor
	exec        *actor.PID
	metrics     *Metrics
	log         *slog.Logger
	onTick      func(scheduleID string)
	fence       func() (uint64, error)
	fireTimeout time.Duration
	// fleet is the in-memory view of jobs, agents and groups that ticks
	// read (see fleet).
	fleet *fleetView
	// workers run the schedule actors' mailboxes (actorsys.WorkerPool); the
	// supervisor closes them when it stops for good.
	workers *actorsys.WorkerPool
	// alarms are the cron timers, one per instant (see alarms).
	alarms *alarms
}

// box carries what must outlive one incarnation of a schedule actor: the
// newest definition it applied (a restarted actor must not fall back to
// the definition it was spawned with), the last instant it handled (so a
// restart never fires the same instant twice), the one-time catch-up of a
// backend start, the correlation ids of its exec requests and a fire still
// waiting for the exec engine when the actor failed. The supervisor fills
// it before the spawn; after that only the actor's message handling
// touches it (one message at a time, on whichever worker of the pool runs
// the mailbox), and the producer that reads it runs inside a restart,
// which is such a message.
type box struct {
	def messages.Schedule
	rev uint64
	// expr is def's expression as the supervisor parsed it while
	// validating; the first apply takes it instead of parsing again.
	expr        *cron.Expr
	lastInstant time.Time
	missed      *missedSince
	started     bool
	// gen numbers the timers armed for this schedule; a tick carries the
	// gen of its timer, so a tick from a timer since re-armed (or from an
	// earlier incarnation, still queued in the mailbox) is recognised.
	gen uint64
	// corr numbers the exec requests (ExecRequest.CorrelationID). It
	// outlives a restart, so a new incarnation never takes the answer to
	// an earlier incarnation's request for its own.
	corr uint64
	// pending is the fire the failed incarnation was waiting for; the
	// next one adopts it, so its answer is still recorded.
	pending *pendingFire
}

// missedSince asks a schedule loaded at backend start to catch up on the
// instant it missed while the backend was down (catchUp): the latest one
// after Since, the later of its last fire and the creation of its current
// revision.
type missedSince struct {
	Since time.Time
}

// Messages a schedule actor receives.
type (
	// instantDue is sent by the alarm armed for the actor's next instant (one
	// clock timer shared by every schedule due then, see alarms); gen
	// tells an instantDue of an alarm since re-armed from the current one.
	instantDue struct {
		gen     uint64
		instant time.Time
	}
	// update carries a newer KV revision of the schedule.
	update struct {
		def  messages.Schedule
		rev  uint64
		expr *cron.Expr
	}
	// jobResults are the projected results of the schedule's job, routed
	// by the supervisor.
	jobResults struct {
		results []messages.ProjectedResult
	}
	// runNow fires at once through the normal dedup path; the outcome is
	// sent to the sender as *Tick.
	runNow struct{}
	// seeded is the dedup state of the schedule's job, loaded in bulk by
	// the supervisor (see supervisor.seed).
	seeded struct {
		jobID    string
		latest   map[string]time.Time
		inFlight []InFlightPC
		err      error
	}
	// fireTimeout is the fire's timer expiring before any answer.
	fireTimeout struct{ corr uint64 }
	// fireSettled is what the store says became of an unanswered fire.
	fireSettled struct {
		corr uint64
		s    exec.Settlement
		err  error
	}
	// disableDone is the auto-disable write's outcome.
	disableDone struct {
		newRev uint64
		cur    *Versioned
		err    error
	}
)

// inFlight is one PC a fire of this schedule waits for.
type inFlight struct {
	execID       string
	since, until time.Time
}

// pendingFire is the one exec request a schedule may have outstanding.
type pendingFire struct {
	req     *messages.ExecRequest
	instant time.Time
	trigger string
	replyTo *actor.PID
	pcs     []string
	count   int
	timer   clock.Timer
	// settling is set while the store is asked what became of it;
	// existing once the engine said its exec id was recorded before.
	settling bool
	existing bool
}

// tickWait is a tick waiting for the dedup state.
type tickWait struct {
	instant time.Time
	trigger string
	replyTo *actor.PID
	attempt int
}

// pendingDisable is a tick whose auto-disable write is on its way.
type pendingDisable struct {
	t       Tick
	replyTo *actor.PID
	attempt int
	reason  string
	def     messages.Schedule
}

// scheduleActor owns one schedule: its cron timer, its dedup state
// (newest success per PC of its job, PCs in flight) and its tick history.
type scheduleActor struct {
	env *env
	box *box
	rec *record

	def         messages.Schedule
	rev         uint64
	expr        *cron.Expr
	policy      Policy
	deadline    time.Duration
	hasDeadline bool
	// resolve is the target expected PCs are resolved from: the plan's
	// target plus the groups of its rollout waves, which a waves-only
	// plan addresses without naming them in the target.
	resolve messages.Target

	timer clock.Timer

	// Dedup state: seeded once the supervisor's bulk load arrived
	// (asked: requested and not answered yet).
	seeded   bool
	asked    bool
	latest   map[string]time.Time
	inFlight map[string]inFlight

	// At most one of these holds a tick open: a fire waiting for the exec
	// engine, a tick waiting for the dedup state, an auto-disable write.
	pending   *pendingFire
	waiting   *tickWait
	disabling *pendingDisable
}

var _ actor.Actor = (*scheduleActor)(nil)

// props builds the props of one schedule's actor. The producer builds each
// incarnation from the box, so a restart resumes from the newest
// definition.
func (e *env) props(b *box, rec *record) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		return &scheduleActor{env: e, box: b, rec: rec}
	}, actor.WithDispatcher(e.workers))
}

// Receive handles one message. It makes no call to the store or to NATS:
// a tick reads the fleet view, the exec engine answers by message, and
// the dedup seed, the settling of an unanswered fire and the auto-disable
// write run elsewhere and answer by message too.
func (a *scheduleActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		a.started(ctx)
	case *actor.Restarting:
		a.halt(ctx, true, "the schedule's actor failed and is restarting")
	case *actor.Stopping:
		a.halt(ctx, false, "the schedule's actor stopped")
	case *actor.Stopped:
		a.env.metrics.running.Dec()
	case *instantDue:
		a.onInstantDue(ctx, m)
	case *update:
		a.onUpdate(ctx, m)
	case *jobResults:
		a.onResults(m)
	case *seeded:
		a.onSeeded(ctx, m)
	case *runNow:
		a.runTick(ctx, a.env.clock.Now(), TriggerManual, ctx.Sender(), 0)
	default:
		a.receiveFire(ctx)
	}
}

// receiveFire handles the answers about a fire already sent: the exec
// engine's reply, a dead letter or a timeout instead, the store's
// settlement, the auto-disable write.
func (a *scheduleActor) receiveFire(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *messages.ExecReply:
		a.onReply(ctx, m)
	case *actor.DeadLetterResponse:
		// The request reached no one (the exec engine is gone): what
		// became of the pending fire is settled in the store, like a
		// timeout.
		if p := a.pending; p != nil && !p.settling {
			a.settle(ctx, p)
		}
	case *fireTimeout:
		a.onFireTimeout(ctx, m)
	case *fireSettled:
		a.onSettled(ctx, m)
	case *disableDone:
		a.onDisableDone(ctx, m)
	}
}

func (a *scheduleActor) started(ctx actor.Context) {
	if a.box.started {
		// A restart: the failure was recorded by the supervisor; the dedup
		// state is rebuilt from the store before the next decision.
		a.rec.restarted()
		a.env.metrics.restarts.Inc()
	} else {
		a.box.started = true
		a.env.metrics.running.Inc()
	}
	expr := a.box.expr
	a.box.expr = nil
	if err := a.apply(a.box.def, a.box.rev, expr); err != nil {
		// The supervisor only spawns valid schedules, so this is a bug;
		// failing makes it visible through the restart policy.
		panic(fmt.Sprintf("schedule %s: %v", a.box.def.ID, err))
	}
	if p := a.box.pending; p != nil {
		// The fire the failed incarnation sent is still answered to this
		// PID; wait for it afresh.
		a.box.pending = nil
		a.pending = p
		a.armFireTimeout(ctx, p)
	}
	a.askSeed(ctx)
	if c := a.box.missed; c != nil {
		a.box.missed = nil
		a.catchUp(ctx, c)
	}
	a.arm(ctx)
}

// halt stops the timers of this incarnation, so that a restarted or
// stopped actor leaves nothing behind that could send it a stale message.
// A fire still waiting for the exec engine is handed to the next
// incarnation on a restart; on a stop it is abandoned (the schedule is
// deleted or the backend stops), and a manual run waiting for it is told.
func (a *scheduleActor) halt(ctx actor.Context, restarting bool, why string) {
	a.disarm()
	now := a.env.clock.Now()
	if p := a.pending; p != nil {
		a.pending = nil
		p.timer.Stop()
		p.settling = false
		if restarting {
			a.box.pending = p
		} else if p.replyTo != nil {
			ctx.Send(p.replyTo, &Tick{Outcome: messages.TickFailed, Trigger: p.trigger, Instant: p.instant, At: now,
				Reason: fmt.Sprintf("%s before the exec engine answered; exec %s may still run", why, p.req.ExecID)})
		}
	}
	// Nothing was published for these ticks.
	if w := a.waiting; w != nil {
		a.waiting = nil
		a.finish(ctx, Tick{Outcome: messages.TickFailed, Trigger: w.trigger, Instant: w.instant,
			Reason: why + " while loading the dedup state"}, w.replyTo)
	}
	if d := a.disabling; d != nil {
		a.disabling = nil
		d.t.Outcome, d.t.Reason = messages.TickFailed, d.reason+"; "+why+" while auto-disabling the schedule"
		a.finish(ctx, d.t, d.replyTo)
	}
}

// apply installs a definition; the caller arms the timer. expr is def's
// parsed expression when the caller has it (nil: parse it here).
func (a *scheduleActor) apply(def messages.Schedule, rev uint64, expr *cron.Expr) error {
	if expr == nil {
		var err error
		if expr, err = def.CronExpr(); err != nil {
			return err
		}
	}
	policy, err := PolicyOf(&def)
	if err != nil {
		return err
	}
	deadline, hasDeadline, err := def.StartingDeadlineDuration()
	if err != nil {
		return err
	}
	a.def, a.rev, a.expr, a.policy = def, rev, expr, policy
	a.deadline, a.hasDeadline = deadline, hasDeadline
	a.resolve = resolveTarget(def.FanoutPlan)
	a.box.def, a.box.rev = def, rev
	return nil
}

func resolveTarget(p messages.FanoutPlan) messages.Target {
	t := p.Target
	if p.Rollout == nil || len(p.Rollout.Waves) == 0 {
		return t
	}
	t.Groups = append([]string(nil), t.Groups...)
	for _, w := range p.Rollout.Waves {
		t.Groups = append(t.Groups, w.Group)
	}
	return t
}

// arm sets the timer to the next cron instant after both now and the last
// instant handled, so that an instant is never handled twice even when the
// wall clock reads a hair earlier than the timer's own clock.
func (a *scheduleActor) arm(ctx actor.Context) {
	a.disarm()
	if !a.def.Enabled {
		return
	}
	now := a.env.clock.Now()
	from := now
	if a.box.lastInstant.After(from) {
		from = a.box.lastInstant
	}
	next := a.expr.Next(from)
	if next.IsZero() {
		a.env.log.Info("schedule has no further fire time", "schedule", a.def.ID, "cron", a.def.Cron)
		return
	}
	a.box.gen++
	a.rec.setNextTick(next)
	msg := &instantDue{gen: a.box.gen, instant: next}
	root, self := ctx.ActorSystem().Root, ctx.Self()
	a.timer = a.env.alarms.at(now, next, func() { root.Send(self, msg) })
}

func (a *scheduleActor) disarm() {
	if a.timer != nil {
		a.timer.Stop()
		a.timer = nil
		a.rec.setNextTick(time.Time{})
	}
	// A tick already queued by the stopped timer is told apart by gen.
	a.box.gen++
}

func (a *scheduleActor) onInstantDue(ctx actor.Context, m *instantDue) {
	if m.gen != a.box.gen {
		return
	}
	a.box.lastInstant = m.instant
	a.arm(ctx)
	a.runTick(ctx, m.instant, TriggerCron, nil, 0)
}

func (a *scheduleActor) onUpdate(ctx actor.Context, m *update) {
	if m.rev <= a.rev {
		return
	}
	a.applyUpdate(ctx, m.def, m.rev, m.expr)
}

// applyUpdate switches to a newer definition. A cron or zone edit takes
// effect at the next instant of the new expression; a job edit forgets the
// dedup state, which belongs to the old job.
func (a *scheduleActor) applyUpdate(ctx actor.Context, def messages.Schedule, rev uint64, expr *cron.Expr) {
	oldJob := a.def.JobID
	if err := a.apply(def, rev, expr); err != nil {
		// The supervisor stops the actor of an invalid revision; until that
		// message arrives, keep the last valid definition.
		a.env.log.Warn("ignoring invalid schedule revision", "schedule", def.ID, "rev", rev, "err", err)
		return
	}
	if def.JobID != oldJob || def.EffectiveMode() == messages.ModeEveryTick {
		a.rec.setProgress(nil)
	}
	if def.JobID != oldJob {
		a.seeded, a.asked, a.latest, a.inFlight = false, false, nil, nil
		a.publishDedup()
	}
	a.askSeed(ctx)
	a.arm(ctx)
}

// askSeed asks the supervisor for the dedup state of the schedule's job
// (once_per_pc and once_per_target keep one), unless it is there or asked
// for already. The supervisor loads the state of every schedule asking at
// the same time in one bulk query.
func (a *scheduleActor) askSeed(ctx actor.Context) {
	if a.seeded || a.asked || a.policy.Mode == messages.ModeEveryTick {
		return
	}
	a.asked = true
	ctx.Send(ctx.Parent(), &needSeed{pid: ctx.Self(), key: SeedKey{ScheduleID: a.def.ID, JobID: a.def.JobID}})
}

// onSeeded merges the loaded dedup state with what results delivered
// meanwhile (both sides keep the newest time per PC) and runs a tick that
// waited for it.
func (a *scheduleActor) onSeeded(ctx actor.Context, m *seeded) {
	if m.jobID != a.def.JobID || a.seeded {
		return // the job changed since; a new seed is on its way
	}
	a.asked = false
	if m.err != nil {
		if w := a.waiting; w != nil {
			a.waiting = nil
			a.finish(ctx, Tick{Outcome: messages.TickFailed, Trigger: w.trigger, Instant: w.instant,
				Reason: fmt.Sprintf("load dedup state: %v", m.err)}, w.replyTo)
		}
		return // asked again at the next tick
	}
	if a.latest == nil {
		a.latest = make(map[string]time.Time, len(m.latest))
	}
	for pc, t := range m.latest {
		if cur, ok := a.latest[pc]; !ok || t.After(cur) {
			a.latest[pc] = t
		}
	}
	for _, p := range m.inFlight {
		if _, ok := a.inFlight[p.PC]; !ok {
			if a.inFlight == nil {
				a.inFlight = map[string]inFlight{}
			}
			a.inFlight[p.PC] = inFlight{execID: p.ExecID, since: p.Since, until: p.Until}
		}
	}
	a.seeded = true
	a.publishDedup()
	if w := a.waiting; w != nil {
		a.waiting = nil
		a.decideTick(ctx, w.instant, w.trigger, w.replyTo, w.attempt)
	}
}

func (a *scheduleActor) onResults(m *jobResults) {
	if a.policy.Mode == messages.ModeEveryTick {
		return
	}
	for _, r := range m.results {
		if r.JobID != a.def.JobID {
			continue
		}
		if r.ExitCode == 0 {
			if a.latest == nil {
				a.latest = map[string]time.Time{}
			}
			if t, ok := a.latest[r.PcID]; !ok || r.FinishedAt.After(t) {
				a.latest[r.PcID] = r.FinishedAt
			}
		}
		// Any answer, success or failure, ends the wait for that PC.
		if f, ok := a.inFlight[r.PcID]; ok && (r.ExecID != "" && r.ExecID == f.execID || !r.FinishedAt.Before(f.since)) {
			delete(a.inFlight, r.PcID)
		}
	}
	if a.seeded {
		now := a.env.clock.Now()
		a.setProgress(a.env.fleet.resolveKnown(a.resolve, now), now)
	}
	a.publishDedup()
}

// setProgress records how far the schedule has come for the status API.
func (a *scheduleActor) setProgress(kt knownTarget, now time.Time) {
	pr := ProgressOf(a.policy, kt.known, kt.online, a.latest, now)
	a.rec.setProgress(&pr)
}

// catchUp handles the instant missed while the backend was down: at most
// one tick, for the latest missed instant, and only within
// starting_deadline; otherwise that instant is recorded as missed. A
// backlog is never replayed.
func (a *scheduleActor) catchUp(ctx actor.Context, c *missedSince) {
	if !a.def.Enabled {
		return
	}
	now := a.env.clock.Now()
	missed, ok := latestInstant(a.expr, c.Since, now)
	if !ok {
		return
	}
	a.box.lastInstant = missed
	late := now.Sub(missed)
	switch {
	case a.hasDeadline && late <= a.deadline:
		a.runTick(ctx, missed, TriggerCatchUp, nil, 0)
	case a.hasDeadline:
		a.finish(ctx, Tick{Outcome: messages.TickMissed, Trigger: TriggerCatchUp, Instant: missed,
			Reason: fmt.Sprintf("the backend was not running at this instant; %s late is beyond starting_deadline %s", late.Round(time.Millisecond), a.deadline)}, nil)
	default:
		a.finish(ctx, Tick{Outcome: messages.TickMissed, Trigger: TriggerCatchUp, Instant: missed,
			Reason: "the backend was not running at this instant; no starting_deadline, so no catch-up"}, nil)
	}
}

// finish records a tick outcome: history, metrics, the ScheduleTicked
// event, and the answer to a manual run.
func (a *scheduleActor) finish(ctx actor.Context, t Tick, replyTo *actor.PID) {
	t.At = a.env.clock.Now()
	a.rec.addTick(t)
	a.publishDedup()
	a.env.metrics.countTick(t.Outcome)
	if t.Outcome == messages.TickFailed {
		a.env.log.Warn("schedule tick failed", "schedule", a.def.ID, "instant", t.Instant, "reason", t.Reason)
	}
	ctx.ActorSystem().EventStream.Publish(&messages.ScheduleTicked{
		ScheduleID: a.def.ID, JobID: a.def.JobID, Outcome: t.Outcome, Reason: t.Reason,
		ExecID: t.ExecID, Pcs: t.Pcs, Instant: t.Instant, At: t.At,
	})
	if replyTo != nil {
		ctx.Send(replyTo, &t)
	}
}

func (a *scheduleActor) publishDedup() {
	a.rec.setDedup(a.seeded, len(a.latest), len(a.inFlight))
}
