package auth

import "maps"

// routeRoles is the one table of which role each /api route requires, keyed
// by the route's ServeMux pattern exactly as its package registers it.
// Adding a route means adding its line here: the server refuses to start
// with a route that has no line (Guard), and the OpenAPI document states
// the same role per operation (x-kanade-role, checked by http/openapi's
// tests).
//
// Reads, including the live event stream, are for every role; changes to
// what the fleet runs are for operators; changes to what the fleet is
// (agent binaries and rollouts, credentials, who may use the API) and
// script revocation, the fleet-wide emergency brake, are for admins.
var routeRoles = map[string]Role{
	// Reads.
	"GET /api/openapi.json":                    RoleViewer,
	"GET /api/me":                              RoleViewer,
	"GET /api/events":                          RoleViewer,
	"GET /api/jetstream/status":                RoleViewer,
	"GET /api/cluster":                         RoleViewer,
	"GET /api/health/fleet":                    RoleViewer,
	"GET /api/agents":                          RoleViewer,
	"GET /api/agents/{pc_id}":                  RoleViewer,
	"GET /api/agents/{pc_id}/effective_config": RoleViewer,
	"GET /api/agents/{pc_id}/groups":           RoleViewer,
	"GET /api/agents/{pc_id}/logs":             RoleViewer,
	"GET /api/config":                          RoleViewer,
	"GET /api/groups/{name}/config":            RoleViewer,
	"GET /api/pcs/{pc_id}/config":              RoleViewer,
	"GET /api/results":                         RoleViewer,
	"GET /api/results/{request_id}":            RoleViewer,
	"GET /api/audit":                           RoleViewer,
	"GET /api/jobs":                            RoleViewer,
	"GET /api/executions":                      RoleViewer,
	"GET /api/executions/{exec_id}":            RoleViewer,
	"GET /api/schedules":                       RoleViewer,
	"GET /api/schedules/preview":               RoleViewer,
	"GET /api/schedules/{id}":                  RoleViewer,
	"GET /api/targets/preview":                 RoleViewer,
	"GET /api/inventory/jobs":                  RoleViewer,
	"GET /api/inventory/by-job/{manifest_id}":  RoleViewer,
	"GET /api/inventory/{pc_id}":               RoleViewer,
	"GET /api/agents/releases":                 RoleViewer,
	"GET /api/operators":                       RoleViewer,
	// Jobs and what runs them.
	"POST /api/jobs":                              RoleOperator,
	"DELETE /api/jobs/{id}":                       RoleOperator,
	"POST /api/exec/{job_id}":                     RoleOperator,
	"POST /api/jobs/{exec_id}/kill":               RoleOperator,
	"POST /api/executions/{exec_id}/kill":         RoleOperator,
	"POST /api/executions/{exec_id}/cancel":       RoleOperator,
	"POST /api/executions/{exec_id}/rerun-failed": RoleOperator,
	"POST /api/executions/{exec_id}/waves/resume": RoleOperator,
	"POST /api/executions/{exec_id}/waves/abort":  RoleOperator,
	"POST /api/schedules":                         RoleOperator,
	"DELETE /api/schedules/{id}":                  RoleOperator,
	"POST /api/schedules/{id}/run":                RoleOperator,
	"POST /api/run":                               RoleOperator,
	"POST /api/agents/{pc_id}/ping":               RoleOperator,
	// Groups and config scopes.
	"PUT /api/agents/{pc_id}/groups":            RoleOperator,
	"POST /api/agents/{pc_id}/groups":           RoleOperator,
	"DELETE /api/agents/{pc_id}/groups/{group}": RoleOperator,
	"DELETE /api/agents/{pc_id}":                RoleOperator,
	"PUT /api/config":                           RoleOperator,
	"PUT /api/groups/{name}/config":             RoleOperator,
	"DELETE /api/groups/{name}/config":          RoleOperator,
	"PUT /api/pcs/{pc_id}/config":               RoleOperator,
	"DELETE /api/pcs/{pc_id}/config":            RoleOperator,
	// Script revocation.
	"POST /api/scripts/{job_id}/revoke":   RoleAdmin,
	"POST /api/scripts/{job_id}/unrevoke": RoleAdmin,
	// Agent releases and rollout.
	"POST /api/agents/publish":              RoleAdmin,
	"DELETE /api/agents/releases/{version}": RoleAdmin,
	"POST /api/agents/rollout":              RoleAdmin,
	// Operators.
	"POST /api/operators":              RoleAdmin,
	"PATCH /api/operators/{name}":      RoleAdmin,
	"DELETE /api/operators/{name}":     RoleAdmin,
	"POST /api/operators/{name}/token": RoleAdmin,
	// Agent credentials and enrollment tokens (reading them too: the list
	// says who can connect as which PC).
	"GET /api/agents/{pc_id}/credentials":         RoleAdmin,
	"POST /api/agents/{pc_id}/credentials":        RoleAdmin,
	"DELETE /api/agents/{pc_id}/credentials/{id}": RoleAdmin,
	"POST /api/agents/credentials":                RoleAdmin,
	"GET /api/enrollments":                        RoleAdmin,
	"POST /api/enrollments":                       RoleAdmin,
	"DELETE /api/enrollments/{id}":                RoleAdmin,
}

// RouteRole returns the role the route pattern requires; ok is false for a
// pattern the table does not list.
func RouteRole(pattern string) (Role, bool) {
	r, ok := routeRoles[pattern]
	return r, ok
}

// RouteRoles returns a copy of the whole table (tests, the dashboard's
// GET /api/me).
func RouteRoles() map[string]Role { return maps.Clone(routeRoles) }
