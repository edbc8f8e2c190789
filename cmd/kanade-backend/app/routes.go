package app

import (
	"context"
	"net/http"

	execengine "kanade-backend/actors/exec"
	"kanade-backend/assets"
	"kanade-backend/http/agentio"
	"kanade-backend/http/auditlog"
	"kanade-backend/http/auth"
	"kanade-backend/http/cluster"
	"kanade-backend/http/credentials"
	"kanade-backend/http/events"
	"kanade-backend/http/executions"
	"kanade-backend/http/fleet"
	"kanade-backend/http/health"
	"kanade-backend/http/inventory"
	"kanade-backend/http/jobs"
	"kanade-backend/http/openapi"
	"kanade-backend/http/operators"
	"kanade-backend/http/releases"
	"kanade-backend/http/results"
	"kanade-backend/http/schedules"
	"kanade-backend/http/server"
	"kanade-backend/http/system"
	"kanade-backend/http/targets"
	"kanade-backend/messages"
	"kanade-backend/storage/broker"
)

// routes registers every API feature on the router; each feature package
// declares the dependencies it needs in its Deps struct.
func (a *App) routes(r *server.Router) {
	r.Public("GET /metrics", a.Metrics.Handler())
	r.Public("GET /ready", http.HandlerFunc(a.serveReady))
	system.Register(r, system.Deps{JS: a.JS})
	cluster.Register(r, a.clusterDeps())
	jobs.Register(r, jobs.Deps{KV: a.JS, Store: a.Store, Audit: a.Audit, Clock: a.Clock, Logger: a.Logger})
	executions.Register(r, executions.Deps{
		Engine: &execengine.Client{Root: a.Actors.Root, PID: a.Exec},
		NATS:   a.Conn, Store: a.Store, KV: a.JS, Audit: a.Audit, Clock: a.Clock, Logger: a.Logger,
	})
	schedules.Register(r, schedules.Deps{JS: a.JS, DB: a.Store.R, Writer: a.Store, Audit: a.Audit, Scheduler: standbyScheduler{a}, Clock: a.Clock, Logger: a.Logger})
	targets.Register(r, targets.Deps{DB: a.Store.R, Clock: a.Clock})
	results.Register(r, results.Deps{DB: a.Store.R})
	auditlog.Register(r, auditlog.Deps{DB: a.Store.R})
	inventory.Register(r, inventory.Deps{DB: a.Store.R})
	streams := events.New(a.Live)
	streams.Register(r)
	a.httpShutdown = append(a.httpShutdown, streams.Close)
	openapi.Register(r)
	fleet.Register(r, fleet.Deps{DB: a.Store.R, Writer: a.Store, JS: a.JS, Audit: a.Audit, Clock: a.Clock, Logger: a.Logger,
		Decommissioned: func(e *messages.AgentDecommissioned) { a.Actors.EventStream.Publish(e) }})
	// Runs and pings wait for agents for up to minutes; a graceful stop
	// ends those waits instead of waiting for them.
	agents := agentio.Register(r, agentio.Deps{Conn: a.Conn, Audit: a.Audit, Metrics: a.Metrics, Logger: a.Logger})
	a.httpShutdown = append(a.httpShutdown, agents.Close)
	health.Register(r, health.Deps{
		DB:        a.Store.R,
		Probe:     func(ctx context.Context) broker.Status { return broker.Probe(ctx, a.JS) },
		Connected: a.Conn.IsConnected,
		Clock:     a.Clock,
		Warnings:  a.leaseWarnings,
		Problems:  a.problems,
	})
	releases.Register(r, releases.Deps{JS: a.JS, Audit: a.Audit, Logger: a.Logger})
	credentials.Register(r, credentials.Deps{Store: a.AgentCreds, Kicker: a.agentKicker(), Audit: a.Audit, Logger: a.Logger})
	operators.Register(r, operators.Deps{Store: a.Operators, Audit: a.Audit, Sessions: a.Auth, Mode: a.Auth.Mode(),
		GuardLastAdmin: a.Auth.Mode() == auth.ModeGenerated, Logger: a.Logger})
	// The dashboard answers every other GET outside /api (its client-side
	// routes); more specific public patterns above take precedence.
	r.Public("GET /", assets.Handler())
}
