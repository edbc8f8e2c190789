package schedule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/uptrace/bun"

	"kanade-backend/actors/actorsys"
	"kanade-backend/actors/audit"
	"kanade-backend/actors/clock"
	"kanade-backend/actors/exec"
	"kanade-backend/actors/projector/mirror"
	"kanade-backend/internal/testsupport"
	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/broker/brokertest"
	"kanade-backend/storage/execrecord"
	"kanade-backend/storage/storagetest"
)

// The harness runs the scheduler against the real parts: an in-process
// nats-server with JetStream (KV schedules and jobs, the AUDIT stream) and
// a SQLite file, or a PostgreSQL database for a test run through
// onBothDialects. The projectors are not running: the harness writes the
// rows they would write (agents, the jobs and group mirrors, results) and
// publishes the events they would publish after the commit (AgentsSeen,
// KVMirrored, ResultsProjected). A recording double stands in for the exec
// engine (harnessOpts.realEngine puts the real one in), answering each
// ExecRequest the way the engine's contract says (and, like the engine,
// writing the executions rows, one per exec id).

// t0 is a Monday, far from any DST change in UTC.
var t0 = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

type harness struct {
	t       testing.TB
	b       *brokertest.Broker
	store   *storage.Store
	sys     *actor.ActorSystem
	clock   clock.Clock
	fake    *clock.Fake
	backend *Backend
	reader  Reader
	exec    *execDouble
	execPID *actor.PID
	pid     *actor.PID
	client  *Client
	metrics *Metrics
	reg     *prometheus.Registry
	writer  Writer

	ticks   chan *messages.ScheduleTicked
	tickSub func()

	onTick  atomic.Pointer[func(string)]
	fence   func() (uint64, error)
	stopped bool

	// groups is each PC's agent_groups value as the harness set it.
	groups   map[string][]string
	groupRev uint64
}

type harnessOpts struct {
	real        bool // real clock instead of the fake one
	start       time.Time
	noStart     bool // do not start the supervisor yet
	writer      func(*Backend) Writer
	fireTimeout time.Duration
	// realEngine puts the real exec engine in place of the recording
	// double (publishing on the harness's broker).
	realEngine bool
	// reader wraps the harness's Reader (to observe the scheduler's reads).
	reader func(Reader) Reader
	// fence is the scheduler's Config.Fence.
	fence func() (uint64, error)
}

func testLogger() *slog.Logger {
	if os.Getenv("KANADE_TEST_LOG") == "debug" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func newHarness(t testing.TB, o harnessOpts) *harness {
	t.Helper()
	h := &harness{t: t, b: brokertest.Start(t), store: openStore(t), ticks: make(chan *messages.ScheduleTicked, 100_000)}
	if o.real {
		h.clock = clock.Real{}
	} else {
		start := o.start
		if start.IsZero() {
			start = t0
		}
		h.fake = clock.NewFake(start)
		h.clock = h.fake
	}
	h.sys = actorsys.New(testLogger())
	h.backend = NewBackend(h.store, h.b.JS)
	h.writer = h.backend
	if o.writer != nil {
		h.writer = o.writer(h.backend)
	}
	h.exec = &execDouble{store: h.store, clock: h.clock, requests: make(chan *messages.ExecRequest, 100_000)}
	var err error
	props := actor.PropsFromProducer(func() actor.Actor { return h.exec })
	if o.realEngine {
		props = exec.Props(exec.Deps{Store: h.store, NATS: h.b.Conn, KV: h.b.JS, Audit: audit.NewPublisher(h.b.JS, h.clock),
			Records: &execrecord.Publisher{JS: h.b.JS}, Clock: h.clock, Logger: testLogger()})
	}
	h.reader = h.backend
	if o.reader != nil {
		h.reader = o.reader(h.backend)
	}
	h.execPID, err = h.sys.Root.SpawnNamed(props, "exec")
	if err != nil {
		t.Fatal(err)
	}
	sub := h.sys.EventStream.Subscribe(func(evt any) {
		if e, ok := evt.(*messages.ScheduleTicked); ok {
			// Never block the publishing actor; load tests do not read
			// the channel.
			select {
			case h.ticks <- e:
			default:
			}
		}
	})
	h.tickSub = func() { h.sys.EventStream.Unsubscribe(sub) }
	h.reg = prometheus.NewRegistry()
	h.metrics = NewMetrics(h.reg)
	t.Cleanup(h.stop)
	h.fence = o.fence
	if !o.noStart {
		h.start(o.fireTimeout)
	}
	return h
}

func (h *harness) start(fireTimeout time.Duration) {
	h.t.Helper()
	pid, err := Start(h.sys, Config{
		Clock: h.clock, Source: h.backend, Reader: h.reader, Writer: h.writer,
		Audit: audit.NewPublisher(h.b.JS, h.clock), Exec: h.execPID, Metrics: h.metrics,
		Logger: testLogger(), FireTimeout: fireTimeout, Fence: h.fence,
		OnTick: func(id string) {
			if f := h.onTick.Load(); f != nil {
				(*f)(id)
			}
		},
	})
	if err != nil {
		h.t.Fatal(err)
	}
	h.pid = pid
	h.client = &Client{Root: h.sys.Root, PID: pid}
	h.eventually(10*time.Second, func() error {
		s, err := h.client.Summary(context.Background())
		if err != nil {
			return err
		}
		if !s.Loaded {
			return errors.New("initial snapshot not applied yet")
		}
		return nil
	})
}

// harnessDialect maps the name of a test run by onBothDialects to the
// dialect of that run.
var harnessDialect sync.Map

// onBothDialects runs test once per dialect (subtests "sqlite" and
// "postgres"), like storagetest.RunDialects; the stores that newHarness
// and openStore open inside it, its subtests included, are of that
// dialect. The test bodies stay as they are: the store the harness reads
// and writes is the only thing that changes. The tests whose outcome
// rests on the scheduler's store queries and writes (dedup seeds, fleet
// view, last fires, in-flight rebuild, the settle of an unanswered fire)
// run through it; the timing and supervision tests, for which the store is
// only a backdrop, stay on SQLite.
func onBothDialects(t *testing.T, test func(t *testing.T)) {
	t.Helper()
	storagetest.RunDialects(t, func(t *testing.T, d storagetest.Dialect) {
		harnessDialect.Store(t.Name(), d)
		t.Cleanup(func() { harnessDialect.Delete(t.Name()) })
		test(t)
	})
}

// openStore opens a new migrated store for t: of the dialect of the
// onBothDialects run t belongs to, else SQLite.
func openStore(t testing.TB) *storage.Store {
	t.Helper()
	for name := t.Name(); ; {
		if d, ok := harnessDialect.Load(name); ok {
			return d.(storagetest.Dialect).Open(t)
		}
		i := strings.LastIndexByte(name, '/')
		if i < 0 {
			return storagetest.Open(t)
		}
		name = name[:i]
	}
}

func (h *harness) stop() {
	if h.stopped {
		return
	}
	h.stopped = true
	h.tickSub()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := actorsys.Stop(ctx, h.sys, h.pid, h.execPID); err != nil {
		h.t.Errorf("stop actors: %v", err)
	}
}

func (h *harness) eventually(timeout time.Duration, f func() error) {
	h.t.Helper()
	testsupport.Eventually(h.t, timeout, f)
}

func (h *harness) kv(bucket string) jetstream.KeyValue { return h.b.KV(h.t, bucket) }

// putJob stores a job in KV jobs.
func (h *harness) putJob(id, timeout string) {
	h.t.Helper()
	m := messages.Manifest{ID: id, Version: "1.0.0", Execute: messages.Execute{Shell: messages.ShellPowerShell,
		Script: "echo hi", Timeout: messages.Duration(timeout), RunAs: messages.RunAsSystem}}
	b, err := json.Marshal(m)
	if err != nil {
		h.t.Fatal(err)
	}
	rev, err := h.kv(messages.BucketJobs).Put(context.Background(), id, b)
	if err != nil {
		h.t.Fatal(err)
	}
	// The jobs mirror row and its event, as the KV mirror projector
	// writes and publishes them.
	if err := mirror.Job(context.Background(), h.store.W, id, b, rev, h.clock.Now()); err != nil {
		h.t.Fatal(err)
	}
	h.sys.EventStream.Publish(&messages.KVMirrored{Bucket: messages.BucketJobs,
		Entries: []messages.KVMirroredEntry{{Key: id, Rev: rev, Value: b}}})
}

// putSchedule stores a schedule in KV from JSON and returns its revision.
func (h *harness) putSchedule(js string) uint64 {
	h.t.Helper()
	var s struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(js), &s); err != nil {
		h.t.Fatal(err)
	}
	rev, err := h.kv(messages.BucketSchedules).Put(context.Background(), s.ID, []byte(js))
	if err != nil {
		h.t.Fatal(err)
	}
	return rev
}

func (h *harness) getSchedule(id string) (messages.Schedule, uint64) {
	h.t.Helper()
	e, err := h.kv(messages.BucketSchedules).Get(context.Background(), id)
	if err != nil {
		h.t.Fatal(err)
	}
	var s messages.Schedule
	if err := json.Unmarshal(e.Value(), &s); err != nil {
		h.t.Fatal(err)
	}
	return s, e.Revision()
}

// agents records heartbeats at the clock's now, so the PCs count as alive,
// and publishes AgentsSeen as the heartbeat projector does.
func (h *harness) agents(pcs ...string) {
	h.t.Helper()
	now := h.clock.Now()
	seen := make([]messages.AgentSeen, 0, len(pcs))
	for _, pc := range pcs {
		row := &storage.Agent{PcID: pc, AgentVersion: "0.21.2", LastHeartbeat: storage.T(now), UpdatedAt: storage.T(now)}
		if _, err := h.store.W.NewInsert().Model(row).On("CONFLICT (pc_id) DO UPDATE").
			Set("last_heartbeat = EXCLUDED.last_heartbeat").Exec(context.Background()); err != nil {
			h.t.Fatal(err)
		}
		seen = append(seen, messages.AgentSeen{PcID: pc, At: now, AgentVersion: "0.21.2"})
	}
	h.sys.EventStream.Publish(&messages.AgentsSeen{Agents: seen})
}

// groupMembers adds group to each PC's agent_groups value, mirrored and
// announced as the agent_groups mirror projector does.
func (h *harness) groupMembers(group string, pcs ...string) {
	h.t.Helper()
	if h.groups == nil {
		h.groups = map[string][]string{}
	}
	for _, pc := range pcs {
		h.groups[pc] = append(h.groups[pc], group)
		h.groupRev++
		if err := mirror.Groups(context.Background(), h.store.W, pc, h.groups[pc], h.groupRev, h.clock.Now()); err != nil {
			h.t.Fatal(err)
		}
		v, err := json.Marshal(messages.AgentGroups{Groups: h.groups[pc]})
		if err != nil {
			h.t.Fatal(err)
		}
		h.sys.EventStream.Publish(&messages.KVMirrored{Bucket: messages.BucketAgentGroups,
			Entries: []messages.KVMirroredEntry{{Key: pc, Rev: h.groupRev, Value: v}}})
	}
}

var reqSeq atomic.Int64

// result stores a result as the results projector would and publishes
// ResultsProjected after the commit.
func (h *harness) result(pc, job, execID string, exit int, finished time.Time) {
	h.t.Helper()
	rid := fmt.Sprintf("req-%d", reqSeq.Add(1))
	row := &storage.ExecutionResult{RequestID: rid, PcID: pc, JobID: &job, ExitCode: exit,
		StartedAt: storage.T(finished.Add(-time.Second)), FinishedAt: storage.T(finished), RecordedAt: storage.T(finished)}
	if execID != "" {
		row.ExecID = &execID
	}
	if _, err := h.store.W.NewInsert().Model(row).Exec(context.Background()); err != nil {
		h.t.Fatal(err)
	}
	h.sys.EventStream.Publish(&messages.ResultsProjected{Results: []messages.ProjectedResult{
		{RequestID: rid, PcID: pc, ExecID: execID, JobID: job, ExitCode: exit, FinishedAt: finished}}})
}

// nextTick waits for the next ScheduleTicked of schedule id.
func (h *harness) nextTick(id string, timeout time.Duration) *messages.ScheduleTicked {
	h.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case e := <-h.ticks:
			if e.ScheduleID == id {
				return e
			}
		case <-deadline:
			h.t.Fatalf("no tick of schedule %s within %v", id, timeout)
			return nil
		}
	}
}

// noTick asserts that no tick of schedule id arrives for a while.
func (h *harness) noTick(id string, wait time.Duration) {
	h.t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case e := <-h.ticks:
			if e.ScheduleID == id {
				h.t.Fatalf("unexpected tick %+v", e)
			}
		case <-deadline:
			return
		}
	}
}

// armedFor waits until schedule id's timer is set for instant: the actor
// has processed everything up to it, so the fake clock may move on.
func (h *harness) armedFor(id string, instant time.Time) {
	h.t.Helper()
	h.eventually(5*time.Second, func() error {
		st, err := h.client.Status(context.Background(), id)
		if err != nil {
			return err
		}
		if st.NextTick == nil || !st.NextTick.Equal(instant) {
			return fmt.Errorf("schedule %s armed for %v, want %v", id, st.NextTick, instant)
		}
		return nil
	})
}

// status asks the supervisor.
func (h *harness) status(id string) Status {
	h.t.Helper()
	st, err := h.client.Status(context.Background(), id)
	if err != nil {
		h.t.Fatalf("status %s: %v", id, err)
	}
	return st
}

// execDouble stands in for the exec engine: it records each request,
// writes the executions rows the engine writes (so that the scheduler's
// store queries see real data), and answers with an ExecReply.
type execDouble struct {
	store    *storage.Store
	clock    clock.Clock
	requests chan *messages.ExecRequest
	// reply, if set, decides the answer (nil = answer normally); it may
	// also delay by returning hold=true, in which case the request is
	// answered when release is called.
	mu      sync.Mutex
	reply   func(*messages.ExecRequest) *messages.ExecReply
	held    []heldReply
	holdAll bool
	// noRows skips the executions rows (load tests that only need the
	// answer).
	noRows bool
	n      atomic.Int64
}

type heldReply struct {
	to  *actor.PID
	req *messages.ExecRequest
}

var _ actor.Actor = (*execDouble)(nil)

func (x *execDouble) Receive(ctx actor.Context) {
	req, ok := ctx.Message().(*messages.ExecRequest)
	if !ok {
		return
	}
	select {
	case x.requests <- req:
	default:
	}
	x.mu.Lock()
	if x.holdAll {
		x.held = append(x.held, heldReply{to: ctx.Sender(), req: req})
		x.mu.Unlock()
		return
	}
	f := x.reply
	x.mu.Unlock()
	ctx.Respond(x.answer(req, f))
}

// correlated answers req with r, carrying req's correlation id as the
// engine does.
func correlated(req *messages.ExecRequest, r *messages.ExecReply) *messages.ExecReply {
	r.CorrelationID = req.CorrelationID
	return r
}

func (x *execDouble) answer(req *messages.ExecRequest, f func(*messages.ExecRequest) *messages.ExecReply) *messages.ExecReply {
	if f != nil {
		if r := f(req); r != nil {
			return correlated(req, r)
		}
	}
	execID := req.ExecID
	if execID == "" {
		execID = fmt.Sprintf("exec-%d", x.n.Add(1))
	}
	pcs := req.Plan.Target.Pcs
	now := x.clock.Now()
	plan, _ := json.Marshal(req.Plan)
	row := &storage.Execution{ExecID: execID, JobID: req.JobID, Version: "1.0.0", InitiatedBy: req.InitiatedBy,
		Plan: plan, Subjects: json.RawMessage(`[]`), TargetCount: len(req.Plan.Target.Subjects()), ExpectedPcs: len(pcs),
		Status: storage.ExecPending, TimeoutSecs: 30, CreatedAt: storage.T(now), DeadlineAt: storage.T(now.Add(90 * time.Second)),
		UpdatedAt: storage.T(now)}
	if req.ScheduleID != "" {
		row.ScheduleID = &req.ScheduleID
	}
	x.mu.Lock()
	noRows := x.noRows
	x.mu.Unlock()
	if noRows {
		return &messages.ExecReply{CorrelationID: req.CorrelationID, Response: messages.ExecResponse{ExecID: execID, JobID: req.JobID, Version: "1.0.0"}}
	}
	ctx := context.Background()
	existing := false
	err := x.store.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		res, err := tx.NewInsert().Model(row).On("CONFLICT (exec_id) DO NOTHING").Exec(ctx)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			existing = true // the engine records one exec per id
			return err
		}
		for _, pc := range pcs {
			if _, err := tx.NewInsert().Model(&storage.ExecExpected{ExecID: execID, PcID: pc}).Exec(ctx); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return &messages.ExecReply{CorrelationID: req.CorrelationID, Err: err}
	}
	return &messages.ExecReply{CorrelationID: req.CorrelationID, Existing: existing, Response: messages.ExecResponse{
		ExecID: execID, JobID: req.JobID, Version: "1.0.0",
		TargetCount: row.TargetCount, Subjects: req.Plan.Target.Subjects(), ExpectedPcs: len(pcs)}}
}

// set changes the double's behaviour under its lock.
func (x *execDouble) set(f func(x *execDouble)) {
	x.mu.Lock()
	defer x.mu.Unlock()
	f(x)
}

// release answers every held request.
func (x *execDouble) release(sys *actor.ActorSystem) {
	x.mu.Lock()
	held := x.held
	x.held, x.holdAll = nil, false
	f := x.reply
	x.mu.Unlock()
	for _, hr := range held {
		sys.Root.Send(hr.to, x.answer(hr.req, f))
	}
}

// nextRequest waits for the next ExecRequest.
func (x *execDouble) nextRequest(t testing.TB, timeout time.Duration) *messages.ExecRequest {
	t.Helper()
	select {
	case r := <-x.requests:
		return r
	case <-time.After(timeout):
		t.Fatalf("no exec request within %v", timeout)
		return nil
	}
}

func (x *execDouble) noRequest(t testing.TB, wait time.Duration) {
	t.Helper()
	select {
	case r := <-x.requests:
		t.Fatalf("unexpected exec request %+v", r)
	case <-time.After(wait):
	}
}

func pcsOf(r *messages.ExecRequest) string { return strings.Join(r.Plan.Target.Pcs, ",") }

// gauge reads a gauge of the harness's registry by name.
func (h *harness) gauge(name string) float64 {
	h.t.Helper()
	return testsupport.RequireMetric(h.t, h.reg, name).Value
}
