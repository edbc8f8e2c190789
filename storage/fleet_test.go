package storage_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/storagetest"
)

func TestResolveTargetPCs(t *testing.T) {
	storagetest.ForEachDialect(t, testResolveTargetPCs)
}

func testResolveTargetPCs(t *testing.T, s *storage.Store) {
	ctx := context.Background()
	now := time.Date(2026, 5, 20, 12, 0, 0, 0, time.UTC)
	agents := map[string]time.Duration{"a": 10 * time.Second, "b": 119 * time.Second, "c": 121 * time.Second, "d": time.Second}
	for pc, age := range agents {
		row := &storage.Agent{PcID: pc, AgentVersion: "1", LastHeartbeat: storage.T(now.Add(-age)), UpdatedAt: storage.T(now)}
		if _, err := s.W.NewInsert().Model(row).Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	members := []storage.GroupMember{{PcID: "a", GroupName: "canary"}, {PcID: "c", GroupName: "canary"},
		{PcID: "d", GroupName: "wave1"}, {PcID: "ghost", GroupName: "canary"}}
	if _, err := s.W.NewInsert().Model(&members).Exec(ctx); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		target messages.Target
		want   string
	}{
		{messages.Target{All: true}, "a,b,d"},                            // c is stale
		{messages.Target{Groups: []string{"canary"}}, "a"},               // c stale, ghost unknown
		{messages.Target{Groups: []string{"canary", "wave1"}}, "a,d"},    // union, sorted
		{messages.Target{Pcs: []string{"z", "c"}}, "z,c"},                // verbatim, no liveness filter
		{messages.Target{All: true, Pcs: []string{"c", "a"}}, "a,b,d,c"}, // dedup keeps first
		{messages.Target{}, ""},
	}
	for _, c := range cases {
		got, err := storage.ResolveTargetPCs(ctx, s.R, c.target, now)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Join(got, ",") != c.want {
			t.Errorf("%+v: got %v want %s", c.target, got, c.want)
		}
	}
}

// Rows written before pc_ids were validated at the edge (or by hand) must
// not fail a resolution: they are skipped and counted, the real PCs are
// returned.
func TestResolveTargetPCsSkipsInvalidIDs(t *testing.T) {
	ctx := context.Background()
	s := storagetest.Open(t)
	now := time.Date(2026, 5, 20, 12, 0, 0, 0, time.UTC)
	bad := []string{"*", ">", "a.b", " ", "pc 1"}
	for _, pc := range append([]string{"pc-1", "pc-2"}, bad...) {
		row := &storage.Agent{PcID: pc, AgentVersion: "1", LastHeartbeat: storage.T(now), UpdatedAt: storage.T(now)}
		if _, err := s.W.NewInsert().Model(row).Exec(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := s.W.NewInsert().Model(&storage.GroupMember{PcID: pc, GroupName: "g"}).Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	before := storage.InvalidTargets()
	for _, target := range []messages.Target{{All: true}, {Groups: []string{"g"}}, {Pcs: append([]string{"pc-1", "pc-2"}, bad...)}} {
		got, err := storage.ResolveTargetPCs(ctx, s.R, target, now)
		if err != nil {
			t.Fatalf("%+v: %v", target, err)
		}
		if strings.Join(got, ",") != "pc-1,pc-2" {
			t.Errorf("%+v: got %q, want the two valid PCs", target, got)
		}
	}
	if n := storage.InvalidTargets() - before; n != uint64(3*len(bad)) {
		t.Fatalf("InvalidTargets grew by %d, want %d", n, 3*len(bad))
	}
}
