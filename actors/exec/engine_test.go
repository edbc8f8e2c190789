package exec_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/nats-io/nats.go"

	"kanade-backend/actors/actorsys"
	"kanade-backend/actors/audit"
	"kanade-backend/actors/clock"
	"kanade-backend/actors/exec"
	"kanade-backend/http/httpx"
	"kanade-backend/internal/testsupport"
	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/broker/brokertest"
	"kanade-backend/storage/execrecord"
	"kanade-backend/storage/storagetest"
)

// t0 is the fake clock's start.
var t0 = time.Date(2026, 5, 20, 12, 0, 0, 0, time.UTC)

// env is one engine over a real in-process NATS server and a real SQLite
// file, driven by a fake clock.
type env struct {
	t      testing.TB
	br     *brokertest.Broker
	store  *storage.Store
	clk    *clock.Fake
	sys    *actor.ActorSystem
	pid    *actor.PID
	client *exec.Client
	// nats replaces the engine's publisher when set (failure injection).
	nats exec.Publisher
	// records replaces the engine's record publisher when set.
	records exec.Recorder
	// metrics, when set, are the engine's collectors.
	metrics *exec.Metrics
	// base, when set, is the engine's Deps.Context.
	base context.Context
	// leads, when set, is the engine's Deps.Leads (a replica).
	leads func() bool
}

func newEnv(t testing.TB) *env {
	t.Helper()
	return newEnvOn(t, storagetest.Open(t))
}

// newEnvOn is newEnv on the store st (storagetest.ForEachDialect).
func newEnvOn(t testing.TB, st *storage.Store) *env {
	t.Helper()
	return newEngineEnv(t, brokertest.Start(t), st, clock.NewFake(t0))
}

// newEngineEnv is an engine on the given broker, store and clock: a second
// engine sharing them is a second replica.
func newEngineEnv(t testing.TB, br *brokertest.Broker, st *storage.Store, clk *clock.Fake) *env {
	t.Helper()
	e := &env{t: t, br: br, store: st, clk: clk}
	e.sys = actorsys.New(quietLogger())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = actorsys.Stop(ctx, e.sys, e.pid)
	})
	return e
}

func quietLogger() *slog.Logger {
	if os.Getenv("KANADE_TEST_LOG") == "debug" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func (e *env) deps() exec.Deps {
	pub := e.nats
	if pub == nil {
		pub = e.br.Conn
	}
	var records exec.Recorder = &execrecord.Publisher{JS: e.br.JS}
	if e.records != nil {
		records = e.records
	}
	return exec.Deps{
		Store: e.store, NATS: pub, KV: e.br.JS, Audit: audit.NewPublisher(e.br.JS, e.clk),
		Records: records, Metrics: e.metrics,
		Clock: e.clk, Logger: quietLogger(), RetryBackoff: time.Second, Context: e.base, Leads: e.leads,
	}
}

// start spawns the engine (again, after stop: a restart on the same store).
func (e *env) start() {
	e.t.Helper()
	pid, err := e.sys.Root.SpawnNamed(exec.Props(e.deps()), exec.Name)
	if err != nil {
		e.t.Fatal(err)
	}
	e.pid = pid
	e.client = &exec.Client{Root: e.sys.Root, PID: pid, Timeout: 10 * time.Second}
}

func (e *env) stop() {
	e.t.Helper()
	if err := e.sys.Root.StopFuture(e.pid).Wait(); err != nil {
		e.t.Fatal(err)
	}
	e.pid = nil
}

func (e *env) putJob(id, version, script string) messages.Manifest {
	e.t.Helper()
	m := messages.Manifest{ID: id, Version: version, Execute: messages.Execute{
		Shell: messages.ShellPowerShell, Script: script, Timeout: "30s"}}
	b, err := json.Marshal(m)
	if err != nil {
		e.t.Fatal(err)
	}
	e.putRaw(id, b)
	return m
}

func (e *env) putRaw(id string, b []byte) {
	e.t.Helper()
	if _, err := e.br.KV(e.t, messages.BucketJobs).Put(context.Background(), id, b); err != nil {
		e.t.Fatal(err)
	}
}

// agent records a PC that heartbeated at the fake clock's now, in groups.
func (e *env) agent(pc string, groups ...string) {
	e.t.Helper()
	ctx := context.Background()
	now := e.clk.Now()
	if _, err := e.store.W.NewInsert().Model(&storage.Agent{PcID: pc, AgentVersion: "1",
		LastHeartbeat: storage.T(now), UpdatedAt: storage.T(now)}).On("CONFLICT (pc_id) DO UPDATE").
		Set("last_heartbeat = EXCLUDED.last_heartbeat").Exec(ctx); err != nil {
		e.t.Fatal(err)
	}
	for _, g := range groups {
		if _, err := e.store.W.NewInsert().Model(&storage.GroupMember{PcID: pc, GroupName: g}).
			On("CONFLICT DO NOTHING").Exec(ctx); err != nil {
			e.t.Fatal(err)
		}
	}
}

func (e *env) exec(plan string) (messages.ExecResponse, error) {
	e.t.Helper()
	return e.execJob("job1", plan)
}

func (e *env) execJob(job, plan string) (messages.ExecResponse, error) {
	e.t.Helper()
	var p messages.FanoutPlan
	if err := json.Unmarshal([]byte(plan), &p); err != nil {
		e.t.Fatal(err)
	}
	return e.client.Exec(context.Background(), &messages.ExecRequest{
		JobID: job, Plan: p, Actor: messages.ActorOperator, InitiatedBy: "operator:alice",
		AuditExtra: map[string]any{"sub": "alice", "source": "test"},
	})
}

func (e *env) mustExec(plan string) messages.ExecResponse {
	e.t.Helper()
	r, err := e.exec(plan)
	if err != nil {
		e.t.Fatalf("exec %s: %v", plan, err)
	}
	return r
}

// recorder collects the messages of one subscription.
type recorder struct {
	mu   sync.Mutex
	msgs []*nats.Msg
}

// recordCommands records the Commands agents see: everything on
// commands.> but the engine's own records on commands.exec.>.
func (e *env) recordCommands() *recorder {
	e.t.Helper()
	return e.recordIf("commands.>", func(subject string) bool { return !strings.HasPrefix(subject, "commands.exec.") })
}

func (e *env) record(subject string) *recorder {
	e.t.Helper()
	return e.recordIf(subject, func(string) bool { return true })
}

func (e *env) recordIf(subject string, keep func(subject string) bool) *recorder {
	e.t.Helper()
	r := &recorder{}
	sub, err := e.br.Conn.Subscribe(subject, func(m *nats.Msg) {
		if !keep(m.Subject) {
			return
		}
		r.mu.Lock()
		r.msgs = append(r.msgs, m)
		r.mu.Unlock()
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := e.br.Conn.Flush(); err != nil {
		e.t.Fatal(err)
	}
	return r
}

func (r *recorder) all() []*nats.Msg {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.msgs)
}

func (r *recorder) subjects() []string {
	var out []string
	for _, m := range r.all() {
		out = append(out, m.Subject)
	}
	return out
}

func (r *recorder) commands(t *testing.T) []messages.Command {
	t.Helper()
	var out []messages.Command
	for _, m := range r.all() {
		var c messages.Command
		if err := json.Unmarshal(m.Data, &c); err != nil {
			t.Fatalf("decode %s: %v", m.Data, err)
		}
		out = append(out, c)
	}
	return out
}

// eventually polls f until it returns nil or 5 s pass.
func eventually(t *testing.T, f func() error) {
	t.Helper()
	testsupport.Eventually(t, 5*time.Second, f)
}

func (r *recorder) waitN(t *testing.T, n int) {
	t.Helper()
	eventually(t, func() error {
		if got := len(r.all()); got != n {
			return fmt.Errorf("got %d messages, want %d: %s", got, n, strings.Join(r.subjects(), ","))
		}
		return nil
	})
}

// quiet asserts that no more than n messages arrive within d.
func (r *recorder) quiet(t *testing.T, n int, d time.Duration) {
	t.Helper()
	time.Sleep(d)
	if got := len(r.all()); got != n {
		t.Fatalf("got %d messages, want %d: %v", got, n, r.subjects())
	}
}

func (e *env) execution(id string) storage.Execution {
	e.t.Helper()
	var ex storage.Execution
	if err := e.store.R.NewSelect().Model(&ex).Where("exec_id = ?", id).Scan(context.Background()); err != nil {
		e.t.Fatalf("load exec %s: %v", id, err)
	}
	return ex
}

func (e *env) waves(id string) []storage.ExecWave {
	e.t.Helper()
	var ws []storage.ExecWave
	if err := e.store.R.NewSelect().Model(&ws).Where("exec_id = ?", id).Order("wave_index").Scan(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	return ws
}

func (e *env) expected(id string) []string {
	e.t.Helper()
	var pcs []string
	if err := e.store.R.NewSelect().Model((*storage.ExecExpected)(nil)).Column("pc_id").
		Where("exec_id = ?", id).Order("pc_id").Scan(context.Background(), &pcs); err != nil {
		e.t.Fatal(err)
	}
	return pcs
}

func (e *env) requests(id string) []storage.PublishedRequest {
	e.t.Helper()
	var rs []storage.PublishedRequest
	if err := e.store.R.NewSelect().Model(&rs).Where("exec_id = ?", id).Scan(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	return rs
}

// statusOf is the HTTP status the API answers err with (0 for nil).
func statusOf(err error) int {
	if err == nil {
		return 0
	}
	rec := httptest.NewRecorder()
	httpx.WriteError(rec, httptest.NewRequest(http.MethodPost, "/api/exec/x", nil), err)
	return rec.Code
}

// The engine's I/O derives from Deps.Context: once it has ended (the
// actors' stop began), a request fails at once instead of running its
// store and KV calls, and nothing is recorded or published.
func TestEndedBaseContextEndsTheEngineIO(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.putJob("job1", "1.0.0", "echo")
	e.agent("p1")
	cmds := e.recordCommands()
	base, cancel := context.WithCancel(context.Background())
	e.base = base
	e.start()
	e.mustExec(`{"target":{"pcs":["p1"]}}`)
	cmds.waitN(t, 1)

	cancel()
	start := time.Now()
	resp, err := e.exec(`{"target":{"pcs":["p1"]}}`)
	if err == nil {
		t.Fatalf("exec after the base ended = %+v, want an error", resp)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("the failed exec took %v", took)
	}
	if !strings.Contains(err.Error(), context.Canceled.Error()) {
		t.Fatalf("exec after the base ended: %v, want it to say %v", err, context.Canceled)
	}
	var n int
	if err := e.store.R.NewSelect().Model((*storage.Execution)(nil)).ColumnExpr("count(*)").Scan(context.Background(), &n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("%d executions recorded, want the first one only", n)
	}
	cmds.quiet(t, 1, 300*time.Millisecond)
}
