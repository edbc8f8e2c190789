package broker_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"kanade-backend/internal/testsupport"
	"kanade-backend/messages"
	"kanade-backend/storage/broker"
	"kanade-backend/storage/broker/brokertest"
)

func TestEnsureCreatesEverythingAndIsIdempotent(t *testing.T) {
	ctx := context.Background()
	b := brokertest.Start(t, brokertest.Options{SkipEnsure: true})

	st := broker.Probe(ctx, b.JS)
	if got := len(st.Missing()); got != 15 {
		t.Fatalf("before ensure: %d missing, want 15 (%v)", got, st.Missing())
	}
	if err := broker.Ensure(ctx, b.JS, 1, nil); err != nil {
		t.Fatal(err)
	}
	st = broker.Probe(ctx, b.JS)
	if len(st.Streams) != 6 || len(st.KVBuckets) != 8 || len(st.ObjectStores) != 1 || len(st.Missing()) != 0 {
		t.Fatalf("after ensure: %+v missing=%v", st, st.Missing())
	}

	// A second ensure changes nothing: every stream (KV and object store
	// ones included) keeps its creation time, configuration and messages.
	before := brokertest.DescribeStreams(t, b.JS)
	if len(before) != 15 {
		t.Fatalf("%d streams after ensure, want 15: %v", len(before), before)
	}
	if err := broker.Ensure(ctx, b.JS, 1, nil); err != nil {
		t.Fatalf("second ensure: %v", err)
	}
	for name, was := range brokertest.DescribeStreams(t, b.JS) {
		if was != before[name] {
			t.Fatalf("second ensure changed %s:\nbefore %s\nafter  %s", name, before[name], was)
		}
	}

	s, err := b.JS.Stream(ctx, messages.StreamExec)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	if cfg.MaxMsgsPerSubject != 1 || cfg.MaxAge != 7*24*time.Hour || cfg.Subjects[0] != "commands.exec.>" {
		t.Fatalf("EXEC config = %+v", cfg)
	}
	kv := b.KV(t, messages.BucketAgentsState)
	kst, err := kv.Status(ctx)
	if err != nil || kst.History() != 1 {
		t.Fatalf("agents_state history = %v err=%v", kst, err)
	}
}

// A stream whose config drifted (an older release, an operator's edit) is
// brought back in line at start, not treated as fatal (defect 4).
func TestEnsureUpdatesDriftedStream(t *testing.T) {
	ctx := context.Background()
	b := brokertest.Start(t, brokertest.Options{SkipEnsure: true})
	if _, err := b.JS.CreateStream(ctx, jetstream.StreamConfig{
		Name: messages.StreamResults, Subjects: []string{"results.>"}, MaxAge: time.Hour,
	}); err != nil {
		t.Fatal(err)
	}
	if err := broker.Ensure(ctx, b.JS, 1, nil); err != nil {
		t.Fatal(err)
	}
	s, err := b.JS.Stream(ctx, messages.StreamResults)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config.MaxAge; got != 30*24*time.Hour {
		t.Fatalf("MaxAge = %v, want 30d", got)
	}
}

func TestProbeReportsDeletedStream(t *testing.T) {
	ctx := context.Background()
	b := brokertest.Start(t)
	if err := b.JS.DeleteStream(ctx, messages.StreamAudit); err != nil {
		t.Fatal(err)
	}
	st := broker.Probe(ctx, b.JS)
	if m := st.Missing(); len(m) != 1 || m[0] != "stream AUDIT" {
		t.Fatalf("missing = %v", m)
	}
}

// The embedded server accepts ordinary TCP clients (agents, the CLI) when it
// listens, and sees the resources the backend created.
func TestEmbeddedServerAcceptsTCPClients(t *testing.T) {
	b := brokertest.Start(t, brokertest.Options{Listen: "127.0.0.1:-1"})
	_, js := testsupport.ConnectJS(t, b.ClientURL())
	if _, err := js.KeyValue(context.Background(), messages.BucketJobs); err != nil {
		t.Fatalf("jobs bucket over TCP: %v", err)
	}
}

// A first connection made late (NATS came up after the backend) reports
// the connection as up: it is a connect, not a reconnect.
func TestConnectReportsALateFirstConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var mu sync.Mutex
	var states []bool
	nc, err := broker.Connect(broker.ConnectOptions{URL: "nats://" + addr, Name: t.Name(),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), OnStateChange: func(up bool) {
			mu.Lock()
			defer mu.Unlock()
			states = append(states, up)
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	last := func() (bool, int) {
		mu.Lock()
		defer mu.Unlock()
		if len(states) == 0 {
			return false, 0
		}
		return states[len(states)-1], len(states)
	}
	if up, n := last(); up || n == 0 {
		t.Fatalf("before NATS is up: last state %v of %d reports, want one report of down", up, n)
	}
	brokertest.Start(t, brokertest.Options{Listen: addr, SkipEnsure: true})
	deadline := time.Now().Add(10 * time.Second)
	for up, _ := last(); !up; up, _ = last() {
		if time.Now().After(deadline) {
			t.Fatalf("state still down 10s after NATS came up (connected=%v)", nc.IsConnected())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !nc.IsConnected() {
		t.Fatal("reported up but not connected")
	}
}
