package broker

import "github.com/nats-io/nats-server/v2/server"

// applyLimits lifts the per-stream consumer limit that nats-server 2.15
// sets by default (1 000 when neither stream nor account sets one). Every
// agent watches its own agent_groups key and the agent_config bucket with
// an ordered consumer, so a fleet of more than a thousand PCs needs more
// than a thousand consumers on each of those streams; the server would
// refuse the rest ("maximum consumers limit reached") and those agents
// would never hear of their groups. -1 is unlimited.
func applyLimits(sopts *server.Options) {
	sopts.JetStreamLimits.DefaultMaxConsumers = -1
}
