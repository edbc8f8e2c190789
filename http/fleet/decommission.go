package fleet

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/uptrace/bun"

	"kanade-backend/http/auth"
	"kanade-backend/http/httpx"
	"kanade-backend/http/internal/fleetkv"
	"kanade-backend/messages"
	"kanade-backend/storage"
)

// Decommissioned is the answer of DELETE /api/agents/{pc_id}: what the PC
// was when it was decommissioned and the groups it was taken out of.
type Decommissioned struct {
	storage.DecommissionedPC
	Groups []string `json:"groups"`
}

// decommission takes a PC that is gone for good out of the fleet: its
// agents row and its groups are removed (so no target names it and
// once_per_pc / once_per_target schedules stop waiting for it), while its
// history (results, executions, inventory, audit) stays. The PC is
// recorded in decommissioned_pcs with its last heartbeat, so that the
// scheduler keeps it out even if a heartbeat flushed late re-creates the
// row, and a PC that really runs again (a newer heartbeat) is known again.
//
// A PC that sent a heartbeat within the alive window is refused with 409:
// it would be back at its next heartbeat, which is not what the operator
// meant.
func (h *handlers) decommission(w http.ResponseWriter, r *http.Request) error {
	pcID, err := pathPC(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	now := h.clock.Now()
	var a storage.Agent
	err = h.db.NewSelect().Model(&a).Where("pc_id = ?", pcID).Scan(ctx)
	hasRow := err == nil
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("read agent %s: %w", pcID, err)
	}
	if hasRow && !a.LastHeartbeat.Before(now.Add(-storage.AliveWindow)) {
		return messages.Conflictf("agent '%s' is online (last heartbeat %s): it would be known again at its next heartbeat; switch it off (or revoke its credentials) first",
			pcID, a.LastHeartbeat.UTC().Format(time.RFC3339))
	}
	kv, err := h.groups.Open(ctx)
	if err != nil {
		return err
	}
	groups, _, err := fleetkv.ReadGroups(ctx, kv, pcID)
	if err != nil {
		return err
	}
	if !hasRow && len(groups) == 0 {
		return messages.NotFoundf("agent '%s' not found", pcID)
	}
	if len(groups) > 0 {
		cleared, rev, err := fleetkv.UpdateGroups(ctx, kv, pcID, func([]string) []string { return nil })
		if err != nil {
			return err
		}
		if err := mirrorGroups(ctx, h.writer, pcID, cleared, rev, now); err != nil {
			// KV holds the change; the mirror projector repairs the rows.
			h.log.WarnContext(ctx, "agent_group_members mirror not updated; the projector will catch up",
				"pc_id", pcID, "revision", rev, "err", err)
		}
	}
	by := messages.ActorOperator
	if p, ok := auth.PrincipalFrom(ctx); ok && p.Subject != "" {
		by = messages.ActorOperator + ":" + p.Subject
	}
	row := storage.DecommissionedPC{PcID: pcID, DecommissionedAt: storage.T(now), DecommissionedBy: by}
	if hasRow {
		last := a.LastHeartbeat
		row.Hostname, row.LastHeartbeat = a.Hostname, &last
	}
	if err := h.writer.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		return recordDecommission(ctx, tx, row)
	}); err != nil {
		return fmt.Errorf("decommission agent %s: %w", pcID, err)
	}
	if h.decommissioned != nil {
		var last time.Time
		if row.LastHeartbeat != nil {
			last = row.LastHeartbeat.Time
		}
		h.decommissioned(&messages.AgentDecommissioned{PcID: pcID, LastHeartbeat: last})
	}
	if groups == nil {
		groups = []string{}
	}
	payload := map[string]any{"pc_id": pcID, "groups": slices.Clone(groups), "hostname": row.Hostname}
	if row.LastHeartbeat != nil {
		payload["last_heartbeat"] = row.LastHeartbeat.UTC().Format(time.RFC3339Nano)
	}
	h.recordAudit(r, messages.ActionAgentDecommission, pcID, payload)
	httpx.WriteJSON(w, http.StatusOK, Decommissioned{DecommissionedPC: row, Groups: groups})
	return nil
}

// recordDecommission writes the tombstone (a second decommission of the
// same PC replaces the first) and removes the agents row.
func recordDecommission(ctx context.Context, tx bun.Tx, row storage.DecommissionedPC) error {
	if _, err := tx.NewInsert().Model(&row).
		On("CONFLICT (pc_id) DO UPDATE").
		Set("hostname = EXCLUDED.hostname").
		Set("last_heartbeat = EXCLUDED.last_heartbeat").
		Set("decommissioned_at = EXCLUDED.decommissioned_at").
		Set("decommissioned_by = EXCLUDED.decommissioned_by").
		Exec(ctx); err != nil {
		return fmt.Errorf("record decommissioned pc: %w", err)
	}
	if _, err := tx.NewDelete().Model((*storage.Agent)(nil)).Where("pc_id = ?", row.PcID).Exec(ctx); err != nil {
		return fmt.Errorf("delete agents row: %w", err)
	}
	return nil
}
