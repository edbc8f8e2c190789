// Package apptest runs a whole backend in-process for end-to-end tests:
// embedded NATS with JetStream, a real SQLite file (or a PostgreSQL database
// of storage/pgtest) and real HTTP, all in the test's temporary directory,
// stopped at cleanup.
package apptest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"kanade-backend/actors/clock"
	"kanade-backend/cmd/kanade-backend/app"
	"kanade-backend/internal/sim"
	"kanade-backend/internal/testsupport"
	"kanade-backend/messages"
)

// Token is the static API token of test backends.
const Token = "test-token"

// Backend is a running test backend.
type Backend struct {
	*app.App
	// URL is the HTTP base URL, e.g. http://127.0.0.1:41234.
	URL string
	// NATSURL is the embedded server's TCP URL (for simulated agents).
	NATSURL string
	Client  *http.Client
}

// Options tune Start.
type Options struct {
	// DataDir reuses a directory (to test restarts); default t.TempDir().
	DataDir string
	// DBURL runs the backend on PostgreSQL (storagetest.Dialect.URL);
	// empty keeps the SQLite file in DataDir.
	DBURL string
	// Env adds environment variables seen by the backend (auth settings).
	Env map[string]string
	// Configure edits the config before start.
	Configure func(*app.Config)
	// Prepare edits the App before Run (test hooks, guard intervals).
	Prepare func(*app.App)
	// LogLevel of the captured log (default warn; KANADE_TEST_LOG=debug
	// prints everything).
	LogLevel slog.Level
	// Clock replaces the actors' and handlers' time source (App.Clock):
	// with a *clock.Fake, a test advances heartbeat flushes, cron ticks,
	// wave delays and expiry instead of sleeping. The leader lease keeps
	// real time (its TTL runs on the NATS server). Default: real time.
	Clock clock.Clock
}

// Start runs a backend until the test ends.
func Start(t testing.TB, opts ...Options) *Backend {
	t.Helper()
	b, stop := StartManual(t, opts...)
	t.Cleanup(stop)
	return b
}

// StartManual runs a backend and returns its stop function, for tests that
// restart the backend on the same data directory.
func StartManual(t testing.TB, opts ...Options) (*Backend, func()) {
	t.Helper()
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	if o.DataDir == "" {
		o.DataDir = t.TempDir()
	}
	if o.LogLevel == 0 {
		o.LogLevel = slog.LevelWarn
	}
	if os.Getenv("KANADE_TEST_LOG") == "debug" {
		o.LogLevel = slog.LevelDebug
	}
	cfg := app.Defaults()
	cfg.DataDir = o.DataDir
	cfg.Server.Bind = "127.0.0.1:0"
	cfg.NATS.Listen = "127.0.0.1:-1"
	cfg.DB.URL = o.DBURL
	// The free space of the machine running the tests is not the test's
	// subject: disk thresholds are off unless a test sets them.
	cfg.Disk = app.DiskConfig{MinFreePercent: -1, MinFreeMiB: -1}
	if o.Configure != nil {
		o.Configure(&cfg)
	}
	env := map[string]string{"KANADE_AUTH_STATIC_TOKEN": Token}
	for k, v := range o.Env {
		env[k] = v
	}
	logDone := &atomic.Bool{}
	logger := slog.New(slog.NewTextHandler(testWriter{t: t, done: logDone}, &slog.HandlerOptions{Level: o.LogLevel}))
	a := app.New(cfg, logger)
	a.Getenv = func(k string) string { return env[k] }
	if o.Clock != nil {
		a.Clock = o.Clock
	}
	if o.Prepare != nil {
		o.Prepare(a)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	select {
	case <-a.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("backend did not start: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("backend did not start within 30s")
	}
	b := &Backend{App: a, URL: "http://" + a.HTTPAddr(), Client: &http.Client{Timeout: 60 * time.Second}}
	if a.NATSServer != nil {
		b.NATSURL = a.NATSServer.ClientURL()
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("backend stopped with error: %v", err)
			}
		case <-time.After(app.StopTimeout + 5*time.Second):
			t.Errorf("backend did not stop within %v", app.StopTimeout)
		}
		logDone.Store(true)
	}
	return b, stop
}

// Do sends a request with the test token. body may be nil, []byte/string
// (sent as is) or any value (sent as JSON).
func (b *Backend) Do(t testing.TB, method, path string, body any, header ...string) (*http.Response, []byte) {
	t.Helper()
	var r io.Reader
	switch v := body.(type) {
	case nil:
	case []byte:
		r = bytes.NewReader(v)
	case string:
		r = bytes.NewReader([]byte(v))
	default:
		j, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, b.URL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+Token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := b.Client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp, out
}

// JSON sends a request, requires status want, and decodes the body into v
// (when v is not nil).
func (b *Backend) JSON(t testing.TB, method, path string, body any, want int, v any) []byte {
	t.Helper()
	resp, out := b.Do(t, method, path, body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s: status %d, want %d; body %s", method, path, resp.StatusCode, want, out)
	}
	if v != nil {
		if err := json.Unmarshal(out, v); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, path, out, err)
		}
	}
	return out
}

// Eventually polls f until it returns nil or timeout passes, then fails the
// test with f's last error.
// (testsupport.Eventually, kept here because every end-to-end test has
// apptest in hand.)
func Eventually(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	testsupport.Eventually(t, timeout, f)
}

// testWriter sends the backend's log to the test log, so it is shown only
// for failing tests (or with -v).
// After the backend stopped, stray late lines are dropped: testing panics
// on Log after a test has completed.
type testWriter struct {
	t    testing.TB
	done *atomic.Bool
}

func (w testWriter) Write(p []byte) (int, error) {
	if !w.done.Load() {
		w.t.Log(string(bytes.TrimRight(p, "\n")))
	}
	return len(p), nil
}

// StartFleet runs simulated agents (the kanade-fleet simulator) against
// the backend's NATS until the test ends. cfg.NATSURL defaults to the
// backend's, cfg.Logger to a silent one.
func (b *Backend) StartFleet(t testing.TB, cfg sim.Config) *sim.Fleet {
	t.Helper()
	if cfg.NATSURL == "" {
		cfg.NATSURL = b.NATSURL
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f, err := sim.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start simulated fleet: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := f.Stop(ctx); err != nil {
			t.Errorf("stop simulated fleet: %v", err)
		}
	})
	return f
}

// SetGroups writes agent_groups keys as an operator (or kanade-fleet
// --assign-groups) would: pc_id → its groups.
func (b *Backend) SetGroups(t testing.TB, groups map[string][]string) {
	t.Helper()
	ctx := context.Background()
	kv, err := b.JS.KeyValue(ctx, messages.BucketAgentGroups)
	if err != nil {
		t.Fatalf("agent_groups bucket: %v", err)
	}
	for pc, gs := range groups {
		v, err := json.Marshal(messages.AgentGroups{Groups: gs})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(ctx, pc, v); err != nil {
			t.Fatalf("put groups of %s: %v", pc, err)
		}
	}
}

// ErrorText returns the message of a JSON error body ({"error": "…"}),
// failing the test when body is not one or the message is empty.
func ErrorText(t testing.TB, body []byte) string {
	t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error == "" {
		t.Fatalf("want a JSON error, got %s", body)
	}
	return e.Error
}

// WantError sends a request and requires status, a JSON error response
// and, when text is not empty, exactly that message.
func (b *Backend) WantError(t testing.TB, method, path string, body any, status int, text string) {
	t.Helper()
	resp, out := b.Do(t, method, path, body)
	if resp.StatusCode != status {
		t.Fatalf("%s %s: status %d, want %d; body %s", method, path, resp.StatusCode, status, out)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("%s %s: content type %q, want JSON", method, path, ct)
	}
	if got := ErrorText(t, out); text != "" && got != text {
		t.Fatalf("%s %s: error %q, want %q", method, path, got, text)
	}
}

// Bearer returns the header pair that makes Do send tok instead of the
// test token: b.Do(t, "GET", path, nil, apptest.Bearer(tok)...).
func Bearer(tok string) []string { return []string{"Authorization", "Bearer " + tok} }

// CreateOperator makes an operator with role (viewer, operator, admin)
// through POST /api/operators as the test's admin, and returns its token.
func (b *Backend) CreateOperator(t testing.TB, name, role string) string {
	t.Helper()
	var op struct {
		Token string `json:"token"`
	}
	b.JSON(t, "POST", "/api/operators", map[string]string{"name": name, "role": role}, http.StatusCreated, &op)
	if op.Token == "" {
		t.Fatalf("POST /api/operators %s: no token in the answer", name)
	}
	return op.Token
}

// AliasBomb is a YAML document of levels lines, each prefixed, in which
// every anchor holds width aliases of the previous one: a few hundred bytes
// that expand to width^levels scalars ("billion laughs"), for the tests
// that hostile YAML is refused cheaply.
func AliasBomb(levels, width int, prefix string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%sb0: &b0 [%s]\n", prefix, strings.TrimSuffix(strings.Repeat("lol,", width), ","))
	for i := 1; i < levels; i++ {
		fmt.Fprintf(&b, "%sb%d: &b%d [%s]\n", prefix, i, i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*b%d,", i-1), width), ","))
	}
	return b.String()
}
