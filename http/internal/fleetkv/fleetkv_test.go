package fleetkv_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"kanade-backend/http/internal/fleetkv"
	"kanade-backend/messages"
	"kanade-backend/storage/broker/brokertest"
)

func TestUpdateGroupsConcurrent(t *testing.T) {
	br := brokertest.Start(t)
	kv := br.KV(t, messages.BucketAgentGroups)
	ctx := context.Background()

	var wg sync.WaitGroup
	var want []string
	for i := range 30 {
		g := fmt.Sprintf("g%02d", i)
		want = append(want, g)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, _, err := fleetkv.UpdateGroups(ctx, kv, "PC-1", func(cur []string) []string { return append(cur, g) }); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	got, rev, err := fleetkv.ReadGroups(ctx, kv, "PC-1")
	if err != nil || !slices.Equal(got, want) || rev == 0 {
		t.Fatalf("got %v rev %d err %v", got, rev, err)
	}

	// An unchanged result writes nothing (no revision bump).
	_, rev2, err := fleetkv.UpdateGroups(ctx, kv, "PC-1", func(cur []string) []string { return append(cur, "g00") })
	if err != nil || rev2 != rev {
		t.Fatalf("no-op update: rev %d → %d, %v", rev, rev2, err)
	}
	// A missing key left empty stays missing.
	groups, rev3, err := fleetkv.UpdateGroups(ctx, kv, "PC-2", func(cur []string) []string { return cur })
	if err != nil || rev3 != 0 || groups == nil || len(groups) != 0 {
		t.Fatalf("no-op on missing key: %v %d %v", groups, rev3, err)
	}
	// Deleted keys are created again with compare-and-set.
	if err := kv.Delete(ctx, "PC-1"); err != nil {
		t.Fatal(err)
	}
	got, _, err = fleetkv.UpdateGroups(ctx, kv, "PC-1", func(cur []string) []string { return append(cur, "b", "a", "b") })
	if err != nil || !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("after delete: %v %v", got, err)
	}
}

func TestUpdateScopeKeepsOtherFields(t *testing.T) {
	br := brokertest.Start(t)
	kv := br.KV(t, messages.BucketAgentConfig)
	ctx := context.Background()
	if _, err := kv.Put(ctx, "groups.lab", []byte(`{"heartbeat_interval":"10s","inventory_interval":"1h"}`)); err != nil {
		t.Fatal(err)
	}
	s, _, err := fleetkv.UpdateScope(ctx, kv, "groups.lab", func(s *messages.ConfigScope) (bool, error) {
		v := "0.22.0"
		s.TargetVersion = &v
		return true, nil
	})
	if err != nil || s.HeartbeatInterval == nil || *s.HeartbeatInterval != "10s" {
		t.Fatalf("scope %+v %v", s, err)
	}
	e, _ := kv.Get(ctx, "groups.lab")
	if string(e.Value()) != `{"target_version":"0.22.0","heartbeat_interval":"10s"}` {
		t.Fatalf("stored %s", e.Value())
	}

	all, err := fleetkv.All(ctx, kv)
	if err != nil || len(all) != 1 {
		t.Fatalf("All: %v %v", all, err)
	}
	empty := br.KV(t, messages.BucketJobs)
	if all, err := fleetkv.All(ctx, empty); err != nil || len(all) != 0 {
		t.Fatalf("All on an empty bucket: %v %v", all, err)
	}
}

func TestScopeLabel(t *testing.T) {
	for key, want := range map[string]string{
		"global": "global", "groups.canary": "group:canary", "pcs.PC-1": "pc:PC-1", "other": "other",
	} {
		if got := fleetkv.ScopeLabel(key); got != want {
			t.Errorf("ScopeLabel(%q) = %q, want %q", key, got, want)
		}
	}
}

func TestDecodeGroupsToleratesBareArray(t *testing.T) {
	got, err := fleetkv.DecodeGroups([]byte(`["b","a","a"]`))
	if err != nil || !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("%v %v", got, err)
	}
}
