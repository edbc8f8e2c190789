package broker

import (
	"context"
	"errors"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// BucketOpener looks a KV bucket up; jetstream.JetStream implements it.
type BucketOpener interface {
	KeyValue(ctx context.Context, bucket string) (jetstream.KeyValue, error)
}

// ErrNoJetStream is KVHandles.Open's error when there is no JetStream
// connection to open a bucket with.
var ErrNoJetStream = errors.New("no JetStream connection")

// KVHandles opens KV buckets on first use and keeps their handles: opening
// costs a round trip to the server, and the callers (ticks, API requests)
// read buckets all the time. The lookup is lazy because NATS may be away
// when the backend starts; a failed lookup is not kept, so the next call
// tries again and a bucket created later is found. The round trip runs
// outside the lock, so a slow or absent server holds up only the callers
// of a bucket that is not open yet, never those of an open one; two
// callers racing to open the same bucket both get a working handle. The
// zero value is ready once JS is set.
type KVHandles struct {
	JS BucketOpener

	mu   sync.Mutex
	open map[string]jetstream.KeyValue
}

// NewKVHandles returns the bucket handles of js.
func NewKVHandles(js BucketOpener) *KVHandles { return &KVHandles{JS: js} }

// Open returns bucket's handle, looking it up on first use. Its error is
// the lookup's, or ErrNoJetStream; the caller words it for its own users.
func (b *KVHandles) Open(ctx context.Context, bucket string) (jetstream.KeyValue, error) {
	b.mu.Lock()
	kv, ok := b.open[bucket]
	b.mu.Unlock()
	if ok {
		return kv, nil
	}
	if b.JS == nil {
		return nil, ErrNoJetStream
	}
	kv, err := b.JS.KeyValue(ctx, bucket)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if cur, ok := b.open[bucket]; ok {
		return cur, nil // another caller opened it meanwhile
	}
	if b.open == nil {
		b.open = map[string]jetstream.KeyValue{}
	}
	b.open[bucket] = kv
	return kv, nil
}
