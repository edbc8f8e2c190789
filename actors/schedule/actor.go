package schedule

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"kanade-backend/actors/audit"
	"kanade-backend/actors/clock"
	"kanade-backend/messages"
	"kanade-backend/messages/cron"
)

// ioTimeout bounds each store or KV call a tick makes. They are local
// reads (an indexed SQLite query, a KV get) that take well under a
// millisecond; the bound only keeps a wedged dependency from holding the
// actor forever.
const ioTimeout = 5 * time.Second

// DefaultFireTimeout is how long a schedule waits for the exec engine to
// answer a fire before recording the tick as failed.
const DefaultFireTimeout = 30 * time.Second

// maxDecideAttempts bounds how often one tick re-decides after losing the
// compare-and-set of an auto-disable to a concurrent edit.
const maxDecideAttempts = 3

// env is what every schedule actor shares: its injected dependencies. It
// is immutable once the supervisor has built it.
type env struct {
	clock       clock.Clock
	reader      Reader
	writer      Writer
	audit       Auditor
	exec        *actor.PID
	metrics     *Metrics
	log         *slog.Logger
	onTick      func(scheduleID string)
	fireTimeout time.Duration
	// workers run the schedule actors' mailboxes (see workerPool); the
	// supervisor closes them when it stops for good.
	workers *workerPool
	// alarms are the cron timers, one per instant (see alarms).
	alarms *alarms
}

// box carries what must outlive one incarnation of a schedule actor: the
// newest definition it applied (a restarted actor must not fall back to
// the definition it was spawned with), the last instant it handled (so a
// restart never fires the same instant twice) and the one-time catch-up of
// a backend start. Only the actor's own goroutine touches it: the
// producer that reads it runs in the restart, on that goroutine too.
type box struct {
	def messages.Schedule
	rev uint64
	// expr is def's expression as the supervisor parsed it while
	// validating; the first apply takes it instead of parsing again.
	expr        *cron.Expr
	lastInstant time.Time
	catchUp     *catchUp
	started     bool
	// gen numbers the timers armed for this schedule; a tick carries the
	// gen of its timer, so a tick from a timer since re-armed (or from an
	// earlier incarnation, still queued in the mailbox) is recognised.
	gen uint64
	// staleDirect counts exec requests sent directly (see fire) whose
	// replies are still due but no longer wanted: they timed out, or were
	// sent by an earlier incarnation. It outlives a restart so that the
	// new incarnation never mistakes such a reply for its own.
	staleDirect int
}

// catchUp asks a schedule loaded at backend start to look for the instant
// it missed while the backend was down: the latest one after Since, the
// later of its last fire and the creation of its current revision.
type catchUp struct {
	Since time.Time
}

// Messages a schedule actor receives.
type (
	// tick is sent by the actor's own cron timer; gen tells a tick of a
	// timer that has since been re-armed from the current one.
	tick struct {
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
	// fireDone is the exec engine's answer, relayed by a fire's proxy.
	fireDone struct {
		seq   uint64
		reply *messages.ExecReply
	}
	// fireTimeout is the fire's timer expiring before any answer.
	fireTimeout struct{ seq uint64 }
)

// inFlight is one PC a fire of this schedule waits for.
type inFlight struct {
	execID       string
	since, until time.Time
}

// pendingFire is the one exec request a schedule may have outstanding.
type pendingFire struct {
	seq     uint64
	instant time.Time
	trigger string
	replyTo *actor.PID
	pcs     []string
	count   int
	// direct is set when the request was sent by the actor itself (its
	// reply arrives as *messages.ExecReply); otherwise proxy sent it.
	direct bool
	proxy  *actor.PID
	timer  clock.Timer
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

	seeded   bool
	latest   map[string]time.Time
	inFlight map[string]inFlight

	fireSeq uint64
	pending *pendingFire
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

// Receive handles one message. It never waits for another actor: the exec
// engine's answer comes back as a message. Store and KV calls are made
// inline; they are local, indexed and bounded by ioTimeout, and making them
// asynchronous would only let a second tick interleave with the first.
func (a *scheduleActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		a.started(ctx)
	case *actor.Restarting:
		a.halt(ctx, "the schedule's actor failed and is restarting")
	case *actor.Stopping:
		a.halt(ctx, "the schedule's actor stopped")
	case *actor.Stopped:
		a.env.metrics.running.Dec()
	case *tick:
		a.onTick(ctx, m)
	case *update:
		a.onUpdate(ctx, m)
	case *jobResults:
		a.onResults(m)
	case *runNow:
		a.runTick(ctx, a.env.clock.Now(), TriggerManual, ctx.Sender(), 0)
	case *messages.ExecReply:
		a.onDirectReply(ctx, m)
	case *actor.DeadLetterResponse:
		// A direct request reached no one: the exec engine is gone.
		a.onDirectReply(ctx, &messages.ExecReply{Err: messages.Unavailablef("the exec engine is not running")})
	case *fireDone:
		a.onFireDone(ctx, m)
	case *fireTimeout:
		a.onFireTimeout(ctx, m)
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
	if c := a.box.catchUp; c != nil {
		a.box.catchUp = nil
		a.catchUp(ctx, c)
	}
	a.arm(ctx)
}

// halt stops the timers of this incarnation, so that a restarted or
// stopped actor leaves nothing behind that could send it a stale message.
func (a *scheduleActor) halt(ctx actor.Context, why string) {
	a.disarm()
	if p := a.pending; p != nil {
		a.pending = nil
		p.timer.Stop()
		if p.direct {
			a.box.staleDirect++
		}
		// The proxy dies with this incarnation, so its answer would never
		// be recorded; a manual run waiting for it is told now instead.
		if p.replyTo != nil {
			ctx.Send(p.replyTo, &Tick{Outcome: messages.TickFailed, Trigger: p.trigger, Instant: p.instant,
				At: a.env.clock.Now(), Reason: why + " before the exec engine answered"})
		}
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
	msg := &tick{gen: a.box.gen, instant: next}
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

func (a *scheduleActor) onTick(ctx actor.Context, m *tick) {
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
	if def.JobID != oldJob {
		a.seeded, a.latest, a.inFlight = false, nil, nil
		a.publishDedup()
	}
	a.arm(ctx)
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
	a.publishDedup()
}

// seed loads the dedup state from the store: the newest success per PC of
// the job (one indexed query) and the PCs recent fires of this schedule
// still wait for. Results projected before the seed are merged, not lost:
// both sides keep the newest time per PC.
func (a *scheduleActor) seed(now time.Time) error {
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	latest, err := a.env.reader.LatestSuccesses(ctx, a.def.JobID)
	if err != nil {
		return err
	}
	pcs, err := a.env.reader.InFlight(ctx, a.def.ID, a.def.JobID, now)
	if err != nil {
		return err
	}
	if a.latest == nil {
		a.latest = make(map[string]time.Time, len(latest))
	}
	for pc, t := range latest {
		if cur, ok := a.latest[pc]; !ok || t.After(cur) {
			a.latest[pc] = t
		}
	}
	for _, p := range pcs {
		if _, ok := a.inFlight[p.PC]; !ok {
			if a.inFlight == nil {
				a.inFlight = map[string]inFlight{}
			}
			a.inFlight[p.PC] = inFlight{execID: p.ExecID, since: p.Since, until: p.Until}
		}
	}
	a.seeded = true
	return nil
}

// catchUp handles the instant missed while the backend was down: at most
// one tick, for the latest missed instant, and only within
// starting_deadline; otherwise that instant is recorded as missed. A
// backlog is never replayed.
func (a *scheduleActor) catchUp(ctx actor.Context, c *catchUp) {
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

// runTick runs one tick: the job and the target at fire time, the dedup
// decision, then a fire through the exec engine or a recorded skip.
func (a *scheduleActor) runTick(ctx actor.Context, instant time.Time, trigger string, replyTo *actor.PID, attempt int) {
	now := a.env.clock.Now()
	if attempt == 0 {
		if a.env.onTick != nil {
			a.env.onTick(a.def.ID)
		}
		if trigger == TriggerCron {
			a.env.metrics.late(now.Sub(instant))
		}
	}
	t := Tick{Trigger: trigger, Instant: instant}
	if !a.def.Enabled && trigger != TriggerManual {
		// Only a race gets here (a tick queued just before an edit that
		// disabled the schedule, or a re-decision on such an edit).
		t.Outcome, t.Reason = messages.TickSkipped, "the schedule is disabled"
		a.finish(ctx, t, replyTo)
		return
	}
	skip := func(reason string) {
		t.Outcome, t.Reason = messages.TickSkipped, reason
		a.finish(ctx, t, replyTo)
	}
	fail := func(err error) {
		t.Outcome, t.Reason = messages.TickFailed, err.Error()
		a.finish(ctx, t, replyTo)
	}
	if late := now.Sub(instant); a.hasDeadline && trigger == TriggerCron && late > a.deadline {
		t.Outcome = messages.TickMissed
		t.Reason = fmt.Sprintf("tick handled %s late, beyond starting_deadline %s", late.Round(time.Millisecond), a.deadline)
		a.finish(ctx, t, replyTo)
		return
	}
	if a.pending != nil {
		skip("the previous fire is still waiting for the exec engine")
		return
	}
	if a.policy.Mode == messages.ModeEveryTick {
		a.fire(ctx, t, replyTo, a.def.FanoutPlan, nil, 0, 0)
		return
	}

	ioctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	job, err := a.env.reader.Job(ioctx, a.def.JobID)
	if errors.Is(err, messages.ErrNotFound) {
		skip(err.Error())
		return
	}
	if err != nil {
		fail(fmt.Errorf("read job: %w", err))
		return
	}
	if !a.seeded {
		if err := a.seed(now); err != nil {
			fail(fmt.Errorf("load dedup state: %w", err))
			return
		}
	}
	expected, err := a.env.reader.ResolveTargets(ioctx, a.resolve, now)
	if err != nil {
		fail(err)
		return
	}
	a.pruneInFlight(now)
	d := DecideLatest(a.policy, expected, a.latest, now)
	window := a.inFlightWindow(job)
	switch d.Action {
	case Skip:
		if d.AutoDisable {
			a.autoDisable(ctx, t, replyTo, attempt, d.Reason)
			return
		}
		skip(d.Reason)
	case FirePcs:
		pcs := make([]string, 0, len(d.Pcs))
		for _, pc := range d.Pcs {
			if _, busy := a.inFlight[pc]; !busy {
				pcs = append(pcs, pc)
			}
		}
		if len(pcs) == 0 {
			skip(fmt.Sprintf("all %d eligible PCs are still running the job from an earlier fire", len(d.Pcs)))
			return
		}
		plan := messages.FanoutPlan{Target: messages.Target{Pcs: pcs}, Jitter: a.def.Jitter}
		a.fire(ctx, t, replyTo, plan, pcs, len(pcs), window)
	case FireWholeTarget:
		busy := 0
		for _, pc := range expected {
			if _, ok := a.inFlight[pc]; ok {
				busy++
			}
		}
		if busy > 0 {
			skip(fmt.Sprintf("the previous fire is still running on %d of %d PCs", busy, len(expected)))
			return
		}
		a.fire(ctx, t, replyTo, a.def.FanoutPlan, expected, len(expected), window)
	}
}

// inFlightWindow is how long a fired PC is left alone without a result:
// the job's timeout, the plan's jitter and InFlightMargin.
func (a *scheduleActor) inFlightWindow(job messages.Manifest) time.Duration {
	w := InFlightMargin
	if d, err := job.Execute.Timeout.Parse(); err == nil {
		w += d
	}
	if a.def.Jitter != nil {
		if d, err := a.def.Jitter.Parse(); err == nil {
			w += d
		}
	}
	return w
}

func (a *scheduleActor) pruneInFlight(now time.Time) {
	for pc, f := range a.inFlight {
		if !now.Before(f.until) {
			delete(a.inFlight, pc)
		}
	}
}

// fire sends one exec request. A schedule has at most one request
// outstanding, so the exec engine's reply, which carries nothing that
// identifies the request, is simply the answer to that one: the request
// is sent by the actor itself (ctx.Request), the cheap path that every
// tick of a busy scheduler takes. Only while a reply that timed out is
// still due does a short-lived proxy child send the request instead, so
// that the late reply and the new one cannot be confused.
// The PCs are marked in flight at once, not when the engine answers, so
// that a tick arriving meanwhile cannot fire them again.
func (a *scheduleActor) fire(ctx actor.Context, t Tick, replyTo *actor.PID, plan messages.FanoutPlan, pcs []string, count int, window time.Duration) {
	if a.env.exec == nil {
		t.Outcome, t.Reason = messages.TickFailed, "the exec engine is not running"
		a.finish(ctx, t, replyTo)
		return
	}
	a.fireSeq++
	seq := a.fireSeq
	req := &messages.ExecRequest{
		JobID:       a.def.JobID,
		Plan:        plan,
		Actor:       messages.ActorScheduler,
		InitiatedBy: messages.ActorScheduler + ":" + a.def.ID,
		ScheduleID:  a.def.ID,
	}
	now := a.env.clock.Now()
	if len(pcs) > 0 && a.inFlight == nil {
		a.inFlight = make(map[string]inFlight, len(pcs))
	}
	for _, pc := range pcs {
		a.inFlight[pc] = inFlight{since: now, until: now.Add(window)}
	}
	p := &pendingFire{seq: seq, instant: t.Instant, trigger: t.Trigger, replyTo: replyTo, pcs: pcs, count: count}
	if a.box.staleDirect == 0 {
		p.direct = true
		ctx.Request(a.env.exec, req)
	} else {
		exec := a.env.exec
		p.proxy = ctx.Spawn(actor.PropsFromProducer(func() actor.Actor { return &fireProxy{exec: exec, req: req, seq: seq} }))
	}
	root, self := ctx.ActorSystem().Root, ctx.Self()
	p.timer = a.env.clock.AfterFunc(a.env.fireTimeout, func() { root.Send(self, &fireTimeout{seq: seq}) })
	a.pending = p
}

// onDirectReply takes a reply to a request the actor sent itself. While
// stale replies are due no request is sent directly, so a reply then is
// one of them.
func (a *scheduleActor) onDirectReply(ctx actor.Context, r *messages.ExecReply) {
	if a.box.staleDirect > 0 {
		a.box.staleDirect--
		return
	}
	if p := a.pending; p != nil && p.direct {
		a.onFireDone(ctx, &fireDone{seq: p.seq, reply: r})
	}
}

func (a *scheduleActor) onFireDone(ctx actor.Context, m *fireDone) {
	p := a.pending
	if p == nil || p.seq != m.seq {
		return // answered after its timeout: the tick is already recorded
	}
	a.pending = nil
	p.timer.Stop()
	t := Tick{Trigger: p.trigger, Instant: p.instant}
	if err := m.reply.Err; err != nil {
		// Nothing was published for a missing job or an invalid plan, so
		// the PCs are not in flight; after any other failure some commands
		// may have gone out, and the window keeps them from being doubled.
		if errors.Is(err, messages.ErrNotFound) || errors.Is(err, messages.ErrInvalid) {
			for _, pc := range p.pcs {
				delete(a.inFlight, pc)
			}
		}
		t.Outcome, t.Reason = messages.TickFailed, err.Error()
		if errors.Is(err, messages.ErrNotFound) {
			t.Outcome = messages.TickSkipped
		}
		a.finish(ctx, t, p.replyTo)
		return
	}
	resp := m.reply.Response
	for _, pc := range p.pcs {
		if f, ok := a.inFlight[pc]; ok && f.execID == "" {
			f.execID = resp.ExecID
			a.inFlight[pc] = f
		}
	}
	t.Outcome, t.ExecID, t.Pcs = messages.TickFired, resp.ExecID, p.count
	if p.count == 0 {
		t.Pcs = resp.ExpectedPcs
	}
	a.finish(ctx, t, p.replyTo)
}

func (a *scheduleActor) onFireTimeout(ctx actor.Context, m *fireTimeout) {
	p := a.pending
	if p == nil || p.seq != m.seq {
		return
	}
	a.pending = nil
	if p.direct {
		a.box.staleDirect++
	} else {
		ctx.Stop(p.proxy)
	}
	a.finish(ctx, Tick{Outcome: messages.TickFailed, Trigger: p.trigger, Instant: p.instant,
		Reason: fmt.Sprintf("the exec engine did not answer within %s", a.env.fireTimeout)}, p.replyTo)
}

// autoDisable writes the schedule back with enabled=false, compare-and-set
// on the revision this actor decided on. If an operator edited the
// schedule in between, the edit wins: the actor takes the new version and
// decides again on it (bounded by maxDecideAttempts).
func (a *scheduleActor) autoDisable(ctx actor.Context, t Tick, replyTo *actor.PID, attempt int, reason string) {
	t.Outcome = messages.TickSkipped
	if !a.def.Enabled {
		t.Reason = reason + "; the schedule is already disabled"
		a.finish(ctx, t, replyTo)
		return
	}
	ioctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	newRev, cur, err := a.env.writer.Disable(ioctx, a.def, a.rev)
	switch {
	case err == nil:
		def := a.def
		def.Enabled = false
		a.def, a.rev = def, newRev
		a.box.def, a.box.rev = def, newRev
		a.disarm()
		ev := audit.Event(messages.ActorScheduler, messages.ActionScheduleCompleted, def.ID,
			map[string]any{"mode": string(def.EffectiveMode()), "job_id": def.JobID})
		if err := a.env.audit.Publish(ioctx, ev); err != nil {
			a.env.log.Warn("audit schedule_completed not published", "schedule", def.ID, "err", err)
		}
		a.env.log.Info("schedule completed; auto-disabled", "schedule", def.ID, "job", def.JobID, "rev", newRev)
		t.Reason = reason + "; schedule completed and auto-disabled"
		a.finish(ctx, t, replyTo)
	case errors.Is(err, messages.ErrConflict) && cur != nil && cur.Err == nil && attempt+1 < maxDecideAttempts:
		a.env.log.Info("schedule changed while auto-disabling; deciding again on the new version",
			"schedule", a.def.ID, "rev", a.rev, "now", cur.Rev)
		a.applyUpdate(ctx, cur.Def, cur.Rev, cur.expr)
		a.runTick(ctx, t.Instant, t.Trigger, replyTo, attempt+1)
	case errors.Is(err, messages.ErrConflict):
		t.Reason = reason + "; not auto-disabled: " + err.Error()
		a.finish(ctx, t, replyTo)
	default:
		t.Outcome, t.Reason = messages.TickFailed, fmt.Sprintf("auto-disable: %v", err)
		a.finish(ctx, t, replyTo)
	}
}

// finish records a tick outcome: history, metrics, the ScheduleTicked
// event, and the answer to a manual run.
func (a *scheduleActor) finish(ctx actor.Context, t Tick, replyTo *actor.PID) {
	t.At = a.env.clock.Now()
	a.rec.addTick(t)
	a.publishDedup()
	a.env.metrics.tick(t.Outcome)
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

// fireProxy sends one ExecRequest and relays the one reply to its parent,
// tagged with the fire it belongs to.
type fireProxy struct {
	exec *actor.PID
	req  *messages.ExecRequest
	seq  uint64
}

var _ actor.Actor = (*fireProxy)(nil)

func (p *fireProxy) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		ctx.Request(p.exec, p.req)
	case *messages.ExecReply:
		ctx.Send(ctx.Parent(), &fireDone{seq: p.seq, reply: m})
		ctx.Stop(ctx.Self())
	case *actor.DeadLetterResponse:
		// The exec engine's PID is gone (stopped, or never started).
		ctx.Send(ctx.Parent(), &fireDone{seq: p.seq, reply: &messages.ExecReply{Err: messages.Unavailablef("the exec engine is not running")}})
		ctx.Stop(ctx.Self())
	}
}
