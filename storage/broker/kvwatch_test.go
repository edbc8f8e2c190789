package broker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"kanade-backend/internal/testsupport"
	"kanade-backend/storage/broker"
	"kanade-backend/storage/broker/brokertest"
)

// A reader that stops early, while the snapshot still fills the watch's
// channel (more keys than its buffer), must not leave FollowWatch or the
// library's delivery callback stuck: FollowWatch returns and the channel
// ends up closed.
func TestFollowWatchEndsAWatchStoppedMidSnapshot(t *testing.T) {
	ctx, kv := followBucket(t)
	const keys = 600 // above the library's channel buffer (256)
	for i := range keys {
		if _, err := kv.Put(ctx, fmt.Sprintf("k%03d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	kw, err := kv.WatchAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var first jetstream.KeyValueEntry
	// A FollowWatch that hangs fails the test by its timeout.
	broker.FollowWatch(kw, func(updates <-chan jetstream.KeyValueEntry) {
		first = <-updates
		// Stop only once the callback has filled the channel again,
		// so that it is blocked on it.
		testsupport.Eventually(t, 10*time.Second, func() error {
			if len(updates) < cap(updates) {
				return fmt.Errorf("%d of %d buffered", len(updates), cap(updates))
			}
			return nil
		})
	})
	if first == nil || first.Key() != "k000" {
		t.Fatalf("reader got %v, want the first key", first)
	}
	if _, open := <-kw.Updates(); open {
		t.Fatal("the watch's channel is still open after FollowWatch")
	}
}

// The reader sees the snapshot, its end (nil) and live updates.
func TestFollowWatchHandsSnapshotAndUpdates(t *testing.T) {
	ctx, kv := followBucket(t)
	if _, err := kv.Put(ctx, "a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	kw, err := kv.WatchAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	broker.FollowWatch(kw, func(updates <-chan jetstream.KeyValueEntry) {
		for len(got) < 3 {
			select {
			case e := <-updates:
				if e == nil {
					got = append(got, "end")
					if _, err := kv.Put(ctx, "b", []byte("2")); err != nil {
						t.Error(err)
						return
					}
					continue
				}
				got = append(got, e.Key()+"="+string(e.Value()))
			case <-ctx.Done():
				return
			}
		}
	})
	if fmt.Sprint(got) != "[a=1 end b=2]" {
		t.Fatalf("reader saw %v", got)
	}
}

// followBucket is a new KV bucket on a test server, and a context that
// bounds the test.
func followBucket(t *testing.T) (context.Context, jetstream.KeyValue) {
	t.Helper()
	b := brokertest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	kv, err := b.JS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "follow"})
	if err != nil {
		t.Fatal(err)
	}
	return ctx, kv
}
