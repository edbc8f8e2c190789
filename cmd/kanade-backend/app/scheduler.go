package app

import (
	"context"
	"fmt"

	"github.com/asynkron/protoactor-go/actor"

	"kanade-backend/actors/schedule"
)

// startScheduler spawns the schedule supervisor after the exec engine, the
// PID it fires through. It reads KV and the SQL read model through one
// Backend and publishes its audit events with the app's publisher. It
// reads nothing, and so fires nothing, before this backend holds the
// leader lease and raised the leader fence (gatedSource), and every fire
// carries the lease's token (fireToken), which the exec engine checks
// against the fence where it first writes. ctx is the actors' base context, cancelled
// when their stop begins.
func (a *App) startScheduler(ctx context.Context) (*actor.PID, error) {
	b := schedule.NewBackend(a.Store, a.JS)
	if a.Exec == nil {
		a.Logger.Warn("no exec engine: schedule ticks will be recorded as failed")
	}
	pid, err := schedule.Start(a.Actors, schedule.Config{
		Clock: a.Clock, Source: gatedSource{Source: b, done: a.lead.fenced}, Reader: b, Writer: b, Audit: a.Audit, Exec: a.Exec,
		Metrics: schedule.NewMetrics(a.Metrics), Logger: a.Logger, OnTick: a.ScheduleTickHook,
		DecommissionAfter: a.Config.Fleet.DecommissionAfter.Duration, Context: ctx, Fence: a.fireToken,
	})
	if err != nil {
		return nil, fmt.Errorf("start scheduler: %w", err)
	}
	a.Scheduler = &schedule.Client{Root: a.Actors.Root, PID: pid}
	return pid, nil
}
