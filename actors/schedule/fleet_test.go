package schedule

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"kanade-backend/actors/projector/mirror"
	"kanade-backend/messages"
	"kanade-backend/storage"
)

// The fleet view loaded from the store resolves every kind of target to
// exactly what storage.ResolveTargetPCs reads from the store itself: the
// same PCs in the same order.
func TestFleetViewResolvesAsTheStore(t *testing.T) {
	onBothDialects(t, testFleetViewResolvesAsTheStore)
}

func testFleetViewResolvesAsTheStore(t *testing.T) {
	st := openStore(t)
	ctx := context.Background()
	now := t0
	var agents []storage.Agent
	for i := range 60 {
		seen := now.Add(-time.Duration(i%4) * time.Minute) // a quarter 3 min silent, a quarter 2 min
		agents = append(agents, storage.Agent{PcID: fmt.Sprintf("pc-%02d", (i*37)%60), AgentVersion: "1",
			LastHeartbeat: storage.T(seen), UpdatedAt: storage.T(seen)})
	}
	if err := storage.InsertChunked(ctx, st.W, agents, false); err != nil {
		t.Fatal(err)
	}
	for i := range 60 {
		var groups []string
		if i%2 == 0 {
			groups = append(groups, "even")
		}
		if i%3 == 0 {
			groups = append(groups, "three")
		}
		if err := mirror.Groups(ctx, st.W, fmt.Sprintf("pc-%02d", i), groups, uint64(i+1), now); err != nil {
			t.Fatal(err)
		}
	}
	if err := mirror.Groups(ctx, st.W, "never-seen", []string{"even"}, 99, now); err != nil {
		t.Fatal(err)
	}
	view := newFleetView(nil)
	snap, err := NewBackend(st, nil).LoadFleet(ctx)
	if err != nil {
		t.Fatal(err)
	}
	view.load(snap)
	for _, target := range []messages.Target{
		{All: true},
		{Groups: []string{"even"}},
		{Groups: []string{"three", "even"}},
		{Groups: []string{"nobody"}},
		{Pcs: []string{"pc-59", "offline", "pc-01", "pc-59"}},
		{All: true, Groups: []string{"three"}, Pcs: []string{"pc-03", "zz"}},
		{Groups: []string{"even"}, Pcs: []string{"never-seen"}},
	} {
		want, err := storage.ResolveTargetPCs(ctx, st.R, target, now)
		if err != nil {
			t.Fatal(err)
		}
		if got := view.resolve(target, now); !slices.Equal(got, want) {
			t.Errorf("%+v:\n view  %v\n store %v", target, got, want)
		}
	}
}

// The view keeps the newest fact whatever order the load and the events
// come in: heartbeats never go back in time, group values and jobs apply
// by KV revision, a deleted job stays deleted against an older value.
func TestFleetViewKeepsTheNewestFact(t *testing.T) {
	v := newFleetView(nil)
	job := func(version string) []byte { return fmt.Appendf(nil, `{"id":"j","version":%q}`, version) }
	v.apply(&messages.KVMirrored{Bucket: messages.BucketJobs, Entries: []messages.KVMirroredEntry{{Key: "j", Rev: 5, Value: job("5")}}})
	v.apply(&messages.AgentsSeen{Agents: []messages.AgentSeen{{PcID: "a", At: t0}}})
	v.apply(&messages.KVMirrored{Bucket: messages.BucketAgentGroups, Entries: []messages.KVMirroredEntry{{Key: "a", Rev: 7, Value: []byte(`{"groups":["new"]}`)}}})
	// A load read before those events arrives after them.
	v.load(&FleetSnapshot{
		Jobs:   []SnapshotJob{{ID: "j", Manifest: job("3"), Rev: 3}, {ID: "k", Manifest: job("1"), Rev: 1}},
		Agents: map[string]time.Time{"a": t0.Add(-time.Hour), "b": t0},
		Groups: map[string]SnapshotGroups{"a": {Groups: []string{"old"}, Rev: 6}, "b": {Groups: []string{"old"}, Rev: 2}},
	})
	if m, err := v.job("j"); err != nil || m.Version != "5" {
		t.Fatalf("job j = %+v %v, want revision 5", m, err)
	}
	if got := v.resolve(messages.Target{Groups: []string{"new"}}, t0); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("group new = %v", got)
	}
	if got := v.resolve(messages.Target{Groups: []string{"old"}}, t0); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("group old = %v", got)
	}
	if got := v.resolve(messages.Target{All: true}, t0.Add(time.Minute)); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("alive = %v: the older heartbeat of the load won", got)
	}
	// Deletes: a job's delete marker, then a replayed older value.
	v.apply(&messages.KVMirrored{Bucket: messages.BucketJobs, Entries: []messages.KVMirroredEntry{{Key: "j", Rev: 8, Deleted: true}}})
	v.apply(&messages.KVMirrored{Bucket: messages.BucketJobs, Entries: []messages.KVMirroredEntry{{Key: "j", Rev: 6, Value: job("6")}}})
	if _, err := v.job("j"); !errors.Is(err, messages.ErrNotFound) {
		t.Fatalf("deleted job: %v", err)
	}
	v.apply(&messages.KVMirrored{Bucket: messages.BucketAgentGroups, Entries: []messages.KVMirroredEntry{{Key: "a", Rev: 9, Deleted: true}}})
	if got := v.resolve(messages.Target{Groups: []string{"new"}}, t0); len(got) != 0 {
		t.Fatalf("group of a deleted key = %v", got)
	}
	v.apply(&messages.KVMirrored{Bucket: messages.BucketJobs, Entries: []messages.KVMirroredEntry{{Key: "bad", Rev: 1, Value: []byte("not json")}}})
	if _, err := v.job("bad"); !errors.Is(err, messages.ErrInvalid) {
		t.Fatalf("undecodable job: %v", err)
	}
	// Other buckets and events are not the view's.
	if isFleetEvent(&messages.KVMirrored{Bucket: messages.BucketSchedules}) || isFleetEvent(&messages.ResultsProjected{}) {
		t.Fatal("the view follows events that are not its own")
	}
}
