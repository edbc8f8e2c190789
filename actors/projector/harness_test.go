package projector

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/eventstream"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"kanade-backend/actors/actorsys"
	"kanade-backend/actors/clock"
	"kanade-backend/internal/testsupport"
	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/broker/brokertest"
	"kanade-backend/storage/storagetest"
)

// harness runs the projectors against a real in-process NATS with
// JetStream and a real SQLite file.
type harness struct {
	t      testing.TB
	broker *brokertest.Broker
	store  *storage.Store
	dbPath string
	sys    *actor.ActorSystem
	pid    *actor.PID
	reg    *prometheus.Registry
	status *Status
	clock  clock.Clock
	cfg    Config
	// endBase cancels Deps.Context; stop calls it first, as the app does.
	endBase context.CancelFunc

	mu     sync.Mutex
	events []any
	sub    *eventstream.Subscription
}

type harnessOpts struct {
	broker *brokertest.Broker
	// store reuses an open store (a restart on the same database); else
	// dbPath (default a new file) is opened.
	store  *storage.Store
	dbPath string
	clock  clock.Clock
	cfg    Config
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("KANADE_TEST_LOG") == "debug" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func newHarness(t testing.TB, o harnessOpts) *harness {
	t.Helper()
	if o.broker == nil {
		o.broker = brokertest.Start(t)
	}
	if o.dbPath == "" {
		o.dbPath = filepath.Join(t.TempDir(), "backend.db")
	}
	if o.clock == nil {
		o.clock = clock.Real{}
	}
	h := &harness{t: t, broker: o.broker, dbPath: o.dbPath, clock: o.clock, cfg: o.cfg}
	h.store = o.store
	if h.store == nil {
		h.store = storagetest.OpenAt(t, o.dbPath)
	}
	return h
}

// start runs the projectors; stop is registered as a cleanup.
func (h *harness) start() *harness {
	h.t.Helper()
	h.sys = actorsys.New(testLogger(h.t))
	h.sub = h.sys.EventStream.Subscribe(func(ev any) {
		h.mu.Lock()
		h.events = append(h.events, ev)
		h.mu.Unlock()
	})
	h.reg = prometheus.NewRegistry()
	h.status = NewStatus()
	var base context.Context
	base, h.endBase = context.WithCancel(context.Background())
	pid, err := Start(context.Background(), h.sys, Deps{
		Store: h.store, Conn: h.broker.Conn, JS: h.broker.JS, Clock: h.clock,
		Metrics: h.reg, Logger: testLogger(h.t), Status: h.status, Context: base,
	}, h.cfg)
	if err != nil {
		h.t.Fatalf("start projectors: %v", err)
	}
	h.pid = pid
	h.t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	if h.pid == nil {
		return
	}
	h.endBase() // as the app: the actors' I/O ends before they stop
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := actorsys.Stop(ctx, h.sys, h.pid); err != nil {
		h.t.Errorf("stop projectors: %v", err)
	}
	h.pid = nil
}

// eventsOf returns the events of type T seen so far.
func eventsOf[T any](h *harness) []T {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []T
	for _, ev := range h.events {
		if e, ok := ev.(T); ok {
			out = append(out, e)
		}
	}
	return out
}

func (h *harness) count(table string, where ...string) int {
	h.t.Helper()
	q := h.store.R.NewSelect().TableExpr(table)
	for _, w := range where {
		q = q.Where(w)
	}
	n, err := q.Count(context.Background())
	if err != nil {
		h.t.Fatalf("count %s: %v", table, err)
	}
	return int(n)
}

func (h *harness) waitCount(table string, want int, within time.Duration, where ...string) {
	h.t.Helper()
	testsupport.Eventually(h.t, max(within, waitFor), func() error {
		if n := h.count(table, where...); n != want {
			return fmt.Errorf("%s has %d rows %v, want %d", table, n, where, want)
		}
		return nil
	})
}

// metric returns the value of a counter or gauge (or the sample count of a
// histogram) of the projectors' registry, summed over the series with
// labels (name, value pairs); 0 when absent.
func (h *harness) metric(name string, labels ...string) float64 {
	h.t.Helper()
	s := testsupport.Metric(h.t, h.reg, name, labels...)
	return s.Value + float64(s.Count)
}

// stall returns the projection's stall, if it is stalled.
func (h *harness) stall(projection string) (Stall, bool) {
	for _, st := range h.status.Stalls() {
		if st.Projection == projection {
			return st, true
		}
	}
	return Stall{}, false
}

// setBeforeCommit installs the batch-commit hook for one test.
func setBeforeCommit(t testing.TB, f func(projection string) error) {
	beforeCommit.Store(&f)
	t.Cleanup(func() { beforeCommit.Store(nil) })
}

type atomicBool = atomic.Bool

// publishJS publishes payloads through JetStream (waiting for the stream's
// acks), as fast as the broker takes them.
func publishJS(t testing.TB, js jetstream.JetStream, msgs []pubMsg) {
	t.Helper()
	var futures []jetstream.PubAckFuture
	for _, m := range msgs {
		f, err := js.PublishAsync(m.subject, m.data, jetstream.WithStallWait(30*time.Second))
		if err != nil {
			t.Fatalf("publish %s: %v", m.subject, err)
		}
		futures = append(futures, f)
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		t.Fatal("publish acks did not arrive")
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			t.Fatalf("publish %s: %v", f.Msg().Subject, err)
		}
	}
}

type pubMsg struct {
	subject string
	data    []byte
}

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func result(req, pc string, exit int, stdout string, manifest string) pubMsg {
	r := messages.ExecResult{
		RequestID: req, PcID: pc, ExitCode: exit, Stdout: stdout, Stderr: "",
		StartedAt: t0, FinishedAt: t0.Add(time.Second),
	}
	if manifest != "" {
		r.ManifestID = &manifest
	}
	b, _ := json.Marshal(r)
	return pubMsg{subject: messages.ResultsSubject(req), data: b}
}

// waitFor is the least any wait of these tests allows: the machine
// running them may be loaded (and -race slows the pure-Go SQLite a lot);
// a passing test returns as soon as its condition holds.
const waitFor = 20 * time.Second

// consumerIdle waits until the durable consumer has delivered and had
// acknowledged every message of its stream.
func (h *harness) consumerInfo(stream, durable string) (*jetstream.ConsumerInfo, error) {
	ctx := context.Background()
	c, err := h.broker.JS.Consumer(ctx, stream, durable)
	if err != nil {
		return nil, err
	}
	return c.Info(ctx)
}

func (h *harness) consumerIdle(stream, durable string) {
	h.t.Helper()
	testsupport.Eventually(h.t, waitFor, func() error {
		ci, err := h.consumerInfo(stream, durable)
		if err != nil {
			return err
		}
		if ci.NumPending != 0 || ci.NumAckPending != 0 {
			return fmt.Errorf("consumer %s: pending %d, ack pending %d, redelivered %d", durable, ci.NumPending, ci.NumAckPending, ci.NumRedelivered)
		}
		return nil
	})
}
