package projector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/uptrace/bun"

	"kanade-backend/storage"
)

// codec is what differs between the JetStream projections (results,
// audit); streamProjector does the rest: consumer set-up and rebuild,
// batching, the checkpoint, acks, poison and retries.
type codec[T any] interface {
	projection() string
	stream() string
	durable() string
	// table is probed at start: empty while the stream is not means the
	// database was wiped or rebuilt, and the stream is projected again.
	table() string
	// beforeConsume runs once per start, before the consumer is set up;
	// an error fails the start (the supervisor retries it).
	beforeConsume(ctx context.Context, c actor.Context, e *env) error
	// decode turns a payload into an item; an error makes it poison.
	decode(data []byte) (T, error)
	// apply writes a batch inside tx. Per-message problems that do not stop
	// the row from being stored go to out.errors; events to publish after
	// the commit go to out.events.
	apply(ctx context.Context, tx bun.Tx, now time.Time, batch []envelope[T], out *outcome) error
}

// envelope is one decoded stream message.
type envelope[T any] struct {
	seq     uint64
	subject string
	data    []byte
	item    T
}

// outcome is what a batch produced besides its rows.
type outcome struct {
	errors []storage.ProjectionError
	events []any
}

// beforeCommit, when set (by tests only), runs inside every batch
// transaction just before the commit, so a test can inject a failure or a
// crash at the worst moment.
var beforeCommit atomic.Pointer[func(projection string) error]

// isolateAfter is the delivery count from which a batch that keeps
// failing on an error of its own (a constraint or a trigger, not the
// database's environment) is applied message by message, so that the one
// message that fails does not hold back the rest of the stream. That
// message is still never dropped: only a message that cannot be decoded or
// validated is poison. It is handed back with the longest delay, again and
// again, and the projection reports itself stalled until it goes through.
const isolateAfter = 5

// streamProjector projects one stream through a durable pull consumer.
type streamProjector[T any] struct {
	env   *env
	codec codec[T]
	pump  *pump
	// catchUpTo is the stream sequence up to which the backlog found at
	// start reaches; the projection is current once a batch gets there.
	catchUpTo uint64
	// stuck holds the messages (by stream sequence) that failed on their
	// own when their batch was applied message by message, with their
	// error; the projection stays stalled while any is left.
	stuck map[uint64]error
}

var _ actor.Actor = (*streamProjector[resultItem])(nil)

func newStreamProjector[T any](e *env, c codec[T]) *streamProjector[T] {
	return &streamProjector[T]{env: e, codec: c, stuck: map[uint64]error{}}
}

func (p *streamProjector[T]) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *actor.Started:
		p.env.setCurrent(p.codec.projection(), false)
		if err := p.beforeConsume(c); err != nil {
			panic(err) // retried by the supervisor, as below
		}
		ctx, cancel := context.WithTimeout(p.env.base, setupTimeout)
		defer cancel()
		cons, err := p.ensureConsumer(ctx)
		if err != nil {
			// The supervisor restarts this actor after a growing delay, which
			// is the retry loop for a broker that is not reachable yet.
			panic(err)
		}
		ci := cons.CachedInfo()
		if ci.NumPending == 0 && ci.NumAckPending == 0 {
			p.env.setCurrent(p.codec.projection(), true)
		}
		p.catchUpTo = ci.Delivered.Stream + ci.NumPending
		self, root := c.Self(), c.ActorSystem().Root
		p.pump = startPump(cons, pumpConfig{
			batch: p.env.cfg.BatchSize, backlogBatch: p.env.cfg.BacklogBatchSize, linger: p.env.cfg.Linger, log: p.env.log, replies: p.replies(),
			prepare: func(msgs []jetstream.Msg) any { return p.prepare(msgs) },
			deliver: func(f *fetched) { root.Send(self, f) },
			failed:  func(owner *pump, err error) { root.Send(self, &pumpFailed{owner: owner, err: err}) },
		})
		reportReady(c, p.codec.projection())
	case *fetched:
		if m.owner != p.pump {
			// Pulled by the pump of a crashed incarnation, which naked it.
			return
		}
		m.done <- p.handle(c, m.msgs, m.prepared.(*prepared[T]))
	case *pumpFailed:
		if m.owner == p.pump {
			panic(m.err)
		}
	case *actor.Restarting:
		p.pump.stop()
	case *actor.Stopping:
		p.pump.stop()
	}
}

// setupTimeout bounds ensureConsumer's JetStream API calls, well below
// opTimeout: on a NATS cluster a request sent while a stream or consumer
// elects a new leader can go unanswered, and waiting long for it would
// leave a new leader's projection silent; failing sooner lets the
// supervisor's restart ask again.
const setupTimeout = 15 * time.Second

// beforeConsumeTimeout bounds a codec's start work; restoring a week of
// exec records into a wiped database can take longer than one batch.
const beforeConsumeTimeout = 10 * time.Minute

func (p *streamProjector[T]) beforeConsume(c actor.Context) error {
	ctx, cancel := context.WithTimeout(p.env.base, beforeConsumeTimeout)
	defer cancel()
	return p.codec.beforeConsume(ctx, c, p.env)
}

// pumpFailed says the pump gave up pulling.
type pumpFailed struct {
	owner *pump
	err   error
}

// ensureConsumer creates or updates the durable consumer, recreating it
// from an earlier sequence when the database holds less than the broker
// believes was applied:
//   - the projection table is empty but the stream is not (database wiped,
//     --rebuild): from the first sequence (upstream defect 5);
//   - the checkpoint is behind the consumer's ack floor (database restored
//     from an older copy): from the checkpoint;
//   - messages were delivered but never acknowledged (the process died
//     mid-batch): from the ack floor, so they come back now rather than
//     after AckWait. Everything above the floor is delivered again; what
//     was applied already is skipped by the idempotent writes.
func (p *streamProjector[T]) ensureConsumer(ctx context.Context) (jetstream.Consumer, error) {
	name, durable := p.codec.projection(), p.codec.durable()
	st, err := p.env.js.Stream(ctx, p.codec.stream())
	if err != nil {
		return nil, fmt.Errorf("projector %s: stream %s: %w", name, p.codec.stream(), err)
	}
	sinfo := st.CachedInfo()
	cp, err := loadCheckpoint(ctx, p.env.store.R, name)
	if err != nil {
		return nil, err
	}
	empty, err := tableEmpty(ctx, p.env.store.R, p.codec.table())
	if err != nil {
		return nil, err
	}
	if sinfo.State.LastSeq >= cp {
		p.env.metrics.lag.WithLabelValues(name).Set(float64(sinfo.State.LastSeq - cp))
	}
	// MaxAckPending leaves room for the batch being written and the one
	// read ahead, both backlog batches at most, with as much again spare.
	cfg := jetstream.ConsumerConfig{
		Durable:       durable,
		Description:   "kanade-backend " + name + " projector",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       p.env.cfg.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: 4 * p.env.cfg.BacklogBatchSize,
		ReplayPolicy:  jetstream.ReplayInstantPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	create := func(start uint64, reason string) (jetstream.Consumer, error) {
		if start > 1 {
			cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
			cfg.OptStartSeq = start
		}
		cons, err := st.CreateConsumer(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("projector %s: create consumer %s from seq %d: %w", name, durable, start, err)
		}
		if reason != "" {
			p.env.log.Warn("projecting stream again", "projection", name, "stream", p.codec.stream(),
				"from_seq", start, "reason", reason)
		}
		return cons, nil
	}

	cons, err := st.Consumer(ctx, durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		start := cp + 1
		if empty {
			start = 1
		}
		return create(start, "")
	}
	if err != nil {
		return nil, fmt.Errorf("projector %s: consumer %s: %w", name, durable, err)
	}
	ci := cons.CachedInfo()
	start, reason := ci.AckFloor.Stream+1, "messages delivered before the last stop were not acknowledged"
	if cp < ci.AckFloor.Stream {
		start, reason = cp+1, "the database is behind the broker (wiped or restored)"
	}
	if empty && sinfo.State.Msgs > 0 {
		start, reason = 1, fmt.Sprintf("table %s is empty but stream %s holds %d messages", p.codec.table(), p.codec.stream(), sinfo.State.Msgs)
	}
	if start <= ci.Delivered.Stream {
		if err := st.DeleteConsumer(ctx, durable); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil, fmt.Errorf("projector %s: delete consumer %s: %w", name, durable, err)
		}
		return create(start, reason)
	}
	// Keep the broker's position; bring the rest of the configuration in
	// line (an upgrade may change AckWait or MaxAckPending).
	cfg.DeliverPolicy, cfg.OptStartSeq = ci.Config.DeliverPolicy, ci.Config.OptStartSeq
	cons, err = st.CreateOrUpdateConsumer(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("projector %s: update consumer %s: %w", name, durable, err)
	}
	return cons, nil
}

// prepared is a batch decoded on the pump goroutine: decoding is pure, so
// it runs while the actor writes the previous batch.
type prepared[T any] struct {
	batch     []envelope[T]
	good      []jetstream.Msg // the messages of batch, in order
	poison    []storage.ProjectionError
	poisonMsg []jetstream.Msg
	maxSeq    uint64
	delivered uint64 // highest delivery count in the batch
	pending   uint64 // stream messages after the batch
}

// prepare decodes msgs. It only reads the codec and the clock, never the
// actor's state, since it runs on the pump goroutine.
func (p *streamProjector[T]) prepare(msgs []jetstream.Msg) *prepared[T] {
	now := p.env.clock.Now().UTC()
	pr := &prepared[T]{}
	for _, m := range msgs {
		md, err := m.Metadata()
		if err != nil {
			pr.poison = append(pr.poison, p.projError(0, m.Subject(), m.Data(), fmt.Errorf("read message metadata: %w", err), now))
			pr.poisonMsg = append(pr.poisonMsg, m)
			continue
		}
		seq := md.Sequence.Stream
		pr.maxSeq = max(pr.maxSeq, seq)
		pr.delivered = max(pr.delivered, md.NumDelivered)
		pr.pending = md.NumPending
		item, err := p.codec.decode(m.Data())
		if err != nil {
			pr.poison = append(pr.poison, p.projError(seq, m.Subject(), m.Data(), err, now))
			pr.poisonMsg = append(pr.poisonMsg, m)
			continue
		}
		pr.batch = append(pr.batch, envelope[T]{seq: seq, subject: m.Subject(), data: m.Data(), item: item})
		pr.good = append(pr.good, m)
	}
	return pr
}

// handle applies one batch: one transaction with the rows, the poison
// records and the checkpoint, then acks (and terms for poison), then
// events. On a database error nothing is acknowledged: the batch is naked
// with a delay and comes back.
func (p *streamProjector[T]) handle(c actor.Context, msgs []jetstream.Msg, pr *prepared[T]) batchResult {
	start := time.Now()
	now := p.env.clock.Now().UTC()
	ctx, cancel := p.env.opContext()
	defer cancel()
	out, err := p.commit(ctx, pr.batch, pr.poison, pr.maxSeq, now)
	if err != nil {
		return p.retry(ctx, c, msgs, pr, now, err)
	}
	for _, e := range pr.batch {
		delete(p.stuck, e.seq)
	}
	p.reportStuck()
	p.finish(c, out, len(pr.batch), len(pr.poison), pr.pending, start)
	p.caughtUp(pr.maxSeq, pr.pending)
	// The pump acknowledges the batch (and terminates its poison) while
	// this actor writes the next one: 500 acks are a few percent of a
	// batch's time, and a lost ack only means an idempotent redelivery.
	return batchResult{ack: pr.good, term: pr.poisonMsg}
}

// caughtUp marks the projection current once a committed batch reaches the
// end of the backlog found at start, or leaves nothing pending. It stays
// current afterwards: under steady load a batch rarely ends with nothing
// pending, and "current" means the start-up backlog is applied.
func (p *streamProjector[T]) caughtUp(maxSeq, pending uint64) {
	if maxSeq >= p.catchUpTo || pending == 0 {
		p.env.setCurrent(p.codec.projection(), true)
	}
}

// commit writes batch, errs and the checkpoint in one transaction.
func (p *streamProjector[T]) commit(ctx context.Context, batch []envelope[T], errs []storage.ProjectionError, maxSeq uint64, now time.Time) (outcome, error) {
	var out outcome
	err := p.env.inTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		out = outcome{} // InTx may run fn again when the database is busy
		if len(batch) > 0 {
			if err := p.codec.apply(ctx, tx, now, batch, &out); err != nil {
				return err
			}
		}
		if err := recordErrors(ctx, tx, append(errs[:len(errs):len(errs)], out.errors...)); err != nil {
			return err
		}
		if maxSeq > 0 {
			if err := saveCheckpoint(ctx, tx, p.codec.projection(), p.codec.stream(), maxSeq, now); err != nil {
				return err
			}
		}
		if hook := beforeCommit.Load(); hook != nil {
			return (*hook)(p.codec.projection())
		}
		return nil
	})
	if err != nil {
		return outcome{}, fmt.Errorf("project %s batch of %d up to seq %d: %w", p.codec.projection(), len(batch)+len(errs), maxSeq, err)
	}
	return out, nil
}

// retry handles a batch whose transaction failed. Nothing is acknowledged
// and nothing is dropped: the batch is handed back with a growing delay
// and the pump backs off, so a database that cannot write (full disk,
// read-only, I/O error) pauses the projection until it can; the
// projection reports itself stalled meanwhile. Only a batch that keeps
// failing on an error of its own while the database is fine is applied
// message by message (isolate).
func (p *streamProjector[T]) retry(ctx context.Context, c actor.Context, msgs []jetstream.Msg, pr *prepared[T], now time.Time, cause error) batchResult {
	name := p.codec.projection()
	p.env.metrics.retries.WithLabelValues(name).Inc()
	level := slog.LevelDebug // retried with backoff: say it once, then quietly
	if p.env.stalled(name, cause) {
		level = slog.LevelWarn
	}
	if storage.Cause(cause) == "" && pr.delivered >= isolateAfter {
		p.env.log.Warn("batch keeps failing on an error of its own; applying its messages one by one", "projection", name, "err", cause)
		return p.isolate(ctx, c, pr, now)
	}
	delay := p.retryDelay(pr.delivered)
	p.env.log.Log(ctx, level, "projection batch failed; handing it back for redelivery", "projection", name,
		"messages", len(msgs), "retry_in", delay, "err", cause)
	p.replies().nak(msgs, delay)
	return batchResult{failed: true}
}

// replies sends this projector's acks, naks and terms, counting failures.
func (p *streamProjector[T]) replies() replies {
	return replies{consumer: p.codec.durable(), failures: p.env.metrics.ackFailures, log: p.env.log}
}

// retryDelay is the redelivery delay of a batch delivered delivered times.
func (p *streamProjector[T]) retryDelay(delivered uint64) time.Duration {
	return min(p.env.cfg.RetryDelay<<min(delivered, 6), p.env.cfg.MaxRetryDelay)
}

// isolate applies a failing batch one message per transaction: the
// messages that go through are acknowledged; one that fails on its own is
// handed back with the longest delay and kept as stuck (never terminated);
// a failure of the database itself stops the run and hands the rest back.
// Undecodable messages of the batch are recorded and terminated as usual.
func (p *streamProjector[T]) isolate(ctx context.Context, c actor.Context, pr *prepared[T], now time.Time) batchResult {
	start := time.Now()
	name := p.codec.projection()
	var all outcome
	applied := 0
	for i, e := range pr.batch {
		out, err := p.commit(ctx, pr.batch[i:i+1], nil, e.seq, now)
		if err == nil {
			all.events = append(all.events, out.events...)
			all.errors = append(all.errors, out.errors...)
			p.replies().ack(pr.good[i : i+1])
			delete(p.stuck, e.seq)
			applied++
			continue
		}
		if storage.Cause(err) != "" {
			p.env.stalled(name, err)
			p.replies().nak(pr.good[i:], p.retryDelay(pr.delivered))
			p.replies().nak(pr.poisonMsg, p.retryDelay(pr.delivered))
			p.finish(c, all, applied, 0, pr.pending, start)
			return batchResult{failed: true}
		}
		if _, known := p.stuck[e.seq]; !known {
			p.env.log.Error("message cannot be applied; retrying it (it is not dropped)", "projection", name,
				"seq", e.seq, "retry_in", p.env.cfg.MaxRetryDelay, "err", err)
		}
		p.stuck[e.seq] = err
		p.replies().nak(pr.good[i:i+1], p.env.cfg.MaxRetryDelay)
	}
	if len(pr.poison) > 0 {
		if _, err := p.commit(ctx, nil, pr.poison, 0, now); err != nil {
			p.env.stalled(name, err)
			p.replies().nak(pr.poisonMsg, p.retryDelay(pr.delivered))
			p.finish(c, all, applied, 0, pr.pending, start)
			return batchResult{failed: true}
		}
		p.replies().term(pr.poisonMsg)
	}
	p.reportStuck()
	p.finish(c, all, applied, len(pr.poison), pr.pending, start)
	p.caughtUp(pr.maxSeq, pr.pending)
	return batchResult{}
}

// finish publishes a committed batch's events and records its metrics.
func (p *streamProjector[T]) finish(c actor.Context, out outcome, applied, poison int, pending uint64, start time.Time) {
	name := p.codec.projection()
	for _, ev := range out.events {
		c.ActorSystem().EventStream.Publish(ev)
	}
	m := p.env.metrics
	m.projected.WithLabelValues(name).Add(float64(applied))
	if n := poison + len(out.errors); n > 0 {
		m.poison.WithLabelValues(name).Add(float64(n))
	}
	m.batchSize.WithLabelValues(name).Observe(float64(applied + poison))
	m.batchDuration.WithLabelValues(name).Observe(time.Since(start).Seconds())
	m.lag.WithLabelValues(name).Set(float64(pending))
}

// reportStuck clears the projection's stall once no stuck message is
// left, or names the lowest one still failing.
func (p *streamProjector[T]) reportStuck() {
	name := p.codec.projection()
	if len(p.stuck) == 0 {
		p.env.progressed(name)
		return
	}
	var seq uint64
	for s := range p.stuck {
		if seq == 0 || s < seq {
			seq = s
		}
	}
	err := p.stuck[seq]
	p.env.setStall(name, causeOf(err), fmt.Sprintf("%d message(s) cannot be applied and are being retried; seq %d: %v", len(p.stuck), seq, err))
}

func (p *streamProjector[T]) projError(seq uint64, subject string, data []byte, err error, now time.Time) storage.ProjectionError {
	return storage.ProjectionError{
		Projection: p.codec.projection(),
		Stream:     p.codec.stream(),
		StreamSeq:  seq,
		Subject:    subject,
		Error:      err.Error(),
		Payload:    data,
		RecordedAt: storage.T(now),
	}
}
