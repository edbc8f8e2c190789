package app

import (
	"context"
	"fmt"
	"time"

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
// PIDs of families started before it. base ends when the actors' stop
// begins; their I/O derives from it.
func (a *App) startActors(ctx, base context.Context) ([]*actor.PID, error) {
	var pids []*actor.PID
	// Start order (each later family may depend on earlier ones):
	//   1. projectors (heartbeat, results, audit, KV mirrors, retention)
	//   2. exec engine
	//   3. schedules supervisor
	//   4. live events hub
	// The projectors need the streams and must run on one backend only:
	// they start now if this backend holds the leader lease (which it
	// campaigns for once the bootstrap created the streams), else as soon
	// as it does (leader.go).
	if a.lead.isHeld() {
		proj, err := a.startProjectors(ctx, base)
		if err != nil {
			return pids, err
		}
		a.setProjectors(proj, false)
		pids = append(pids, proj)
	} else {
		a.lead.whenHeld(func() {
			// Start does not wait long for them here: nothing waits on
			// the projectors any more, and stop must not wait for Start.
			sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			proj, err := a.startProjectors(sctx, base)
			if err != nil {
				a.fatal(err)
				return
			}
			a.setProjectors(proj, true)
			a.Logger.Info("projectors started once the leader lease was held")
		})
	}

	execPID, err := execengine.Spawn(a.Actors.Root, execengine.Deps{
		Store: a.Store, NATS: a.Conn, KV: a.JS, Audit: a.Audit, Records: &execrecord.Publisher{JS: a.JS}, Clock: a.Clock,
		Logger: a.Logger, Metrics: execengine.NewMetrics(a.Metrics), Context: base,
		// Every replica's engine fires API execs; the rollout-wave timers
		// are the leader's.
		Leads: func() bool { return a.fenceToken() != 0 },
	})
	if err != nil {
		return pids, fmt.Errorf("start exec engine: %w", err)
	}
	a.Exec = execPID
	pids = append(pids, execPID)

	sched, err := a.startScheduler(base)
	if err != nil {
		return pids, err
	}
	pids = append(pids, sched)

	hub, err := live.Start(a.Actors, live.Options{JS: a.JS, Clock: a.Clock, Logger: a.Logger, Metrics: a.Metrics})
	if err != nil {
		return pids, fmt.Errorf("start live events hub: %w", err)
	}
	a.Live = hub
	pids = append(pids, hub.PID())
	return pids, nil
}

func (a *App) startProjectors(ctx, base context.Context) (*actor.PID, error) {
	proj, err := projector.Start(ctx, a.Actors, projector.Deps{
		Store: a.Store, Conn: a.Conn, JS: a.JS, Clock: a.Clock, Metrics: a.Metrics, Logger: a.Logger,
		Status: a.Guards.Projection, Context: base,
	}, projector.Config{Rebuild: a.Config.Rebuild, Retention: a.Config.Retention.projector()})
	if err != nil {
		return nil, fmt.Errorf("start projectors: %w", err)
	}
	return proj, nil
}

// setProjectors records that the projectors run; late ones are stopped by
// the actors' stop after the others.
func (a *App) setProjectors(pid *actor.PID, late bool) {
	a.lateMu.Lock()
	defer a.lateMu.Unlock()
	a.lateDone = true
	if late {
		a.late = pid
	}
}

func (a *App) lateProjectors() *actor.PID {
	a.lateMu.Lock()
	defer a.lateMu.Unlock()
	return a.late
}

func (a *App) projectorsStarted() bool {
	a.lateMu.Lock()
	defer a.lateMu.Unlock()
	return a.lateDone
}

// projector converts the [retention] section for the projectors.
func (r RetentionConfig) projector() projector.Retention {
	return projector.Retention{
		ResultsDays: r.ResultsDays, AuditDays: r.AuditDays, ProjectionErrorsDays: r.ProjectionErrorsDays,
		SweepInterval: r.SweepInterval.Duration,
	}
}
