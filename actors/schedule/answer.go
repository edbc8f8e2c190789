package schedule

import (
	"context"
	"errors"
	"fmt"
	"kanade-backend/actors/exec"
	"kanade-backend/messages"
	"kanade-backend/storage/broker"

	"github.com/asynkron/protoactor-go/actor"
)

// onFireTimeout settles the pending fire whose timer ran out, unless it is
// being settled already or the timer was an earlier fire's.
func (a *scheduleActor) onFireTimeout(ctx actor.Context, m *fireTimeout) {
	if p := a.pending; p != nil && p.req.CorrelationID == m.corr && !p.settling {
		a.settle(ctx, p)
	}
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
	root, self, w, base := ctx.ActorSystem().Root, ctx.Self(), a.env.writer, a.env.base
	req, corr := p.req, p.req.CorrelationID
	reason := fmt.Sprintf("the exec engine did not answer within %s; nothing was published", a.env.fireTimeout)
	now := a.env.clock.Now().UTC()
	go func() {
		ioctx, cancel := context.WithTimeout(base, ioTimeout)
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
