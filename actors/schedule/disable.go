package schedule

import (
	"context"
	"errors"
	"fmt"
	"kanade-backend/actors/audit"
	"kanade-backend/messages"

	"github.com/asynkron/protoactor-go/actor"
)

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
	root, self, w, au, base := ctx.ActorSystem().Root, ctx.Self(), a.env.writer, a.env.audit, a.env.base
	log := a.env.log
	go func() {
		ioctx, cancel := context.WithTimeout(base, ioTimeout)
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
