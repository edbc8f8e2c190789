package app

import (
	"kanade-backend/assets"
	"kanade-backend/http/schedules"
	"kanade-backend/http/server"
	"kanade-backend/http/system"
)

// routes registers every API feature on the router; each feature package
// declares the dependencies it needs in its Deps struct.
func (a *App) routes(r *server.Router) {
	r.Public("GET /metrics", a.Metrics.Handler())
	system.Register(r, system.Deps{JS: a.JS})
	schedules.Register(r, schedules.Deps{JS: a.JS, Audit: a.Audit, Scheduler: a.Scheduler, Clock: a.Clock, Logger: a.Logger})
	// The dashboard answers every other GET outside /api (its client-side
	// routes); more specific public patterns above take precedence.
	r.Public("GET /", assets.Handler())
}
