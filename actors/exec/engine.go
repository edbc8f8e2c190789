// Package exec is the fan-out engine (behaviour.md §2): the one actor that
// turns "run job J at target T" into Commands on NATS. The HTTP API, the
// schedule actors and rerun-failed all send it *messages.ExecRequest, and it
// replies *messages.ExecReply (carrying the request's correlation id) to
// the sender.
//
// For every exec it takes the manifest the request carries (the scheduler
// reads its jobs mirror) or reads it from KV jobs (the catalog is the
// source of truth, so an edit applies to the next exec), validates the
// plan, writes the version pin script_current[id] before anything is
// published (upstream wrote it after, and a fast agent dropped the
// command), and records the executions row with every request_id and
// expected PC before publishing: an ExecResult carries no exec_id, so a
// fast agent's result can only find its exec through exec_requests rows
// that already exist. Commands go out with core NATS publishes, which are
// buffered, and one flush, so a fan-out to 10 000 PCs costs one round trip
// to the server, not 10 000.
//
// Requests are handled in batches (batch.go): everything pending when the
// engine gets to it shares one catalog read and one pin per job, one
// database transaction, one flush, and one pipeline of exec records and
// audit events (pipeline.go), so that thousands of schedules due at the
// same instant cost a few round trips instead of thousands. An exec id the
// request names (a scheduled fire's, derived from its schedule and
// instant) is recorded at most once: a second request for it publishes
// nothing and is answered with the exec already recorded.
//
// Rollout waves are durable (upstream kept them in memory, defect 12): every
// wave is a row of exec_waves, one timer (clock.AfterFunc sending a message
// to the actor) fires at the earliest pending due time, and on start the
// engine reloads pending waves from the store, so a restart delays nothing
// that is due later and publishes at once what fell due while it was down.
// Cancel runs in the same actor as the timer, so a cancel and a due wave
// never race. Waves are delivered at least once: a crash between publishing
// a wave and recording it publishes that wave again at the next start.
//
// After creation an exec's status belongs to the results projector
// (running, completed, failed, expired); this engine only sets it at
// creation (pending), to cancelled (every wave cancelled before any was
// published) and to failed when not a single Command could be published.
//
// NATS publishes and SQLite writes run inside Receive because they are
// fast and local, but Receive never waits on another actor, nor on
// JetStream acknowledgements (the pipeline waits for those).
package exec

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/eventstream"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"kanade-backend/actors/audit"
	"kanade-backend/actors/clock"
	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/broker"
	"kanade-backend/storage/execrecord"
)

// Name is the engine's actor name (its PID id).
const Name = "exec"

// DeadlineMargin is added to timeout + jitter to get an exec's deadline
// (deadline_at), after which PCs that have not answered count as "never
// answered". It covers what the script's own timeout does not: the agent's
// reaction to the command, publishing the result and the projector's batch
// delay. One minute is generous for all three and still short enough that
// an operator sees a silent PC as such soon after the run.
const DeadlineMargin = 60 * time.Second

// Defaults of Deps.
const (
	DefaultFlushTimeout = 5 * time.Second
	DefaultRetryBackoff = 5 * time.Second
	// opTimeout bounds the I/O of one message (KV reads, SQL, audit).
	opTimeout = 30 * time.Second
)

// Publisher is the core NATS side of the engine: buffered publishes and one
// flush that confirms the server has them.
type Publisher interface {
	Publish(subject string, data []byte) error
	FlushTimeout(timeout time.Duration) error
}

var _ Publisher = (*nats.Conn)(nil)

// Buckets opens KV buckets by name. The engine opens them lazily, so a
// backend that started while JetStream was unreachable still gets a working
// engine once it is back.
type Buckets interface {
	KeyValue(ctx context.Context, bucket string) (jetstream.KeyValue, error)
}

var _ Buckets = (jetstream.JetStream)(nil)

// Recorder stores execs' records on the EXEC stream (execrecord): a new
// revision of one exec, or the first records of many new ones in one
// pipeline (one error per record).
type Recorder interface {
	Publish(ctx context.Context, rec *execrecord.Record) error
	PublishNew(ctx context.Context, recs []*execrecord.Record) []error
}

var _ Recorder = (*execrecord.Publisher)(nil)

// Auditor publishes audit events, many in one pipeline (one error per
// event).
type Auditor interface {
	PublishAll(ctx context.Context, evs []messages.AuditEvent) []error
}

var _ Auditor = (*audit.Publisher)(nil)

// Deps is everything the engine uses.
type Deps struct {
	Store *storage.Store
	NATS  Publisher
	KV    Buckets
	Audit Auditor
	// Records keeps every exec's record durable in JetStream, so that a
	// wiped database gets its executions back.
	Records Recorder
	Clock   clock.Clock
	Logger  *slog.Logger
	// Metrics may be nil (not exported).
	Metrics *Metrics
	// FlushTimeout bounds the wait for the server to confirm a fan-out.
	FlushTimeout time.Duration
	// RetryBackoff is how long a wave that could not be published waits
	// before the next attempt.
	RetryBackoff time.Duration
	// Leads, if set, says whether this backend leads the cluster (holds
	// the leader lease). The rollout-wave timers are a singleton: only the
	// leader's engine publishes due waves, and it looks at the store's
	// pending waves every WavePoll, so that it also publishes the waves of
	// execs another replica's engine recorded. Nil: this engine is alone
	// and publishes every wave (a lone backend, tests).
	Leads func() bool
	// WavePoll is how often a leading engine looks for pending waves
	// (default DefaultWavePoll; only with Leads).
	WavePoll time.Duration
	// Context ends when the actors' stop begins (the app cancels it
	// before actorsys.Stop). The I/O of each message derives from it, so
	// a stop ends a slow store or KV call instead of waiting opTimeout for
	// it. Nil: never ends.
	Context context.Context
}

func (d *Deps) defaults() {
	if d.Context == nil {
		d.Context = context.Background()
	}
	if d.Clock == nil {
		d.Clock = clock.Real{}
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	if d.Metrics == nil {
		d.Metrics = NewMetrics(nil)
	}
	if d.FlushTimeout <= 0 {
		d.FlushTimeout = DefaultFlushTimeout
	}
	if d.RetryBackoff <= 0 {
		d.RetryBackoff = DefaultRetryBackoff
	}
	if d.WavePoll <= 0 {
		d.WavePoll = DefaultWavePoll
	}
}

// Props returns the engine's props. The supervisor restarts it after a
// panic; the restarted engine reloads its waves from the store.
func Props(d Deps) *actor.Props {
	d.defaults()
	return actor.PropsFromProducer(func() actor.Actor {
		return &engine{Deps: d, log: d.Logger.With("component", "exec"), buckets: broker.NewKVHandles(d.KV)}
	})
}

// Spawn starts the engine as a top-level actor named Name.
func Spawn(root *actor.RootContext, d Deps) (*actor.PID, error) {
	if d.Store == nil || d.NATS == nil || d.KV == nil || d.Audit == nil || d.Records == nil {
		return nil, errors.New("exec engine: store, NATS, KV, audit and records are required")
	}
	return root.SpawnNamed(Props(d), Name)
}

// Cancel asks the engine to cancel an exec's pending rollout waves; it
// replies *CancelReply.
type Cancel struct {
	ExecID string
}

// CancelReply answers Cancel. Err is ErrNotFound (no such exec) or
// ErrConflict (no pending wave) with an operator-facing text.
type CancelReply struct {
	ExecID string `json:"exec_id"`
	// CancelledWaves is how many pending waves were cancelled.
	CancelledWaves int `json:"cancelled_waves"`
	// Status is the exec's status afterwards: cancelled when nothing had
	// been published yet, otherwise whatever the projector has set.
	Status string `json:"status"`
	Err    error  `json:"-"`
}

// DefaultWavePoll is how often a leading engine among replicas looks for
// pending rollout waves (Deps.Leads): a wave another replica recorded is
// published at most this late.
const DefaultWavePoll = time.Second

// wavesPoll is the leading engine's periodic look at the pending waves.
type wavesPoll struct{}

// wavesDue is the wave timer's message to the engine. gen identifies the
// arming, so a message from a timer that was replaced is ignored.
type wavesDue struct{ gen uint64 }

// engine is the actor. Its fields are touched only from Receive, so it
// needs no lock; the timer callback only sends a message.
type engine struct {
	Deps
	log     *slog.Logger
	self    *actor.PID
	sys     *actor.ActorSystem
	buckets *broker.KVHandles

	// queue holds the requests of the next batch; flushQueued says a
	// flushBatch is on its way.
	queue       []*queued
	flushQueued bool
	pipe        *pipeline
	// probeQueued says an idleProbe is on its way.
	probeQueued bool
	// unstamped are published_at marks deferred until idle (deferStamps).
	unstamped      []stamps
	unstampedExecs int

	// Wave timer: armed says whether a wavesDue for generation gen is on
	// its way (timer is nil when it was sent directly because the wave was
	// already due).
	timer clock.Timer
	// poll re-sends wavesPoll while the engine runs (Deps.Leads).
	poll    clock.Timer
	armed   bool
	armedAt time.Time
	gen     uint64
	// backoffUntil holds every wave back after a publish failure, so an
	// unreachable NATS is retried calmly instead of in a tight loop.
	backoffUntil time.Time
	// unrecorded holds the execs whose latest record is not stored yet.
	unrecorded map[string]bool
	// restoredSub forwards execrecord restores (which may reload waves)
	// and the answers of the execs in watched (gate.go).
	restoredSub *eventstream.Subscription
	watched     atomic.Pointer[map[string]bool]
}

var _ actor.Actor = (*engine)(nil)

// Receive handles one message.
func (e *engine) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *actor.Started:
		e.self, e.sys = c.Self(), c.ActorSystem()
		self, root := e.self, e.sys.Root
		e.pipe = newPipeline(&e.Deps, e.log, self, root.Send)
		e.restoredSub = e.sys.EventStream.Subscribe(func(evt any) {
			switch ev := evt.(type) {
			case *messages.ExecsRestored:
				root.Send(self, ev)
			case *messages.ExecProgressed:
				if m := e.forwardAnswers(ev); m != nil {
					root.Send(self, m)
				}
			}
		})
		ctx, cancel := e.opContext()
		defer cancel()
		if n := e.rearm(ctx); n > 0 {
			e.log.Info("rollout waves pending", "count", n, "next_due", e.armedAt)
		}
		if e.Leads != nil {
			e.poll = e.Clock.AfterFunc(e.WavePoll, func() { root.Send(self, &wavesPoll{}) })
		}
	case *wavesPoll:
		ctx, cancel := e.opContext()
		defer cancel()
		e.rearm(ctx)
		self, root := e.self, e.sys.Root
		e.poll = e.Clock.AfterFunc(e.WavePoll, func() { root.Send(self, &wavesPoll{}) })
	case *actor.Restarting:
		e.halt(messages.Unavailablef("the exec engine restarted before handling this request; nothing was published"))
	case *actor.Stopping:
		e.halt(messages.Unavailablef("%v", errStopping))
	case *messages.ExecsRestored:
		// Executions came back from the EXEC stream after this engine
		// started (the broker was away at start): their waves are due too.
		ctx, cancel := e.opContext()
		defer cancel()
		if n := e.rearm(ctx); n > 0 {
			e.log.Info("rollout waves pending after restore", "count", n, "next_due", e.armedAt)
		}
	case *messages.ExecRequest:
		e.enqueue(c, m)
	case *flushBatch:
		e.runBatch(c)
		e.probeIdle(c)
	case *idleProbe:
		e.probeQueued = false
		if len(e.queue) == 0 && !e.flushQueued {
			ctx, cancel := e.opContext()
			defer cancel()
			e.flushStamps(ctx)
			e.pipe.release()
		}
	case *recordsFailed:
		if e.unrecorded == nil {
			e.unrecorded = map[string]bool{}
		}
		for _, id := range m.ids {
			e.unrecorded[id] = true
		}
	case *Cancel:
		e.operatorAction(c, func(ctx context.Context) (any, *execrecord.Record) {
			reply, rec := e.cancel(ctx, c.ActorSystem(), m.ExecID)
			return &reply, rec
		})
	case *Resume:
		e.operatorAction(c, func(ctx context.Context) (any, *execrecord.Record) {
			reply, rec := e.resume(ctx, c.ActorSystem(), m)
			return &reply, rec
		})
	case *Abort:
		e.operatorAction(c, func(ctx context.Context) (any, *execrecord.Record) {
			reply, rec := e.abort(ctx, c.ActorSystem(), m.ExecID)
			return &reply, rec
		})
	case *gateAnswers:
		ctx, cancel := e.opContext()
		defer cancel()
		e.rejudge(ctx, c.ActorSystem(), m.execID)
		e.probeIdle(c)
	case *wavesDue:
		if !e.armed || m.gen != e.gen {
			return // a replaced or stopped timer
		}
		e.armed, e.timer = false, nil
		if e.Leads != nil && !e.Leads() {
			return // armed while leading; the leader publishes now
		}
		ctx, cancel := e.opContext()
		defer cancel()
		e.storeUnrecorded(ctx)
		e.publishDue(ctx, c.ActorSystem())
		e.rearm(ctx)
		e.probeIdle(c)
	}
}

// opContext bounds the I/O of one message: opTimeout, and no longer than
// the backend runs (Deps.Context).
func (e *engine) opContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(e.Context, opTimeout)
}

// operatorAction runs an operator's request on an exec (cancel, resume,
// abort) and hands its reply and the exec's new record to the pipeline
// (the reply follows the record).
func (e *engine) operatorAction(c actor.Context, do func(ctx context.Context) (any, *execrecord.Record)) {
	ctx, cancel := e.opContext()
	defer cancel()
	e.storeUnrecorded(ctx)
	reply, rec := do(ctx)
	h := &handoff{replies: []outbound{{to: c.Sender(), msg: reply}}}
	if rec != nil {
		h.revised = append(h.revised, rec)
	}
	e.pipe.push(h)
	e.probeIdle(c)
}

// idleProbe goes to the back of the engine's mailbox: when it is handled
// with no request queued, nothing came in ahead of it, the engine is idle
// and the pipeline may have the cores.
type idleProbe struct{}

func (e *engine) probeIdle(c actor.Context) {
	if !e.probeQueued {
		e.probeQueued = true
		c.Send(c.Self(), &idleProbe{})
	}
}

// halt ends this incarnation: the wave timer, the restore subscription,
// the requests still queued (answered with err: nothing of them was
// written), and the pipeline, given a moment to store what it holds.
func (e *engine) halt(err error) {
	e.disarm()
	if e.poll != nil {
		e.poll.Stop()
		e.poll = nil
	}
	// Stopping: the base has ended, but what the stamps hold is still
	// flushed, bounded by the stop's own deadline (actorsys.Stop).
	ctx, cancel := context.WithTimeout(context.WithoutCancel(e.Context), opTimeout)
	defer cancel()
	e.flushStamps(ctx)
	if e.restoredSub != nil {
		e.sys.EventStream.Unsubscribe(e.restoredSub)
		e.restoredSub = nil
	}
	for _, q := range e.queue {
		if q.sender != nil {
			e.sys.Root.Send(q.sender, &messages.ExecReply{CorrelationID: q.req.CorrelationID, Err: err})
		}
	}
	e.queue = nil
	if e.pipe != nil {
		e.pipe.stop(pipelineStopTimeout)
		e.pipe = nil
	}
}

// loadRecord reads exec id's current record for the pipeline; nil when
// there is nothing to store (removed by retention meanwhile) or it could
// not be read (then it is retried with the next batch or wave round).
func (e *engine) loadRecord(ctx context.Context, execID string) *execrecord.Record {
	e.flushStamps(ctx) // the record reads them back
	rec, err := execrecord.Load(ctx, e.Store.R, execID)
	if execrecord.IsNotFound(err) {
		delete(e.unrecorded, execID)
		return nil
	}
	if err != nil {
		e.Metrics.recordFailed.Inc()
		e.log.Error("exec record not loaded; will retry", "exec_id", execID, "err", err)
		if e.unrecorded == nil {
			e.unrecorded = map[string]bool{}
		}
		e.unrecorded[execID] = true
		return nil
	}
	delete(e.unrecorded, execID)
	return rec
}

// storeRecord hands exec id's current record to the pipeline.
func (e *engine) storeRecord(ctx context.Context, execID string) {
	if rec := e.loadRecord(ctx, execID); rec != nil {
		e.pipe.push(&handoff{revised: []*execrecord.Record{rec}})
	}
}

// storeUnrecorded hands the records that could not be stored before to
// the pipeline again; the ones that fail again come back.
func (e *engine) storeUnrecorded(ctx context.Context) {
	if len(e.unrecorded) == 0 {
		return
	}
	h := &handoff{}
	for id := range e.unrecorded {
		if rec := e.loadRecord(ctx, id); rec != nil {
			h.revised = append(h.revised, rec)
		}
	}
	e.pipe.push(h)
}

// kv returns an opened bucket, opening it on first use.
func (e *engine) kv(ctx context.Context, bucket string) (jetstream.KeyValue, error) {
	kv, err := e.buckets.Open(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("open KV bucket %s: %w", bucket, err)
	}
	return kv, nil
}

// progressed publishes ExecProgressed for the exec's committed state.
func progressed(sys *actor.ActorSystem, ex *storage.Execution, at time.Time) {
	sys.EventStream.Publish(&messages.ExecProgressed{
		ExecID: ex.ExecID, JobID: ex.JobID, Status: ex.Status, Expected: ex.ExpectedPcs,
		Success: ex.SuccessCount, Failure: ex.FailureCount, At: at,
	})
}
