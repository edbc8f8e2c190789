package events_test

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"kanade-backend/actors/actorsys"
	"kanade-backend/actors/live"
	"kanade-backend/http/events"
	"kanade-backend/http/server"
	"kanade-backend/internal/testsupport"
	"kanade-backend/messages"
	"kanade-backend/storage/broker/brokertest"
)

type env struct {
	sys     *actor.ActorSystem
	hub     *live.Hub
	streams *events.Streams
	srv     *httptest.Server
	reg     *prometheus.Registry
	stopped bool
}

// clients reads kanade_live_clients.
func (e *env) clients(t *testing.T) float64 {
	t.Helper()
	return testsupport.RequireMetric(t, e.reg, "kanade_live_clients").Value
}

func (e *env) stopHub(t *testing.T) {
	if e.stopped {
		return
	}
	e.stopped = true
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := actorsys.Stop(ctx, e.sys, e.hub.PID()); err != nil {
		t.Error(err)
	}
}

func start(t *testing.T) *env {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	// Registered first, so run last: after the hub, the server and NATS
	// stopped.
	t.Cleanup(func() {
		// protoactor's dead-letter throttle keeps a goroutine for one
		// throttle period after a message to a stopped actor, and the NATS
		// server's process-statistics timer outlives it briefly; both end
		// by themselves, so they are not leaks of the hub's.
		goleak.VerifyNone(t, ignore, goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/actor.NewDeadLetter.NewThrottle.func4.1"),
			goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server/pse.periodic"))
	})
	br := brokertest.Start(t)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	sys := actorsys.New(logger)
	reg := prometheus.NewRegistry()
	hub, err := live.Start(sys, live.Options{JS: br.JS, Logger: logger, Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{sys: sys, hub: hub, streams: events.New(hub), reg: reg}
	r := server.NewRouter()
	e.streams.Register(r)
	e.srv = httptest.NewUnstartedServer(r.Handler(server.Options{Logger: logger}))
	e.srv.Config.RegisterOnShutdown(e.streams.Close)
	e.srv.Start()
	t.Cleanup(func() {
		e.streams.Close()
		e.srv.Close()
		e.stopHub(t)
	})
	return e
}

// stream is one client connection read frame by frame.
type stream struct {
	resp   *http.Response
	frames chan string
	cancel context.CancelFunc
}

func (e *env) connect(t *testing.T, lastEventID string) *stream {
	return e.connectWithBody(t, lastEventID, "")
}

func (e *env) connectWithBody(t *testing.T, lastEventID, body string) *stream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", e.srv.URL+"/api/events", strings.NewReader(body))
	req.Header.Set("Accept", "text/event-stream")
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		cancel()
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	s := &stream{resp: resp, frames: make(chan string, 100), cancel: cancel}
	go func() {
		defer close(s.frames)
		sc := bufio.NewScanner(resp.Body)
		var frame strings.Builder
		for sc.Scan() {
			if sc.Text() == "" {
				s.frames <- frame.String()
				frame.Reset()
				continue
			}
			frame.WriteString(sc.Text() + "\n")
		}
	}()
	t.Cleanup(s.close)
	return s
}

func (s *stream) close() {
	s.cancel()
	s.resp.Body.Close()
	for range s.frames {
	}
}

// next returns the next frame, or fails after timeout.
func (s *stream) next(t *testing.T, timeout time.Duration) string {
	t.Helper()
	select {
	case f, ok := <-s.frames:
		if !ok {
			t.Fatal("stream ended")
		}
		return f
	case <-time.After(timeout):
		t.Fatalf("no frame within %v", timeout)
	}
	return ""
}

// ended waits for the server to end the stream.
func (s *stream) ended(t *testing.T, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case _, ok := <-s.frames:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatalf("stream still open after %v", timeout)
		}
	}
}

func TestResultArrivesWithinOneSecond(t *testing.T) {
	e := start(t)
	s := e.connect(t, "")
	if f := s.next(t, 2*time.Second); f != "retry: 3000\n: connected\n" {
		t.Fatalf("first frame %q", f)
	}
	if err := e.hub.Barrier(time.Second); err != nil { // the client has joined
		t.Fatal(err)
	}
	published := time.Now()
	e.sys.EventStream.Publish(&messages.ResultsProjected{Results: []messages.ProjectedResult{{RequestID: "r1", PcID: "pc-1", FinishedAt: published}}})
	f := s.next(t, time.Second)
	if took := time.Since(published); took > time.Second {
		t.Fatalf("result event after %v", took)
	}
	if !strings.Contains(f, "event: result\n") || !strings.Contains(f, `"request_id":"r1"`) || !strings.HasPrefix(f, "id: ") {
		t.Fatalf("frame %q", f)
	}
	id := strings.TrimPrefix(strings.SplitN(f, "\n", 2)[0], "id: ")

	// A reconnect with Last-Event-ID is replayed what it missed.
	s.close()
	e.sys.EventStream.Publish(&messages.AuditProjected{ID: 9})
	if err := e.hub.Barrier(time.Second); err != nil {
		t.Fatal(err)
	}
	again := e.connect(t, id)
	again.next(t, time.Second) // retry/connected
	if f := again.next(t, time.Second); !strings.Contains(f, "event: audit\n") {
		t.Fatalf("replayed %q", f)
	}
}

// Close (the HTTP server's OnShutdown) ends open streams, so a graceful
// shutdown does not wait for them; new requests are refused.
func TestShutdownEndsStreams(t *testing.T) {
	e := start(t)
	s := e.connect(t, "")
	s.next(t, 2*time.Second)
	done := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = e.srv.Config.Shutdown(ctx)
		close(done)
	}()
	s.ended(t, 2*time.Second)
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("shutdown waited for the stream")
	}
	rec := httptest.NewRecorder()
	e.streams.ServeHTTP(rec, httptest.NewRequest("GET", "/api/events", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("after close: %d", rec.Code)
	}
}

// The hub stopping (or dropping the client) ends the stream too; a client
// going away leaves the hub.
func TestHubStopAndClientDisconnect(t *testing.T) {
	e := start(t)
	a := e.connect(t, "")
	a.next(t, 2*time.Second)
	b := e.connect(t, "")
	b.next(t, 2*time.Second)

	b.close()
	// The handler notices the closed connection and leaves: a result now
	// reaches only a.
	e.sys.EventStream.Publish(&messages.AuditProjected{ID: 1})
	// 5 s, not 1: under the whole suite's load the frame once took longer.
	if f := a.next(t, 5*time.Second); !strings.Contains(f, "event: audit") {
		t.Fatalf("frame %q", f)
	}

	e.stopHub(t)
	a.ended(t, 2*time.Second)
}

// HEAD gets the headers and an immediate end, never a stream that would
// block the keep-alive connection's next request.
func TestHead(t *testing.T) {
	e := start(t)
	for i := 0; i < 3; i++ { // same keep-alive connection
		req, _ := http.NewRequest("HEAD", e.srv.URL+"/api/events", nil)
		c := e.srv.Client()
		c.Timeout = 2 * time.Second
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("HEAD: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
}

// A client that goes away leaves the hub at once, also when its request
// carried a body; a body past the limit is refused before joining (a
// stream that never read its body would not notice the client leaving:
// net/http watches for that only once the body is consumed).
func TestDisconnectLeavesHub(t *testing.T) {
	e := start(t)
	for _, body := range []string{"", `{"x":1}`} {
		s := e.connectWithBody(t, "", body)
		s.next(t, 2*time.Second)
		if err := e.hub.Barrier(time.Second); err != nil {
			t.Fatal(err)
		}
		if got := e.clients(t); got != 1 {
			t.Fatalf("body %q: %v clients", body, got)
		}
		s.close()
		deadline := time.Now().Add(2 * time.Second)
		for e.clients(t) != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("body %q: client still joined after disconnect", body)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	req, _ := http.NewRequest("GET", e.srv.URL+"/api/events", strings.NewReader(strings.Repeat("x", 2<<20)))
	c := e.srv.Client()
	c.Timeout = 5 * time.Second
	resp, err := c.Do(req)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("oversized body: %d", resp.StatusCode)
		}
	}
	if err := e.hub.Barrier(time.Second); err != nil {
		t.Fatal(err)
	}
	if got := e.clients(t); got != 0 {
		t.Fatalf("oversized body joined the hub: %v clients", got)
	}
}
