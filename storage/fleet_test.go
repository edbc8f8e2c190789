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
