package app

import (
	"net/http"

	"kanade-backend/http/auth"
	"kanade-backend/http/httpx"
	"kanade-backend/storage/broker"
)

// natsRoutes are the API routes that cannot do their work without NATS:
// they write or read KV buckets, publish Commands or ask agents. While the
// backend's connection is down they answer 503 "nats unavailable" at once
// instead of waiting for a timeout. Routes served from the database (the
// lists, results, audit, executions) are not here and keep answering; the
// changes that only write the database (operators, credentials) are not
// either: they take effect, and their audit event is logged as lost.
var natsRoutes = map[string]bool{
	"POST /api/jobs":                              true,
	"DELETE /api/jobs/{id}":                       true,
	"POST /api/scripts/{job_id}/revoke":           true,
	"POST /api/scripts/{job_id}/unrevoke":         true,
	"POST /api/exec/{job_id}":                     true,
	"POST /api/jobs/{exec_id}/kill":               true,
	"POST /api/executions/{exec_id}/kill":         true,
	"POST /api/executions/{exec_id}/cancel":       true,
	"POST /api/executions/{exec_id}/rerun-failed": true,
	"POST /api/schedules":                         true,
	"DELETE /api/schedules/{id}":                  true,
	"POST /api/schedules/{id}/run":                true,
	"POST /api/run":                               true,
	"POST /api/agents/{pc_id}/ping":               true,
	"GET /api/agents/{pc_id}/logs":                true,
	"PUT /api/agents/{pc_id}/groups":              true,
	"POST /api/agents/{pc_id}/groups":             true,
	"DELETE /api/agents/{pc_id}/groups/{group}":   true,
	"GET /api/config":                             true,
	"PUT /api/config":                             true,
	"GET /api/groups/{name}/config":               true,
	"PUT /api/groups/{name}/config":               true,
	"DELETE /api/groups/{name}/config":            true,
	"GET /api/pcs/{pc_id}/config":                 true,
	"PUT /api/pcs/{pc_id}/config":                 true,
	"DELETE /api/pcs/{pc_id}/config":              true,
	"GET /api/agents/{pc_id}/effective_config":    true,
	"GET /api/agents/releases":                    true,
	"POST /api/agents/publish":                    true,
	"DELETE /api/agents/releases/{version}":       true,
	"POST /api/agents/rollout":                    true,
}

// guard wraps each API route: the role check first (a viewer learns
// nothing about NATS from a route it may not use), then, for the routes
// that need NATS, the connection check.
func (a *App) guard(pattern string, h http.Handler) http.Handler {
	if natsRoutes[pattern] {
		next := h
		h = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if !a.Conn.IsConnected() {
				httpx.WriteError(w, req, broker.ErrNATSDown)
				return
			}
			next.ServeHTTP(w, req)
		})
	}
	return auth.Guard(pattern, h)
}
