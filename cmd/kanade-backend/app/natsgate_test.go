package app

import (
	"testing"

	"kanade-backend/http/auth"
)

// Every route the NATS gate names is a real route (a misspelt pattern
// would silently leave its route ungated), and none of the database-served
// reads is gated.
func TestNATSRoutesAreRealRoutes(t *testing.T) {
	for p := range natsRoutes {
		if _, ok := auth.RouteRole(p); !ok {
			t.Errorf("natsRoutes names %q, which is not in the route table", p)
		}
	}
	for _, p := range []string{"GET /api/jobs", "GET /api/schedules", "GET /api/executions", "GET /api/results", "GET /api/agents"} {
		if natsRoutes[p] {
			t.Errorf("%s is served from the database and must not be gated", p)
		}
	}
	if !natsRoutes["POST /api/exec/{job_id}"] {
		t.Error("exec is not gated")
	}
}
