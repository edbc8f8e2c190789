package assets_test

import (
	"testing"
	"time"

	"kanade-backend/internal/apptest"
	"kanade-backend/internal/sim"
)

// startFleet runs n simulated agents (the fleet simulator, which speaks the
// wire contract exactly) against the backend's NATS with heartbeats every
// second and short run times, after writing each agent's groups to KV the
// way an operator would.
func startFleet(t *testing.T, b *apptest.Backend, n int, groupsOf func(i int) []string) {
	t.Helper()
	groups := map[string][]string{}
	for i, id := range sim.PCIDs("SIM-", n) {
		groups[id] = groupsOf(i + 1)
	}
	b.SetGroups(t, groups)
	b.StartFleet(t, sim.Config{
		Agents: n, Prefix: "SIM-", Heartbeat: time.Second, Seed: 1,
		RunTime: sim.Range{Min: 50 * time.Millisecond, Max: 150 * time.Millisecond},
	})
}
