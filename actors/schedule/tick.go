package schedule

import (
	"errors"
	"fmt"
	"kanade-backend/messages"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/google/uuid"
)

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
	if outcome, reason := a.cannotTick(now, instant, trigger); outcome != "" {
		t.Outcome, t.Reason = outcome, reason
		a.finish(ctx, t, replyTo)
		return
	}
	job, err := a.env.fleet.job(a.def.JobID)
	if err != nil {
		t.Outcome, t.Reason = messages.TickFailed, err.Error()
		if errors.Is(err, messages.ErrNotFound) {
			t.Outcome = messages.TickSkipped
		}
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
	a.pruneInFlight(now)
	d := DecideKnown(a.policy, kt.fire, kt.known, a.latest, now)
	a.setProgress(kt, now)
	a.act(ctx, t, replyTo, attempt, d, job, kt.fire)
}

// cannotTick says why a tick must not go on to a decision (an outcome and
// its reason), or "" when it may.
func (a *scheduleActor) cannotTick(now, instant time.Time, trigger string) (outcome, reason string) {
	if !a.def.Enabled && trigger != TriggerManual {
		// Only a race gets here (a tick queued just before an edit that
		// disabled the schedule, or a re-decision on such an edit).
		return messages.TickSkipped, "the schedule is disabled"
	}
	if late := now.Sub(instant); a.hasDeadline && trigger == TriggerCron && late > a.deadline {
		return messages.TickMissed, fmt.Sprintf("tick handled %s late, beyond starting_deadline %s", late.Round(time.Millisecond), a.deadline)
	}
	switch {
	case a.pending != nil:
		return messages.TickSkipped, "the previous fire is still waiting for the exec engine"
	case a.waiting != nil:
		return messages.TickSkipped, "the previous tick is still waiting for the dedup state to load"
	case a.disabling != nil:
		return messages.TickSkipped, "the previous tick is still auto-disabling the schedule"
	}
	return "", ""
}

// act carries out a once-per decision d over the PCs a fire reaches now
// (expected), leaving alone the PCs still in flight from an earlier fire.
func (a *scheduleActor) act(ctx actor.Context, t Tick, replyTo *actor.PID, attempt int, d Decision, job *messages.Manifest, expected []string) {
	skip := func(reason string) {
		t.Outcome, t.Reason = messages.TickSkipped, reason
		a.finish(ctx, t, replyTo)
	}
	window := a.inFlightWindow(job)
	switch d.Action {
	case Skip:
		if d.AutoDisable {
			a.autoDisable(ctx, t, replyTo, attempt, d.Reason)
			return
		}
		skip(d.Reason)
	case FirePcs:
		pcs := a.notInFlight(d.Pcs)
		if len(pcs) == 0 {
			skip(fmt.Sprintf("all %d eligible PCs are still running the job from an earlier fire", len(d.Pcs)))
			return
		}
		plan := messages.FanoutPlan{Target: messages.Target{Pcs: pcs}, Jitter: a.def.Jitter}
		a.fire(ctx, t, replyTo, job, plan, pcs, pcs, len(pcs), window)
	case FireWholeTarget:
		if busy := a.countInFlight(expected); busy > 0 {
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

// countInFlight is how many of pcs an earlier fire still waits for.
func (a *scheduleActor) countInFlight(pcs []string) int {
	n := 0
	for _, pc := range pcs {
		if _, busy := a.inFlight[pc]; busy {
			n++
		}
	}
	return n
}

// notInFlight is pcs less the PCs an earlier fire still waits for.
func (a *scheduleActor) notInFlight(pcs []string) []string {
	out := make([]string, 0, len(pcs))
	for _, pc := range pcs {
		if _, busy := a.inFlight[pc]; !busy {
			out = append(out, pc)
		}
	}
	return out
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
	var token uint64
	if a.env.fence != nil {
		var err error
		if token, err = a.env.fence(); err != nil {
			t.Outcome, t.Reason = messages.TickSkipped, err.Error()
			a.finish(ctx, t, replyTo)
			return
		}
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
		Fence:         token,
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
