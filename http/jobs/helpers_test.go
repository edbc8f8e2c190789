package jobs_test

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"kanade-backend/internal/apptest"
)

func jetKV(t *testing.T, b *apptest.Backend, bucket string) jetstream.KeyValue {
	t.Helper()
	kv, err := b.JS.KeyValue(context.Background(), bucket)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}
