package broker_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"kanade-backend/storage/broker"
	"kanade-backend/storage/broker/brokertest"
)

// A bucket is looked up once and its handle kept; a bucket that does not
// exist yet is found once it does (failures are not kept).
func TestKVHandlesOpenOnceAndRetryFailures(t *testing.T) {
	b := brokertest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h := broker.NewKVHandles(b.JS)
	if _, err := h.Open(ctx, "later"); !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Fatalf("missing bucket: %v", err)
	}
	if _, err := b.JS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "later"}); err != nil {
		t.Fatal(err)
	}
	first, err := h.Open(ctx, "later")
	if err != nil {
		t.Fatalf("bucket created since: %v", err)
	}
	again, err := h.Open(ctx, "later")
	if err != nil || again != first {
		t.Fatalf("second open: %v, same handle %v", err, again == first)
	}
	if _, err := broker.NewKVHandles(nil).Open(ctx, "later"); !errors.Is(err, broker.ErrNoJetStream) {
		t.Fatalf("without JetStream: %v", err)
	}
}
