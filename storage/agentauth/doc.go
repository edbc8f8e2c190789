// Package agentauth gives every agent its own NATS credential, so that one
// compromised PC cannot command the fleet. The backend runs the NATS auth
// callout (storage/broker/callout); this package is what it decides with:
// the agent_credentials table (per-PC tokens and enrollment tokens, kept as
// hashes), the permissions of each kind of client (permissions.go), the
// Authorizer that maps a presented token to them, the binding of an
// enrollment token to the PC whose first heartbeat it sends (enroll.go),
// and the listing and kicking of live connections (conns.go), which is how
// a revocation ends a connection at once.
package agentauth
