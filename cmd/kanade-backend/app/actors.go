package app

import (
	"context"
	"fmt"

	"github.com/asynkron/protoactor-go/actor"

	execengine "kanade-backend/actors/exec"
	"kanade-backend/actors/live"
	"kanade-backend/actors/projector"
	"kanade-backend/storage/execrecord"
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
	proj, err := projector.Start(ctx, a.Actors, projector.Deps{
		Store: a.Store, Conn: a.Conn, JS: a.JS, Clock: a.Clock, Metrics: a.Metrics, Logger: a.Logger,
		Status: a.Guards.Projection,
	}, projector.Config{Rebuild: a.Config.Rebuild, Retention: a.Config.Retention.projector()})
	if err != nil {
		return pids, fmt.Errorf("start projectors: %w", err)
	}
	pids = append(pids, proj)

	execPID, err := execengine.Spawn(a.Actors.Root, execengine.Deps{
		Store: a.Store, NATS: a.Conn, KV: a.JS, Audit: a.Audit, Records: &execrecord.Publisher{JS: a.JS}, Clock: a.Clock,
		Logger: a.Logger, Metrics: execengine.NewMetrics(a.Metrics),
	})
	if err != nil {
		return pids, fmt.Errorf("start exec engine: %w", err)
	}
	a.Exec = execPID
	pids = append(pids, execPID)

	sched, err := a.startScheduler()
	if err != nil {
		return pids, err
	}
	pids = append(pids, sched)

	hub, err := live.Start(a.Actors, live.Options{Clock: a.Clock, Logger: a.Logger, Metrics: a.Metrics})
	if err != nil {
		return pids, fmt.Errorf("start live events hub: %w", err)
	}
	a.Live = hub
	pids = append(pids, hub.PID())
	return pids, nil
}

// projector converts the [retention] section for the projectors.
func (r RetentionConfig) projector() projector.Retention {
	return projector.Retention{
		ResultsDays: r.ResultsDays, AuditDays: r.AuditDays, ProjectionErrorsDays: r.ProjectionErrorsDays,
		SweepInterval: r.SweepInterval.Duration,
	}
}
