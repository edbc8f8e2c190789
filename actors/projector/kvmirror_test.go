package projector

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"kanade-backend/actors/projector/mirror"
	"kanade-backend/messages"
	"kanade-backend/storage/broker/brokertest"
)

const jobJSON = `{"id":"%s","version":"%s","description":null,"execute":{"shell":"cmd","script":"ver","timeout":"30s"},"require_approval":false,"inventory":null}`

func TestKVMirrors(t *testing.T) {
	b := brokertest.Start(t)
	ctx := context.Background()
	jobs, groups, schedules := b.KV(t, messages.BucketJobs), b.KV(t, messages.BucketAgentGroups), b.KV(t, messages.BucketSchedules)
	put := func(kv interface {
		Put(context.Context, string, []byte) (uint64, error)
	}, key, value string) uint64 {
		t.Helper()
		rev, err := kv.Put(ctx, key, []byte(value))
		if err != nil {
			t.Fatal(err)
		}
		return rev
	}
	// Before start: values the snapshot must bring in.
	put(jobs, "j1", fmt.Sprintf(jobJSON, "j1", "1"))
	put(jobs, "gone", fmt.Sprintf(jobJSON, "gone", "1"))
	if err := jobs.Delete(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	put(jobs, "bad", `{"id":"bad","target":{"all":true}}`)
	put(groups, "pc-1", `{"groups":["b","a"]}`)
	put(groups, "pc-2", `["legacy"]`)

	h := newHarness(t, harnessOpts{broker: b})
	// Rows the bucket no longer explains: one stale (its key vanished
	// without a marker while the backend was away), one newer than the
	// snapshot (an API write racing the start).
	err := h.store.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		if err := mirror.Job(ctx, tx, "stale", []byte(fmt.Sprintf(jobJSON, "stale", "1")), 1, t0); err != nil {
			return err
		}
		if err := mirror.Job(ctx, tx, "fresh", []byte(fmt.Sprintf(jobJSON, "fresh", "1")), 1_000_000, t0); err != nil {
			return err
		}
		return mirror.Groups(ctx, tx, "pc-stale", []string{"x"}, 1, t0)
	})
	if err != nil {
		t.Fatal(err)
	}
	h.start() // returns once every mirror applied its snapshot
	if n := h.count("jobs"); n != 2 || h.count("jobs", "id IN ('j1', 'fresh')") != 2 {
		t.Fatalf("jobs after the snapshot: %d rows", n)
	}
	if n := h.count("agent_group_members"); n != 3 || h.count("agent_group_members", "pc_id = 'pc-2'", "group_name = 'legacy'") != 1 {
		t.Fatalf("memberships after the snapshot: %d", n)
	}
	if h.count("schedules") != 0 {
		t.Fatal("empty bucket mirrored rows")
	}
	h.waitCount("projection_errors", 1, time.Second, "projection = 'mirror-jobs'", "stream = 'KV_jobs'", "subject = '$KV.jobs.bad'")

	// Live updates.
	put(jobs, "j1", fmt.Sprintf(jobJSON, "j1", "2"))
	put(schedules, "s1", `{"id":"s1","cron":"0 * * * * *","job_id":"j1","target":{"all":true},"enabled":false}`)
	put(groups, "pc-1", `{"groups":["c"]}`)
	if err := groups.Delete(ctx, "pc-2"); err != nil {
		t.Fatal(err)
	}
	h.waitCount("jobs", 1, 5*time.Second, "id = 'j1'", "version = '2'")
	h.waitCount("schedules", 1, 5*time.Second, "id = 's1'", "enabled = 0", "job_id = 'j1'")
	h.waitCount("agent_group_members", 1, 5*time.Second)
	h.waitCount("agent_group_members", 1, 5*time.Second, "pc_id = 'pc-1'", "group_name = 'c'")
	if err := jobs.Purge(ctx, "j1"); err != nil {
		t.Fatal(err)
	}
	if err := schedules.Delete(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	h.waitCount("jobs", 0, 5*time.Second, "id = 'j1'")
	h.waitCount("schedules", 0, 5*time.Second)
}
