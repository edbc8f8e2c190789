package storage

import (
	"context"
	"fmt"
	"time"

	"github.com/uptrace/bun"

	"kanade-backend/messages"
)

// AliveWindow is how recent a heartbeat must be for a PC to count as alive
// (online) when resolving targets and computing fleet health.
const AliveWindow = 2 * time.Minute

// ResolveTargetPCs returns the PCs a target means at now (behaviour.md §3):
// `all` → every alive agent; `groups` → alive agents that belong to any
// listed group; `pcs` → the listed PCs verbatim, alive or not (an operator
// who names a PC wants it, and the agent may come back). The union keeps
// first-occurrence order: all, then groups, then pcs; each part sorted by
// pc_id except the verbatim list.
func ResolveTargetPCs(ctx context.Context, db bun.IDB, t messages.Target, now time.Time) ([]string, error) {
	since := T(now.Add(-AliveWindow))
	seen := map[string]bool{}
	var out []string
	add := func(ids []string) {
		for _, id := range ids {
			if !seen[id] {
				seen[id] = true
				out = append(out, id)
			}
		}
	}
	if t.All {
		var ids []string
		err := db.NewSelect().Model((*Agent)(nil)).Column("pc_id").
			Where("last_heartbeat >= ?", since).Order("pc_id").Scan(ctx, &ids)
		if err != nil {
			return nil, fmt.Errorf("resolve target all: %w", err)
		}
		add(ids)
	}
	if len(t.Groups) > 0 {
		var ids []string
		err := db.NewSelect().TableExpr("agent_group_members AS m").
			ColumnExpr("DISTINCT m.pc_id").
			Join("JOIN agents AS a ON a.pc_id = m.pc_id").
			Where("m.group_name IN (?)", bun.In(t.Groups)).
			Where("a.last_heartbeat >= ?", since).
			OrderExpr("m.pc_id").Scan(ctx, &ids)
		if err != nil {
			return nil, fmt.Errorf("resolve target groups %v: %w", t.Groups, err)
		}
		add(ids)
	}
	add(t.Pcs)
	return out, nil
}
