package broker_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"kanade-backend/messages"
	"kanade-backend/storage/broker"
	"kanade-backend/storage/broker/brokertest"
	"kanade-backend/storage/storagetest"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// publishSome publishes n messages on subject prefix and returns how many
// the stream acknowledged within wait.
func publishSome(t *testing.T, js jetstream.JetStream, prefix string, n int, wait time.Duration) int {
	t.Helper()
	payload := []byte(strings.Repeat("r", 1024))
	var futures []jetstream.PubAckFuture
	for i := range n {
		f, err := js.PublishAsync(fmt.Sprintf("%s.%d", prefix, i), payload)
		if err != nil {
			t.Fatal(err)
		}
		futures = append(futures, f)
	}
	return brokertest.Acked(futures, wait)
}

func streamMsgs(t *testing.T, js jetstream.JetStream, name string) uint64 {
	t.Helper()
	st, err := js.Stream(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// The embedded store on a real filesystem that fills up: the stream that
// can no longer store is named, nothing is reported while it stores, and
// once space is freed the server is restarted in place: the stream stores
// again and keeps everything it had, and the client (the same connection
// object) reconnects by itself.
func TestFullStoreIsReportedAndRecovered(t *testing.T) {
	disk := storagetest.SmallDisk(t, 48<<20)
	health := broker.NewStoreHealth(quiet)
	b := brokertest.Start(t, brokertest.Options{StoreDir: filepath.Join(disk, "nats"), Store: health})
	js := b.JS

	if n := publishSome(t, js, "results.before", 2000, 20*time.Second); n != 2000 {
		t.Fatalf("%d of 2000 stored on an empty disk", n)
	}
	if f := health.Failures(); len(f) != 0 {
		t.Fatalf("failures on a healthy store: %+v", f)
	}
	free := storagetest.Fill(t, disk)
	// The block being written may still have a few KiB of room.
	for i := 0; len(health.Failures()) == 0 && i < 20; i++ {
		publishSome(t, js, fmt.Sprintf("results.full%d", i), 200, 2*time.Second)
	}
	stored := streamMsgs(t, js, messages.StreamResults)
	f := health.Failures()
	if len(f) != 1 || f[0].Stream != messages.StreamResults || !strings.Contains(f[0].Reason, "no space left on device") {
		t.Fatalf("failures = %+v, want RESULTS with the cause", f)
	}
	if _, err := health.Recover(); err == nil || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("recover on a full disk: %v, want a refusal", err)
	}

	free()
	reconnects := b.Conn.Stats().Reconnects
	recovered, err := health.Recover()
	if err != nil || !recovered {
		t.Fatalf("recover after freeing space: %v %v", recovered, err)
	}
	waitReconnected(t, b, reconnects)
	if f := health.Failures(); len(f) != 0 {
		t.Fatalf("failures after recovery: %+v", f)
	}
	if n := publishSome(t, js, "results.after", 500, 20*time.Second); n != 500 {
		t.Fatalf("%d of 500 stored after recovery", n)
	}
	if got := streamMsgs(t, js, messages.StreamResults); got != stored+500 {
		t.Fatalf("RESULTS holds %d, want the %d stored before plus 500", got, stored)
	}
	if stored < 2000 {
		t.Fatalf("only %d messages kept, want at least the 2000 acknowledged before the disk filled", stored)
	}
	if health.Recoveries() != 1 {
		t.Fatalf("recoveries = %d", health.Recoveries())
	}
}

// JetStream disabled by the server (as it does on a permission error) is
// reported, and Run restarts the server to bring it back.
func TestDisabledJetStreamIsReEnabled(t *testing.T) {
	health := broker.NewStoreHealth(quiet)
	b := brokertest.Start(t, brokertest.Options{Store: health})
	if n := publishSome(t, b.JS, "results.x", 10, 10*time.Second); n != 10 {
		t.Fatalf("%d of 10 stored", n)
	}
	if err := b.Server.ShutdownJetStream(); err != nil {
		t.Fatal(err)
	}
	f := health.Failures()
	if len(f) != 1 || f[0].Stream != "" || !strings.Contains(f[0].Reason, "JetStream is disabled") {
		t.Fatalf("failures = %+v", f)
	}
	reconnects := b.Conn.Stats().Reconnects
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); health.Run(ctx, 20*time.Millisecond) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(10 * time.Second)
	for len(health.Failures()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("not re-enabled: %+v", health.Failures())
		}
		time.Sleep(10 * time.Millisecond)
	}
	waitReconnected(t, b, reconnects)
	if n := publishSome(t, b.JS, "results.y", 10, 10*time.Second); n != 10 {
		t.Fatalf("%d of 10 stored after re-enabling", n)
	}
	if got := streamMsgs(t, b.JS, messages.StreamResults); got != 20 {
		t.Fatalf("RESULTS holds %d, want 20", got)
	}
}

// waitReconnected waits for the client to be back on the restarted server:
// it keeps no reconnect buffer, so a publish made before would fail.
func waitReconnected(t *testing.T, b *brokertest.Broker, before uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for b.Conn.Stats().Reconnects == before || !b.Conn.IsConnected() {
		if time.Now().After(deadline) {
			t.Fatal("client not reconnected to the restarted server within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
