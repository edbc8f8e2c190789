package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrNoHolder: nobody holds the lease now.
var ErrNoHolder = errors.New("nobody holds the leader lease")

// Read names the current holder of the lease in bucket/key (defaults when
// empty) and the key's revision, for the operator (GET /api/cluster). Like
// the standby's view, it is a read and may lag a moment behind: it never
// decides who leads.
func Read(ctx context.Context, js jetstream.JetStream, bucket, key string) (Holder, uint64, error) {
	if bucket == "" {
		bucket = DefaultBucket
	}
	if key == "" {
		key = DefaultKey
	}
	kv, err := js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return Holder{}, 0, ErrNoHolder
	}
	if err != nil {
		return Holder{}, 0, fmt.Errorf("open the leader lease bucket %s: %w", bucket, err)
	}
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return Holder{}, 0, ErrNoHolder
	}
	if err != nil {
		return Holder{}, 0, fmt.Errorf("read the leader lease: %w", err)
	}
	var h Holder
	if err := json.Unmarshal(e.Value(), &h); err != nil {
		return Holder{}, 0, fmt.Errorf("read the leader lease: %w", err)
	}
	return h, e.Revision(), nil
}
