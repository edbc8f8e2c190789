package app

import (
	"kanade-backend/http/server"
	"kanade-backend/http/system"
)

// routes registers every API feature on the router; each feature package
// declares the dependencies it needs in its Deps struct.
func (a *App) routes(r *server.Router) {
	r.Public("GET /metrics", a.Metrics.Handler())
	system.Register(r, system.Deps{JS: a.JS})
}
