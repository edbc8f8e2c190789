// Package brokertest starts a real in-process nats-server with JetStream for
// tests, with its store in the test's temporary directory.
package brokertest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"kanade-backend/storage/broker"
)

// Broker is a running test server with a connected client.
type Broker struct {
	Server *server.Server
	// Embedded is the server's restartable wrapper (Server is the server
	// it started with).
	Embedded *broker.Embedded
	Conn     *nats.Conn
	JS       jetstream.JetStream
}

// Options tune Start.
type Options struct {
	// Listen makes the server accept TCP clients ("127.0.0.1:-1" picks a
	// free port); empty means in-process only.
	Listen string
	// SkipEnsure leaves the JetStream resources uncreated.
	SkipEnsure bool
	// StoreDir holds the file store (default t.TempDir()), e.g. on a small
	// filesystem for the disk-fault tests.
	StoreDir string
	// Store watches the server's store (broker.EmbeddedOptions.Store).
	Store *broker.StoreHealth
}

// Start runs a server for the duration of the test.
func Start(t testing.TB, opts ...Options) *Broker {
	t.Helper()
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if o.StoreDir == "" {
		o.StoreDir = t.TempDir()
	}
	emb, err := broker.StartEmbedded(broker.EmbeddedOptions{StoreDir: o.StoreDir, Listen: o.Listen, Logger: logger, Store: o.Store})
	if err != nil {
		t.Fatalf("start nats: %v", err)
	}
	nc, err := broker.Connect(broker.ConnectOptions{InProcess: emb, Name: t.Name(), Logger: logger})
	if err != nil {
		emb.Shutdown()
		t.Fatalf("connect nats: %v", err)
	}
	t.Cleanup(func() {
		nc.Close()
		emb.Shutdown()
	})
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	if !o.SkipEnsure {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := broker.Ensure(ctx, js, 1, logger); err != nil {
			t.Fatalf("ensure resources: %v", err)
		}
	}
	return &Broker{Server: emb.Server(), Embedded: emb, Conn: nc, JS: js}
}

// KV opens a bucket or fails the test.
func (b *Broker) KV(t testing.TB, bucket string) jetstream.KeyValue {
	t.Helper()
	kv, err := b.JS.KeyValue(context.Background(), bucket)
	if err != nil {
		t.Fatalf("kv %s: %v", bucket, err)
	}
	return kv
}

// ClientURL is the TCP URL when the server listens.
func (b *Broker) ClientURL() string { return b.Server.ClientURL() }

// DescribeStreams lists every stream of js (the streams behind KV buckets
// and object stores included) with its creation time, configuration and
// message count, so that a test can show that something left them as they
// were.
func DescribeStreams(t testing.TB, js jetstream.JetStream) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out := map[string]string{}
	l := js.ListStreams(ctx)
	for info := range l.Info() {
		cfg, err := json.Marshal(info.Config)
		if err != nil {
			t.Fatal(err)
		}
		out[info.Config.Name] = fmt.Sprintf("%s msgs=%d %s", info.Created.UTC().Format(time.RFC3339Nano), info.State.Msgs, cfg)
	}
	if err := l.Err(); err != nil {
		t.Fatalf("list streams: %v", err)
	}
	return out
}

// Acked waits (up to wait in all) for the acknowledgements of asynchronous
// publishes and returns how many the stream acknowledged; a publish it
// refused, or did not answer in time, does not count.
func Acked(futures []jetstream.PubAckFuture, wait time.Duration) int {
	acked := 0
	deadline := time.After(wait)
	for _, f := range futures {
		select {
		case <-f.Ok():
			acked++
		case <-f.Err():
		case <-deadline:
			return acked
		}
	}
	return acked
}
