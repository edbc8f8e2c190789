package projector

import (
	"context"
	"fmt"
	"testing"

	"kanade-backend/actors/projector/mirror"
	"kanade-backend/internal/testsupport"
	"kanade-backend/messages"
	"kanade-backend/storage/broker/brokertest"
)

// Each committed batch of a KV mirror is announced with KVMirrored (the
// scheduler's fleet view follows jobs and agent_groups through it): puts
// with their values and revisions, deletes as deletions, and the keys the
// snapshot's reconcile dropped as deletions newer than the snapshot.
func TestKVMirroredAnnouncesEachCommittedBatch(t *testing.T) {
	b := brokertest.Start(t)
	ctx := context.Background()
	jobs, groups := b.KV(t, messages.BucketJobs), b.KV(t, messages.BucketAgentGroups)
	j1 := fmt.Sprintf(jobJSON, "j1", "1")
	rev1, err := jobs.Put(ctx, "j1", []byte(j1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := groups.Put(ctx, "pc-0", []byte(`{"groups":["a"]}`)); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, harnessOpts{broker: b})
	if err := mirror.Groups(ctx, h.store.W, "pc-stale", []string{"x"}, 1, t0); err != nil {
		t.Fatal(err)
	}
	h.start()

	find := func(bucket, key string, deleted bool) (messages.KVMirroredEntry, bool) {
		for _, ev := range eventsOf[*messages.KVMirrored](h) {
			if ev.Bucket != bucket {
				continue
			}
			for _, e := range ev.Entries {
				if e.Key == key && e.Deleted == deleted {
					return e, true
				}
			}
		}
		return messages.KVMirroredEntry{}, false
	}
	wait := func(bucket, key string, deleted bool) messages.KVMirroredEntry {
		t.Helper()
		var got messages.KVMirroredEntry
		testsupport.Eventually(t, waitFor, func() error {
			var ok bool
			if got, ok = find(bucket, key, deleted); !ok {
				return fmt.Errorf("no KVMirrored %s/%s (deleted %v)", bucket, key, deleted)
			}
			return nil
		})
		return got
	}
	if e := wait(messages.BucketJobs, "j1", false); e.Rev != rev1 || string(e.Value) != j1 {
		t.Fatalf("snapshot entry %+v", e)
	}
	if e := wait(messages.BucketAgentGroups, "pc-stale", true); e.Rev < 2 {
		t.Fatalf("dropped stale row announced at revision %d, want one newer than the snapshot", e.Rev)
	}
	if h.count("agent_group_members", "pc_id = 'pc-stale'") != 0 {
		t.Fatal("stale membership kept")
	}

	rev2, err := groups.Put(ctx, "pc-1", []byte(`{"groups":["a"]}`))
	if err != nil {
		t.Fatal(err)
	}
	if e := wait(messages.BucketAgentGroups, "pc-1", false); e.Rev != rev2 || string(e.Value) != `{"groups":["a"]}` {
		t.Fatalf("live entry %+v", e)
	}
	// The event follows the commit: the row is there when it is seen.
	if h.count("agent_group_members", "pc_id = 'pc-1'", "group_name = 'a'") != 1 {
		t.Fatal("KVMirrored published before its batch was committed")
	}
	if err := jobs.Delete(ctx, "j1"); err != nil {
		t.Fatal(err)
	}
	if e := wait(messages.BucketJobs, "j1", true); e.Rev <= rev1 || e.Value != nil {
		t.Fatalf("delete entry %+v", e)
	}
}
