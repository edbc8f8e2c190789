package exec

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"kanade-backend/messages"
	"kanade-backend/storage/execrecord"
)

// pipeline stores the later revisions of exec records (EXEC stream) and
// the audit events (AUDIT stream) that the engine hands it, then sends the
// replies that wait for them (a cancel's), on one goroutine the engine
// owns. The engine hands over and goes on with the next batch; the
// JetStream acknowledgements are awaited here, many messages per round
// trip (broker.PublishAll). A new exec's first record is not stored here:
// the batch stores it before publishing any Command (storeRecords), and
// answers without waiting for the pipeline, so that a failing AUDIT or
// EXEC stream never holds later execs up.
//
// The pipeline gives way to the engine: while the engine has requests
// waiting (a burst of scheduled fires), what it hands over is held, so
// that the cores go to getting Commands out rather than to compressing
// records, storing them and projecting audit events; the engine releases
// the pipeline when it finds itself idle (idleProbe), and nothing is held
// longer than maxHold.
//
// It is the only writer of exec records: handoffs are stored in the order
// they were made, so a later revision of an exec (a wave published, a
// cancel) always lands after the earlier one and wins on a restore.
// Records that could not be stored are reported to the engine
// (recordsFailed), which loads and hands them over again later.
type pipeline struct {
	records Recorder
	audit   Auditor
	metrics *Metrics
	log     *slog.Logger
	// send delivers a message to an actor (the engine, a requester).
	send func(to *actor.PID, msg any)
	self *actor.PID
	// ctx is the pipeline's base: it keeps the values of Deps.Context but
	// outlives its cancellation until stop has let the pipeline store what
	// it holds (records and audit events that exist nowhere else), then
	// ends what is still running (cancelIO).
	ctx      context.Context
	cancelIO context.CancelFunc

	mu    sync.Mutex
	queue []*handoff
	// heldSince is when the oldest handoff in queue was pushed;
	// released says the engine is idle.
	heldSince time.Time
	released  bool
	wake      chan struct{}
	closed    bool
	done      chan struct{}
}

// maxHold bounds how long a handoff waits for the engine to be idle.
const maxHold = time.Second

// handoff is what one engine step leaves to the pipeline.
type handoff struct {
	// fresh are first records of new execs; revised replace earlier ones.
	fresh   []*execrecord.Record
	revised []*execrecord.Record
	audits  []messages.AuditEvent
	// replies go out after the records and audit events above.
	replies []outbound
}

type outbound struct {
	to  *actor.PID
	msg any
}

// recordsFailed tells the engine which execs' records are not stored.
type recordsFailed struct{ ids []string }

// pipelineStopTimeout bounds how long a stopping engine waits for the
// pipeline to store what it holds (the app's whole stop has 10 s).
const pipelineStopTimeout = 4 * time.Second

func newPipeline(d *Deps, log *slog.Logger, self *actor.PID, send func(*actor.PID, any)) *pipeline {
	ctx, cancel := context.WithCancel(context.WithoutCancel(d.Context))
	p := &pipeline{records: d.Records, audit: d.Audit, metrics: d.Metrics, log: log, self: self, send: send,
		ctx: ctx, cancelIO: cancel, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go p.run()
	return p
}

// push hands h over; it never blocks.
func (p *pipeline) push(h *handoff) {
	if len(h.fresh)+len(h.revised)+len(h.audits)+len(h.replies) == 0 {
		return
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		// The engine is stopping: answer at least (the rows are stored).
		for _, o := range h.replies {
			p.send(o.to, o.msg)
		}
		return
	}
	first := len(p.queue) == 0
	if first {
		p.heldSince = time.Now()
	}
	p.queue = append(p.queue, h)
	p.mu.Unlock()
	if first {
		p.signal() // the hold starts
	}
}

// release says the engine has no request waiting: store what is held.
func (p *pipeline) release() {
	p.mu.Lock()
	p.released = true
	p.mu.Unlock()
	p.signal()
}

func (p *pipeline) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// stop lets the pipeline store what it holds, waiting at most timeout,
// then cancels the I/O still running, so no store outlives the stop by
// opTimeout.
func (p *pipeline) stop(timeout time.Duration) {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.signal()
	defer p.cancelIO()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.log.Warn("exec records still being stored at stop; the database holds them", "waited", timeout)
	}
}

func (p *pipeline) run() {
	defer close(p.done)
	for {
		p.mu.Lock()
		wait := maxHold - time.Since(p.heldSince)
		if len(p.queue) > 0 && (p.released || p.closed || wait <= 0) {
			hs := p.queue
			p.queue, p.released = nil, false
			p.mu.Unlock()
			p.store(hs)
			continue
		}
		empty, closed := len(p.queue) == 0, p.closed
		p.released = p.released && !empty
		p.mu.Unlock()
		if empty && closed {
			return
		}
		if empty {
			<-p.wake
			continue
		}
		t := time.NewTimer(wait)
		select {
		case <-p.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// store handles every handoff queued meanwhile in one go: their fresh
// records in one pipeline, their revisions in order, their audit events
// in one pipeline, then their replies in order.
func (p *pipeline) store(hs []*handoff) {
	ctx, cancel := context.WithTimeout(p.ctx, opTimeout)
	defer cancel()
	var fresh []*execrecord.Record
	var audits []messages.AuditEvent
	for _, h := range hs {
		fresh = append(fresh, h.fresh...)
		audits = append(audits, h.audits...)
	}
	var failed []string
	if len(fresh) > 0 {
		for i, err := range p.records.PublishNew(ctx, fresh) {
			if err != nil {
				failed = append(failed, fresh[i].Exec.ExecID)
				p.log.Error("exec record not stored on JetStream; will retry", "exec_id", fresh[i].Exec.ExecID, "err", err)
			}
		}
	}
	// A revision may follow a fresh record of the same exec in hs; the
	// fresh ones above are stored first.
	for _, h := range hs {
		for _, rec := range h.revised {
			if err := p.records.Publish(ctx, rec); err != nil {
				failed = append(failed, rec.Exec.ExecID)
				p.log.Error("exec record not stored on JetStream; will retry", "exec_id", rec.Exec.ExecID, "err", err)
			}
		}
	}
	if len(failed) > 0 {
		p.metrics.recordFailed.Add(float64(len(failed)))
		p.send(p.self, &recordsFailed{ids: failed})
	}
	if len(audits) > 0 {
		for i, err := range p.audit.PublishAll(ctx, audits) {
			if err != nil {
				// The Commands are out and the executions row records
				// them; a lost audit event is logged and counted.
				p.metrics.auditFailed.Inc()
				p.log.Error("exec audit event not stored", "exec_id", audits[i].Payload["exec_id"], "err", err)
			}
		}
	}
	for _, h := range hs {
		for _, o := range h.replies {
			p.send(o.to, o.msg)
		}
	}
}
