package app

import (
	"context"

	"github.com/asynkron/protoactor-go/actor"

	"kanade-backend/actors/live"
)

// startActors spawns the top-level actors in dependency order and returns
// their PIDs in that order (they are stopped in reverse). Each family gets
// only the narrow dependencies it declares: the store, the NATS/JetStream
// handles, the clock, the audit publisher, the metrics registry, and the
// PIDs of families started before it.
func (a *App) startActors(ctx context.Context) ([]*actor.PID, error) {
	var pids []*actor.PID
	// Start order (each later family may depend on earlier ones):
	//   1. projectors (heartbeat, results, audit, KV mirrors, retention)
	//   2. exec engine
	//   3. schedules supervisor
	//   4. live events hub
	hub, err := live.Start(a.Actors, live.Options{Clock: a.Clock, Logger: a.Logger, Metrics: a.Metrics})
	if err != nil {
		return pids, err
	}
	a.Live = hub
	pids = append(pids, hub.PID())
	return pids, nil
}
