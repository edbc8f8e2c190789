// Package projector keeps the SQL read model in step with what the fleet
// reports (behaviour.md §1): heartbeats into agents, the RESULTS stream into
// execution_results, inventory_facts and exec progress, the AUDIT stream
// into audit_log, and the KV buckets jobs, schedules and agent_groups into
// their mirror tables. It also expires execs nobody finished answering and
// sweeps old rows (retention). Before the results projector replays RESULTS
// into a wiped database it restores the exec engine's records from the EXEC
// stream (storage/execrecord), so that replayed results find their execs.
//
// Every projector is an actor under one supervisor that restarts a failed
// child with a growing delay, forever: a projector that stays down silently
// freezes the read model (upstream defect 13). JetStream projectors write a
// batch and its checkpoint in one transaction and acknowledge only after the
// commit, so a crash at any point loses nothing; every write is idempotent,
// so what a crash makes the broker deliver again changes nothing. After each
// commit the projectors publish the events of messages/events.go on the
// actor system's EventStream.
package projector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/uptrace/bun"

	"kanade-backend/actors/actorsys"
	"kanade-backend/actors/clock"
	"kanade-backend/storage"
	"kanade-backend/storage/broker"
)

// Projection names: the projection column of projection_checkpoints and
// projection_errors, the metric label, and the child actor's name.
const (
	ProjHeartbeat = "heartbeat"
	ProjResults   = "results"
	ProjAudit     = "audit"
	// Mirrors are named mirror-<bucket>.
	projMirrorPrefix = "mirror-"
	projExpiry       = "exec-expiry"
	projRetention    = "retention"
)

// Durable consumer names. They are part of the deployment's broker state:
// renaming one makes the next start project its stream from scratch.
const (
	DurableResults = "kanade-projector-results"
	DurableAudit   = "kanade-projector-audit"
)

// Subscriber is the core NATS subscription the heartbeat projector needs
// (*nats.Conn).
type Subscriber interface {
	Subscribe(subject string, cb nats.MsgHandler) (*nats.Subscription, error)
}

// JetStream is what the stream and KV projectors need (jetstream.JetStream).
type JetStream interface {
	Stream(ctx context.Context, name string) (jetstream.Stream, error)
	KeyValue(ctx context.Context, bucket string) (jetstream.KeyValue, error)
}

// Deps are the parts the projectors use.
type Deps struct {
	Store *storage.Store
	Conn  Subscriber
	JS    JetStream
	// Clock drives flush, expiry and retention timers (default real time).
	Clock clock.Clock
	// Metrics receives the kanade_projection_* collectors (default: a
	// private registry).
	Metrics prometheus.Registerer
	Logger  *slog.Logger
	// Status receives the projections' stalls for fleet health (default:
	// a private one).
	Status *Status
	// Context ends when the actors' stop begins (the app cancels it
	// before actorsys.Stop). The projectors' store and KV calls derive
	// from it, so a stop ends a slow batch (which is naked and comes back)
	// instead of waiting for its timeout. Nil: never ends.
	Context context.Context
}

// Retention is how long rows stay in the read model; 0 keeps them forever.
type Retention struct {
	ResultsDays          int
	AuditDays            int
	ProjectionErrorsDays int
	// SweepInterval is the time between sweeps (default 1 h).
	SweepInterval time.Duration
	// BatchRows bounds each delete transaction (default 1 000).
	BatchRows int
}

// Config tunes the projectors; the zero value is the production setting.
type Config struct {
	// Rebuild empties every projection table and checkpoint before start,
	// so everything is projected again from the streams and KV (--rebuild).
	Rebuild   bool
	Retention Retention

	// BatchSize is the most messages one transaction applies (default
	// 2 000; the statements inside it stay at 500 rows). A transaction's
	// own work (its commit's WAL frames, the exec lookups, the progress of
	// the execs it touches) is shared by its rows: a 100 000-PC broadcast
	// projected alone at 50–60 % of the raw insert with 500 and at 67–70 %
	// with 2 000 (docs/benchmarks.md).
	BatchSize int
	// BacklogBatchSize is how many messages one transaction applies when
	// the stream already holds at least that many behind the batch being
	// written (default 5 × BatchSize): a large broadcast answered faster
	// than it is written, a catch-up after an outage. A batch commits every
	// page it dirtied; 100 000 answers in random order dirty a page of
	// each pc_id-ordered index per row, and projected in 11.2 s with
	// 2 000-row batches against 5.1 s with 10 000 (docs/benchmarks.md).
	// Below that backlog the batch stays at BatchSize (see readAhead).
	BacklogBatchSize int
	// Linger is how long a fetch waits for more messages to fill a batch
	// that is not full (default 5 ms): a trickle of results then costs one
	// transaction per few milliseconds instead of one per message.
	Linger time.Duration
	// AckWait is the durable consumers' ack wait (default 30 s): how long a
	// message delivered to a projector that died stays invisible.
	AckWait time.Duration
	// RetryDelay is the first redelivery delay of a batch that failed on a
	// database error (default 250 ms); it doubles with each delivery, up to
	// MaxRetryDelay (default 10 s).
	RetryDelay time.Duration
	// MaxRetryDelay bounds the redelivery delay of a failed batch, and is
	// the delay of a message that keeps failing on its own (default 10 s).
	MaxRetryDelay time.Duration
	// HeartbeatFlush is the heartbeat flush period (default 1 s): at most
	// one write transaction per period whatever the fleet size.
	HeartbeatFlush time.Duration
	// ExpiryInterval is how often execs past their deadline are expired
	// (default 5 s).
	ExpiryInterval time.Duration
	// MirrorWait bounds how long the results projector waits for the jobs
	// mirror's first snapshot, which tells it which jobs are inventory jobs
	// (default 10 s).
	MirrorWait time.Duration
	// ReadyTimeout bounds how long Start waits for the projectors to
	// subscribe and create their consumers (default 15 s).
	ReadyTimeout time.Duration
	// RestartBackoff is the supervisor's first restart delay (default
	// 500 ms); it grows with each failure inside a minute.
	RestartBackoff time.Duration
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 2000
	}
	if c.BacklogBatchSize < c.BatchSize {
		c.BacklogBatchSize = 5 * c.BatchSize
	}
	def(&c.Linger, 5*time.Millisecond)
	def(&c.AckWait, 30*time.Second)
	def(&c.RetryDelay, 250*time.Millisecond)
	def(&c.MaxRetryDelay, 10*time.Second)
	def(&c.HeartbeatFlush, time.Second)
	def(&c.ExpiryInterval, 5*time.Second)
	def(&c.MirrorWait, 10*time.Second)
	def(&c.ReadyTimeout, 15*time.Second)
	def(&c.RestartBackoff, 500*time.Millisecond)
	def(&c.Retention.SweepInterval, time.Hour)
	if c.Retention.BatchRows <= 0 {
		c.Retention.BatchRows = 1000
	}
	return c
}

// env is what every projector actor shares: dependencies, configuration
// and metrics. It is built once by Start and never changes.
type env struct {
	store *storage.Store
	conn  Subscriber
	js    JetStream
	// base is Deps.Context: every unit of I/O derives from it.
	base context.Context
	// buckets opens the mirrors' KV buckets once; a restarted mirror
	// reuses the handle.
	buckets *broker.KVHandles
	clock   clock.Clock
	log     *slog.Logger
	cfg     Config
	metrics *metrics
	status  *Status
	// stmts holds the hot statements prepared on SQLite's writer.
	stmts *stmtCache
	// current holds, per stream projection, whether it has applied the
	// backlog its stream held when it started (projection name → bool).
	current sync.Map
}

// inTx runs fn in a write transaction, then prepares the hot statements
// fn ran unprepared (which needs the writer connection the transaction
// held).
func (e *env) inTx(ctx context.Context, fn func(ctx context.Context, tx bun.Tx) error) error {
	if err := e.store.InTx(ctx, fn); err != nil {
		return err
	}
	if err := e.stmts.prepareWanted(ctx); err != nil {
		e.log.Debug("hot statement stays unprepared", "err", err)
	}
	return nil
}

// setCurrent records whether projection has caught up with its stream.
func (e *env) setCurrent(projection string, v bool) { e.current.Store(projection, v) }

// isCurrent reports whether projection has caught up with its stream.
func (e *env) isCurrent(projection string) bool {
	v, ok := e.current.Load(projection)
	return ok && v.(bool)
}

// Start spawns the projector supervisor and its children, and waits (up to
// cfg.ReadyTimeout) until they are subscribed, their consumers exist and the
// mirrors hold their first snapshot, so that whatever starts after them sees
// a projecting read model. If they are not ready in time (NATS away), Start
// logs it and returns: the children keep retrying under supervision.
func Start(ctx context.Context, sys *actor.ActorSystem, d Deps, cfg Config) (*actor.PID, error) {
	if d.Store == nil || d.Conn == nil || d.JS == nil {
		return nil, errors.New("projector: store, NATS connection and JetStream are required")
	}
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
		d.Metrics = prometheus.NewRegistry()
	}
	if d.Status == nil {
		d.Status = NewStatus()
	}
	cfg = cfg.withDefaults()
	m, err := newMetrics(d.Metrics)
	if err != nil {
		return nil, err
	}
	e := &env{base: d.Context, store: d.Store, conn: d.Conn, js: d.JS, buckets: broker.NewKVHandles(d.JS), clock: d.Clock, log: d.Logger.With("component", "projector"),
		cfg: cfg, metrics: m, status: d.Status, stmts: newStmtCache(d.Store.W)}

	if cfg.Rebuild {
		if err := Rebuild(ctx, d.Store); err != nil {
			return nil, err
		}
		e.log.Warn("projections emptied for --rebuild; projecting again from the streams and KV buckets")
	}
	if err := e.stmts.warm(ctx, hotResultsSQL(d.Store.W)...); err != nil {
		e.log.Debug("hot statement stays unprepared until first used", "err", err)
	}

	strategy := actorsys.RestartWithBackoff(time.Minute, cfg.RestartBackoff, func(child *actor.PID, reason any) {
		e.log.Error("projector failed; restarting it", "actor", child.Id, "reason", fmt.Sprint(reason))
		m.restarts.Inc()
	})
	props := actor.PropsFromProducer(func() actor.Actor { return newSupervisor(e) }, actor.WithSupervisor(strategy))
	pid, err := sys.Root.SpawnNamed(props, "projectors")
	if err != nil {
		return nil, fmt.Errorf("spawn projectors: %w", err)
	}

	// With NATS away (an external server not reachable yet) nothing can get
	// ready; the backend starts anyway with degraded health.
	if c, ok := d.Conn.(interface{ IsConnected() bool }); ok && !c.IsConnected() {
		e.log.Warn("NATS not connected; projectors will start projecting once it is")
		return pid, nil
	}
	wait := cfg.ReadyTimeout
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
		wait = time.Until(dl)
	}
	if _, err := sys.Root.RequestFuture(pid, &readyQuery{}, wait).Result(); err != nil {
		e.log.Warn("projectors not ready yet; they keep retrying", "waited", wait, "err", err)
	}
	return pid, nil
}

// readyQuery asks the supervisor to answer once every child is ready.
type readyQuery struct{}

// ready answers readyQuery.
type ready struct{}

// childReady is sent by a child to its parent when it is projecting.
type childReady struct{ name string }

// startResults is sent by the MirrorWait timer: start the results
// projector even though the jobs mirror has not finished its snapshot.
type startResults struct{}

// supervisor spawns the projectors and tracks their readiness. It owns no
// data; the restart strategy lives in its props (see Start).
type supervisor struct {
	env     *env
	want    map[string]bool
	ready   map[string]bool
	waiters []*actor.PID
	results *actor.PID
	timer   clock.Timer
}

var _ actor.Actor = (*supervisor)(nil)

func newSupervisor(e *env) *supervisor {
	return &supervisor{env: e, want: map[string]bool{}, ready: map[string]bool{}}
}

func (s *supervisor) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *actor.Started:
		s.spawn(c, ProjHeartbeat, func() actor.Actor { return newHeartbeatProjector(s.env) })
		s.spawn(c, ProjAudit, func() actor.Actor { return newStreamProjector[auditItem](s.env, auditCodec{}) })
		for _, b := range mirrorBuckets {
			s.spawn(c, projMirrorPrefix+b.bucket, func() actor.Actor { return newKVMirror(s.env, b) })
		}
		s.spawn(c, projExpiry, func() actor.Actor { return newExpirySweeper(s.env) })
		s.spawn(c, projRetention, func() actor.Actor { return newRetentionSweeper(s.env) })
		// The results projector needs to know which jobs are inventory jobs,
		// which only the jobs mirror tells; after a wiped database that
		// mirror is empty until its first snapshot lands.
		s.want[ProjResults] = true
		self, root := c.Self(), c.ActorSystem().Root
		s.timer = s.env.clock.AfterFunc(s.env.cfg.MirrorWait, func() { root.Send(self, &startResults{}) })
	case *childReady:
		s.ready[m.name] = true
		if m.name == projMirrorPrefix+jobsBucket {
			s.spawnResults(c)
		}
		s.answerWaiters(c)
	case *startResults:
		if s.results == nil {
			s.env.log.Warn("jobs mirror not loaded in time; projecting results without it", "waited", s.env.cfg.MirrorWait)
		}
		s.spawnResults(c)
	case *readyQuery:
		s.waiters = append(s.waiters, c.Sender())
		s.answerWaiters(c)
	case *actor.Stopping:
		if s.timer != nil {
			s.timer.Stop()
		}
	case *actor.Stopped:
		// Every child has stopped: no transaction uses the statements now.
		s.env.stmts.close()
	}
}

func (s *supervisor) spawn(c actor.Context, name string, producer actor.Producer) *actor.PID {
	s.want[name] = true
	pid, err := c.SpawnNamed(actor.PropsFromProducer(producer), name)
	if err != nil {
		// Names are fixed and unique under this parent; a failure here is a
		// programming error the supervisor's own restart cannot fix.
		panic(fmt.Errorf("spawn projector %s: %w", name, err))
	}
	return pid
}

func (s *supervisor) spawnResults(c actor.Context) {
	if s.results != nil {
		return
	}
	if s.timer != nil {
		s.timer.Stop()
	}
	s.results = s.spawn(c, ProjResults, func() actor.Actor { return newStreamProjector[resultItem](s.env, resultsCodec{stmts: s.env.stmts}) })
}

func (s *supervisor) answerWaiters(c actor.Context) {
	for name := range s.want {
		if !s.ready[name] {
			return
		}
	}
	for _, w := range s.waiters {
		if w != nil {
			c.Send(w, &ready{})
		}
	}
	s.waiters = nil
}

// reportReady tells the supervisor that the calling child is projecting.
func reportReady(c actor.Context, name string) {
	if p := c.Parent(); p != nil {
		c.Send(p, &childReady{name: name})
	}
}

// opTimeout bounds one unit of I/O done inside Receive (a batch, a flush,
// a sweep), so a wedged database or broker fails the unit instead of the
// actor hanging forever.
const opTimeout = time.Minute

// opContext bounds one unit of I/O: opTimeout, and no longer than the
// backend runs (Deps.Context).
func (e *env) opContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(e.base, opTimeout)
}

// finalContext bounds the last write an actor makes as it stops (the
// heartbeats still pending): the stop has cancelled the base context by
// then, and that write exists to keep what would otherwise be lost, so it
// keeps opTimeout only.
func (e *env) finalContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(e.base), opTimeout)
}
