// Package sim simulates a fleet of kanade agents in one process, for
// end-to-end tests, benchmarks and demos. Upstream agents are Windows
// services that cannot run here, so every simulated agent speaks the wire
// contract (wire.md) exactly as far as the backend can observe: it sends
// heartbeats, receives Commands on commands.all, commands.pc.<pc_id> and
// commands.group.<g> for the groups in its agent_groups key, drops Commands
// whose version is not the pinned one or whose script is revoked, honours
// jitter, timeouts and kill.<job_id>, publishes one ExecResult per run and
// answers logs.fetch.<pc_id>.
//
// Each agent is one protoactor actor that owns its timers, runs and log;
// the agents' mailboxes run on a worker per core (actorsys.WorkerPool), not on a
// goroutine each, so a broadcast to 100 000 agents does not flood the Go
// scheduler.
// What would cost O(agents) in NATS resources is shared instead, because
// the backend cannot tell the difference: the whole fleet uses one
// connection, three wildcard subscriptions (commands.>, kill.*,
// logs.fetch.*), one watch of the agent_groups bucket and one heartbeat
// timer (wheel.go), and a router actor dispatches to agents by pc_id,
// group membership, running job or heartbeat phase.
// Version pins and revocations are read from KV once per batch of arriving
// Commands rather than once per agent (see pincheck.go).
//
// With per-PC credentials (Config.Credentials, --credentials) the server
// gives each token only its own PC's subjects, so each agent has its own
// connection, subscriptions and agent_groups watch instead, as real agents
// do (credentials.go); the router and the pin check stay shared.
//
// Scripts follow a small convention so tests are deterministic (see
// script.go): "sleep 2s", "exit 3", "echo <text>", "echo-json <json>",
// "fail-once". A script without any of them runs for a random time from
// Config.RunTime and fails with probability Config.FailRate.
package sim
