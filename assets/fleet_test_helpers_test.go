package assets_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"kanade-backend/cmd/kanade-backend/app/apptest"
	"kanade-backend/cmd/kanade-fleet/sim"
	"kanade-backend/messages"
)

// startFleet runs n simulated agents (the fleet simulator, which speaks the
// wire contract exactly) against the backend's NATS with heartbeats every
// second and short run times, after writing each agent's groups to KV the
// way an operator would.
func startFleet(t *testing.T, b *apptest.Backend, n int, groupsOf func(i int) []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := b.JS.KeyValue(ctx, messages.BucketAgentGroups)
	if err != nil {
		t.Fatalf("agent_groups bucket: %v", err)
	}
	for i, id := range sim.PCIDs("SIM-", n) {
		v, _ := json.Marshal(messages.AgentGroups{Groups: groupsOf(i + 1)})
		if _, err := kv.Put(ctx, id, v); err != nil {
			t.Fatalf("put groups of %s: %v", id, err)
		}
	}
	f, err := sim.Start(ctx, sim.Config{
		NATSURL: b.NATSURL, Agents: n, Prefix: "SIM-", Heartbeat: time.Second, Seed: 1,
		RunTime: sim.Range{Min: 50 * time.Millisecond, Max: 150 * time.Millisecond},
	})
	if err != nil {
		t.Fatalf("start fleet: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := f.Stop(ctx); err != nil {
			t.Errorf("stop fleet: %v", err)
		}
	})
}
