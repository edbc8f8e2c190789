package schedule

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/google/uuid"

	"kanade-backend/actors/audit"
	"kanade-backend/actors/clock"
	"kanade-backend/actors/exec"
	"kanade-backend/messages"
	"kanade-backend/messages/cron"
	"kanade-backend/storage/broker"
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
	clock       clock.Clock
	reader      Reader
	writer      Writer
	audit       Auditor
	exec        *actor.PID
	metrics     *Metrics
	log         *slog.Logger
	onTick      func(scheduleID string)
	fireTimeout time.Duration
	// fleet is the in-memory view of jobs, agents and groups that ticks
	// read (see fleet).
	fleet *fleetView
	// workers run the schedule actors' mailboxes (see workerPool); the
	// supervisor closes them when it stops for good.
	workers *workerPool
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
		if p := a.pending; p != nil && p.req.CorrelationID == m.corr && !p.settling {
			a.settle(ctx, p)
		}
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

// runTick runs one tick: the job and the target at fire time (from the
// fleet view), the dedup decision, then a fire through the exec engine or
// a recorded skip.
func (a *scheduleActor) runTick(ctx actor.Context, instant time.Time, trigger string, replyTo *actor.PID, attempt int) {
	if attempt == 0 {
		if a.env.onTick != nil {
			a.env.onTick(a.def.ID)
		}
		if trigger == TriggerCron {
			a.env.metrics.late(a.env.clock.Now().Sub(instant))
		}
	}
	a.decideTick(ctx, instant, trigger, replyTo, attempt)
}

// decideTick is runTick after its bookkeeping; a tick that waited for the
// dedup state resumes here.
func (a *scheduleActor) decideTick(ctx actor.Context, instant time.Time, trigger string, replyTo *actor.PID, attempt int) {
	now := a.env.clock.Now()
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
	if late := now.Sub(instant); a.hasDeadline && trigger == TriggerCron && late > a.deadline {
		t.Outcome = messages.TickMissed
		t.Reason = fmt.Sprintf("tick handled %s late, beyond starting_deadline %s", late.Round(time.Millisecond), a.deadline)
		a.finish(ctx, t, replyTo)
		return
	}
	switch {
	case a.pending != nil:
		skip("the previous fire is still waiting for the exec engine")
		return
	case a.waiting != nil:
		skip("the previous tick is still waiting for the dedup state to load")
		return
	case a.disabling != nil:
		skip("the previous tick is still auto-disabling the schedule")
		return
	}
	job, err := a.env.fleet.job(a.def.JobID)
	if errors.Is(err, messages.ErrNotFound) {
		skip(err.Error())
		return
	}
	if err != nil {
		t.Outcome, t.Reason = messages.TickFailed, err.Error()
		a.finish(ctx, t, replyTo)
		return
	}
	if a.policy.Mode == messages.ModeEveryTick {
		var expected []string
		if !hasRollout(a.def.FanoutPlan) {
			expected = a.env.fleet.resolve(a.def.Target, now)
		}
		a.fire(ctx, t, replyTo, job, a.def.FanoutPlan, expected, nil, 0, 0)
		return
	}
	if !a.seeded {
		a.waiting = &tickWait{instant: instant, trigger: trigger, replyTo: replyTo, attempt: attempt}
		a.askSeed(ctx)
		return
	}
	kt := a.env.fleet.resolveKnown(a.resolve, now)
	expected := kt.fire
	a.pruneInFlight(now)
	d := DecideKnown(a.policy, expected, kt.known, a.latest, now)
	a.setProgress(kt, now)
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
		a.fire(ctx, t, replyTo, job, plan, pcs, pcs, len(pcs), window)
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
		var resolved []string
		if !hasRollout(a.def.FanoutPlan) {
			resolved = expected
		}
		a.fire(ctx, t, replyTo, job, a.def.FanoutPlan, resolved, expected, len(expected), window)
	}
}

func hasRollout(p messages.FanoutPlan) bool { return p.Rollout != nil && len(p.Rollout.Waves) > 0 }

// inFlightWindow is how long a fired PC is left alone without a result:
// the job's timeout, the plan's jitter and InFlightMargin.
func (a *scheduleActor) inFlightWindow(job *messages.Manifest) time.Duration {
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

// fire sends one exec request, carrying the job as the fleet view has it
// and, for a plan without rollout waves, the PCs its target resolved to
// (resolved), so the exec engine neither reads the catalog nor queries the
// store for it. A cron or catch-up fire names its exec id, derived from
// the schedule and the instant: however often that instant is fired
// (a retry, a restart, a replay), the engine records one exec for it. The
// reply carries the request's correlation id, so a late answer to an
// earlier request is never taken for this one. The PCs (inFlightPCs) are
// marked in flight at once, not when the engine answers, so that a tick
// arriving meanwhile cannot fire them again.
func (a *scheduleActor) fire(ctx actor.Context, t Tick, replyTo *actor.PID, job *messages.Manifest, plan messages.FanoutPlan,
	resolved, inFlightPCs []string, count int, window time.Duration) {
	if a.env.exec == nil {
		t.Outcome, t.Reason = messages.TickFailed, "the exec engine is not running"
		a.finish(ctx, t, replyTo)
		return
	}
	a.box.corr++
	execID := uuid.NewString()
	if t.Trigger != TriggerManual {
		execID = messages.ScheduledExecID(a.def.ID, t.Instant)
	}
	req := &messages.ExecRequest{
		CorrelationID: a.box.corr,
		ExecID:        execID,
		JobID:         a.def.JobID,
		Plan:          plan,
		Manifest:      job,
		Resolved:      !hasRollout(plan),
		Expected:      resolved,
		Actor:         messages.ActorScheduler,
		InitiatedBy:   messages.ActorScheduler + ":" + a.def.ID,
		ScheduleID:    a.def.ID,
	}
	now := a.env.clock.Now()
	if len(inFlightPCs) > 0 && a.inFlight == nil {
		a.inFlight = make(map[string]inFlight, len(inFlightPCs))
	}
	for _, pc := range inFlightPCs {
		a.inFlight[pc] = inFlight{execID: execID, since: now, until: now.Add(window)}
	}
	p := &pendingFire{req: req, instant: t.Instant, trigger: t.Trigger, replyTo: replyTo, pcs: inFlightPCs, count: count}
	ctx.Request(a.env.exec, req)
	a.pending = p
	a.armFireTimeout(ctx, p)
}

func (a *scheduleActor) armFireTimeout(ctx actor.Context, p *pendingFire) {
	root, self, corr := ctx.ActorSystem().Root, ctx.Self(), p.req.CorrelationID
	p.timer = a.env.clock.AfterFunc(a.env.fireTimeout, func() { root.Send(self, &fireTimeout{corr: corr}) })
}

// onReply takes the exec engine's answer to the pending fire; an answer to
// any other request (one settled meanwhile, or an earlier incarnation's)
// is ignored.
func (a *scheduleActor) onReply(ctx actor.Context, r *messages.ExecReply) {
	p := a.pending
	if p == nil || r.CorrelationID != p.req.CorrelationID {
		return
	}
	if r.Existing {
		// This instant's exec was recorded before (a retry or replay):
		// whether its Commands went out is the store's to say.
		p.existing = true
		if !p.settling {
			a.settle(ctx, p)
		}
		return
	}
	a.pending = nil
	p.timer.Stop()
	t := Tick{Trigger: p.trigger, Instant: p.instant}
	if err := r.Err; err != nil {
		// Nothing was published for a missing job or an invalid plan, so
		// the PCs are not in flight; after any other failure some commands
		// may have gone out, and the window keeps them from being doubled.
		// NATS away is the same: the engine answers it only when no
		// Command went out, and the instant is skipped for that reason.
		unavailable := broker.IsUnavailable(err)
		if errors.Is(err, messages.ErrNotFound) || errors.Is(err, messages.ErrInvalid) || unavailable {
			a.release(p)
		}
		t.Outcome, t.Reason = messages.TickFailed, err.Error()
		if errors.Is(err, messages.ErrNotFound) || unavailable {
			t.Outcome = messages.TickSkipped
		}
		a.finish(ctx, t, p.replyTo)
		return
	}
	a.fired(ctx, p, r.Response.ExecID, r.Response.ExpectedPcs, "")
}

// fired records the pending fire as fired with exec execID.
func (a *scheduleActor) fired(ctx actor.Context, p *pendingFire, execID string, expectedPcs int, reason string) {
	t := Tick{Outcome: messages.TickFired, Trigger: p.trigger, Instant: p.instant, ExecID: execID, Pcs: p.count, Reason: reason}
	if p.count == 0 {
		t.Pcs = expectedPcs
	}
	a.finish(ctx, t, p.replyTo)
}

// release takes a fire's PCs out of flight: nothing was published to them.
func (a *scheduleActor) release(p *pendingFire) {
	for _, pc := range p.pcs {
		if f, ok := a.inFlight[pc]; ok && f.execID == p.req.ExecID {
			delete(a.inFlight, pc)
		}
	}
}

// settle asks the store what became of a fire the exec engine did not
// answer (or answered with an exec recorded earlier): never a guess. An
// exec id no exec holds is claimed with a failed row, so the engine can no
// longer publish under it; otherwise the recorded exec tells whether its
// Commands went out.
func (a *scheduleActor) settle(ctx actor.Context, p *pendingFire) {
	p.settling = true
	p.timer.Stop()
	root, self, w := ctx.ActorSystem().Root, ctx.Self(), a.env.writer
	req, corr := p.req, p.req.CorrelationID
	reason := fmt.Sprintf("the exec engine did not answer within %s; nothing was published", a.env.fireTimeout)
	now := a.env.clock.Now().UTC()
	go func() {
		ioctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		s, err := w.Settle(ioctx, req, reason, now)
		root.Send(self, &fireSettled{corr: corr, s: s, err: err})
	}()
}

func (a *scheduleActor) onSettled(ctx actor.Context, m *fireSettled) {
	p := a.pending
	if p == nil || p.req.CorrelationID != m.corr || !p.settling {
		return
	}
	p.settling = false
	if m.err != nil {
		// Still unknown: keep waiting and ask again after another timeout;
		// meanwhile later ticks are skipped with the reason.
		a.env.log.Warn("could not settle an unanswered fire; asking again later", "schedule", a.def.ID, "exec_id", p.req.ExecID, "err", m.err)
		a.armFireTimeout(ctx, p)
		return
	}
	ex := m.s.Exec
	switch m.s.State {
	case exec.FirePublished:
		a.pending = nil
		reason := ""
		if p.existing {
			reason = "this instant was already fired as exec " + ex.ExecID + "; nothing was published again"
		}
		a.fired(ctx, p, ex.ExecID, ex.ExpectedPcs, reason)
	case exec.FireRecorded:
		// Recorded, not yet published: the engine publishes right after
		// its transaction. Wait for its answer.
		a.armFireTimeout(ctx, p)
	default: // FireClaimed, FireFailed: nothing was published
		a.pending = nil
		a.release(p)
		reason := "exec " + ex.ExecID + " failed"
		if ex.Error != nil {
			reason = *ex.Error + " (exec " + ex.ExecID + ")"
		}
		a.finish(ctx, Tick{Outcome: messages.TickFailed, Trigger: p.trigger, Instant: p.instant, ExecID: ex.ExecID, Reason: reason}, p.replyTo)
	}
}

// autoDisable writes the schedule back with enabled=false, compare-and-set
// on the revision this actor decided on, on a goroutine (disableDone). If
// an operator edited the schedule in between, the edit wins: the actor
// takes the new version and decides again on it (bounded by
// maxDecideAttempts).
func (a *scheduleActor) autoDisable(ctx actor.Context, t Tick, replyTo *actor.PID, attempt int, reason string) {
	t.Outcome = messages.TickSkipped
	if !a.def.Enabled {
		t.Reason = reason + "; the schedule is already disabled"
		a.finish(ctx, t, replyTo)
		return
	}
	def, rev := a.def, a.rev
	a.disabling = &pendingDisable{t: t, replyTo: replyTo, attempt: attempt, reason: reason, def: def}
	root, self, w, au := ctx.ActorSystem().Root, ctx.Self(), a.env.writer, a.env.audit
	log := a.env.log
	go func() {
		ioctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		newRev, cur, err := w.Disable(ioctx, def, rev)
		if err == nil {
			ev := audit.Event(messages.ActorScheduler, messages.ActionScheduleCompleted, def.ID,
				map[string]any{"mode": string(def.EffectiveMode()), "job_id": def.JobID})
			if err := au.Publish(ioctx, ev); err != nil {
				log.Warn("audit schedule_completed not published", "schedule", def.ID, "err", err)
			}
		}
		root.Send(self, &disableDone{newRev: newRev, cur: cur, err: err})
	}()
}

func (a *scheduleActor) onDisableDone(ctx actor.Context, m *disableDone) {
	d := a.disabling
	if d == nil {
		return
	}
	a.disabling = nil
	t, replyTo, attempt, reason := d.t, d.replyTo, d.attempt, d.reason
	switch err := m.err; {
	case err == nil:
		def := d.def
		def.Enabled = false
		if m.newRev > a.rev {
			a.def, a.rev = def, m.newRev
			a.box.def, a.box.rev = def, m.newRev
		}
		a.disarm()
		a.env.log.Info("schedule completed; auto-disabled", "schedule", def.ID, "job", def.JobID, "rev", m.newRev)
		t.Reason = reason + "; schedule completed and auto-disabled"
		a.finish(ctx, t, replyTo)
	case errors.Is(err, messages.ErrConflict) && m.cur != nil && m.cur.Err == nil && attempt+1 < maxDecideAttempts:
		a.env.log.Info("schedule changed while auto-disabling; deciding again on the new version",
			"schedule", a.def.ID, "rev", a.rev, "now", m.cur.Rev)
		if m.cur.Rev > a.rev {
			a.applyUpdate(ctx, m.cur.Def, m.cur.Rev, m.cur.expr)
		}
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
