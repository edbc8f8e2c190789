package sim_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"kanade-backend/internal/sim"
	"kanade-backend/messages"
	"kanade-backend/storage/broker/brokertest"
)

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("KANADE_TEST_LOG") == "debug" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startBroker runs a nats-server with every bucket, reachable over TCP
// like the backend's embedded server.
func startBroker(t testing.TB) *brokertest.Broker {
	t.Helper()
	return brokertest.Start(t, brokertest.Options{Listen: "127.0.0.1:-1"})
}

// brokertestInProcess runs a nats-server reachable only in-process.
func brokertestInProcess(t testing.TB) *brokertest.Broker {
	t.Helper()
	return brokertest.Start(t)
}

// startFleet runs a fleet against b until the test ends.
func startFleet(t testing.TB, b *brokertest.Broker, cfg sim.Config) *sim.Fleet {
	t.Helper()
	if cfg.NATSURL == "" && cfg.Conn == nil {
		cfg.NATSURL = b.ClientURL()
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	if cfg.Seed == 0 {
		cfg.Seed = 42
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f, err := sim.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start fleet: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := f.Stop(ctx); err != nil {
			t.Errorf("stop fleet: %v", err)
		}
	})
	return f
}

// results collects every ExecResult published on results.> in arrival
// order (one subscription, so results of one agent arrive in the order
// it published them).
type results struct {
	ch chan messages.ExecResult
}

func watchResults(t testing.TB, nc *nats.Conn) *results {
	t.Helper()
	r := &results{ch: make(chan messages.ExecResult, 10000)}
	sub, err := nc.Subscribe(messages.SubjectResultsAll, func(m *nats.Msg) {
		var res messages.ExecResult
		if err := json.Unmarshal(m.Data, &res); err != nil {
			t.Errorf("undecodable result on %s: %v", m.Subject, err)
			return
		}
		if m.Subject != messages.ResultsSubject(res.RequestID) {
			t.Errorf("result for %s published on %s", res.RequestID, m.Subject)
		}
		r.ch <- res
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return r
}

// onHeartbeats calls fn with every heartbeat published on nc until the
// test ends; fn runs on the subscription's goroutine.
func onHeartbeats(t testing.TB, nc *nats.Conn, fn func(messages.Heartbeat)) {
	t.Helper()
	sub, err := nc.Subscribe(messages.SubjectHeartbeatAll, func(m *nats.Msg) {
		var hb messages.Heartbeat
		if err := json.Unmarshal(m.Data, &hb); err != nil {
			t.Errorf("undecodable heartbeat on %s: %v", m.Subject, err)
			return
		}
		fn(hb)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// next returns the next result or fails after timeout.
func (r *results) next(t testing.TB, timeout time.Duration) messages.ExecResult {
	t.Helper()
	select {
	case res := <-r.ch:
		return res
	case <-time.After(timeout):
		t.Fatalf("no result within %v", timeout)
		return messages.ExecResult{}
	}
}

// none fails if a result arrives within d.
func (r *results) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case res := <-r.ch:
		t.Fatalf("unexpected result %+v", res)
	case <-time.After(d):
	}
}

// command builds a Command as the backend's fan-out does.
func command(id, version, script string) messages.Command {
	exec := uuid.NewString()
	return messages.Command{
		ID: id, Version: version, RequestID: uuid.NewString(), JobID: &exec,
		Shell: messages.ShellPowerShell, Script: script, TimeoutSecs: 60, RunAs: messages.RunAsSystem,
	}
}

func publish(t testing.TB, nc *nats.Conn, subject string, cmd messages.Command) {
	t.Helper()
	b, err := json.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish(subject, b); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

func putKV(t *testing.T, b *brokertest.Broker, bucket, key, value string) {
	t.Helper()
	if _, err := b.KV(t, bucket).Put(context.Background(), key, []byte(value)); err != nil {
		t.Fatalf("put %s[%s]: %v", bucket, key, err)
	}
}
