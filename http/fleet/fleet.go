// Package fleet serves the API area about the agents themselves: the agent
// list and detail (read from the SQL read model the heartbeat projector
// keeps), group memberships (KV agent_groups) and the layered agent
// configuration (KV agent_config) with its effective resolution per PC.
//
// Memberships and scopes are written to KV, the source of truth that
// agents watch; reads of them go to KV too, so an operator always sees
// their own write. After a membership change the handler also writes the
// agent_group_members mirror rows itself (guarded by the KV revision), so
// that a target resolved right after the edit (an exec at the group)
// already includes the PC instead of waiting for the mirror projector.
//
// DELETE /api/agents/{pc_id} decommissions a PC (decommission.go).
//
// Response shapes beyond api.md §3: the agent detail adds `groups`,
// `effective_config` and `warnings` to the AgentRow;
// effective_config answers `{pc_id, effective, warnings, groups}`. GET of
// an unset group or PC scope answers `{}` (like the global scope and
// upstream), never 404: an unset scope simply sets nothing.
package fleet

import (
	"context"
	"log/slog"

	"github.com/uptrace/bun"

	"kanade-backend/actors/clock"
	"kanade-backend/http/internal/fleetkv"
	"kanade-backend/http/internal/opaudit"
	"kanade-backend/http/server"
	"kanade-backend/messages"
)

// TxRunner runs a write transaction (storage.Store.InTx).
type TxRunner interface {
	InTx(ctx context.Context, fn func(ctx context.Context, tx bun.Tx) error) error
}

// Deps is what the fleet routes need.
type Deps struct {
	// DB is the read pool (storage.Store.R).
	DB bun.IDB
	// Writer writes the agent_group_members mirror rows (storage.Store).
	Writer TxRunner
	// JS opens the KV buckets (jetstream.JetStream).
	JS    fleetkv.Opener
	Audit opaudit.Publisher
	Clock clock.Clock
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Decommissioned, if set, is told about each decommissioned PC after
	// the store committed it (the app publishes it on the actor system's
	// event stream for the scheduler's fleet view).
	Decommissioned func(*messages.AgentDecommissioned)
}

type handlers struct {
	db     bun.IDB
	writer TxRunner
	groups *fleetkv.Bucket
	config *fleetkv.Bucket
	audit  opaudit.Publisher
	clock  clock.Clock
	log    *slog.Logger

	decommissioned func(*messages.AgentDecommissioned)
}

// Register adds the routes.
func Register(r *server.Router, d Deps) {
	h := &handlers{
		db:     d.DB,
		writer: d.Writer,
		groups: fleetkv.NewBucket(d.JS, messages.BucketAgentGroups),
		config: fleetkv.NewBucket(d.JS, messages.BucketAgentConfig),
		audit:  d.Audit,
		clock:  d.Clock,
		log:    d.Logger,

		decommissioned: d.Decommissioned,
	}
	if h.clock == nil {
		h.clock = clock.Real{}
	}
	if h.log == nil {
		h.log = slog.Default()
	}

	r.API("GET /api/agents", h.listAgents)
	r.API("GET /api/agents/{pc_id}", h.getAgent)
	r.API("GET /api/agents/{pc_id}/effective_config", h.effectiveConfig)
	r.API("DELETE /api/agents/{pc_id}", h.decommission)

	r.API("GET /api/agents/{pc_id}/groups", h.getGroups)
	r.API("PUT /api/agents/{pc_id}/groups", h.putGroups)
	r.API("POST /api/agents/{pc_id}/groups", h.addGroup)
	r.API("DELETE /api/agents/{pc_id}/groups/{group}", h.removeGroup)

	r.API("GET /api/config", h.getScope(globalKey))
	r.API("PUT /api/config", h.putScope(globalKey))
	r.API("GET /api/groups/{name}/config", h.getScope(groupKey))
	r.API("PUT /api/groups/{name}/config", h.putScope(groupKey))
	r.API("DELETE /api/groups/{name}/config", h.deleteScope(groupKey))
	r.API("GET /api/pcs/{pc_id}/config", h.getScope(pcKey))
	r.API("PUT /api/pcs/{pc_id}/config", h.putScope(pcKey))
	r.API("DELETE /api/pcs/{pc_id}/config", h.deleteScope(pcKey))
}
