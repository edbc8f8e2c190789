package storage

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/uptrace/bun"

	"kanade-backend/messages"
)

// AliveWindow is how recent a heartbeat must be for a PC to count as alive
// (online) when resolving targets and computing fleet health.
const AliveWindow = 2 * time.Minute

// invalidTargets counts the pc_ids ResolveTargetPCs skipped.
var invalidTargets atomic.Uint64

// InvalidTargets is how many pc_ids ResolveTargetPCs has skipped since the
// process started because they are not valid subject tokens (a metric).
func InvalidTargets() uint64 { return invalidTargets.Load() }

// reportedInvalid remembers which bad pc_ids were logged already, so that a
// bad row costs one log line per process, not one per tick.
var reportedInvalid struct {
	sync.Mutex
	ids map[string]bool
}

// maxReportedInvalid bounds reportedInvalid; beyond it only the counter
// moves.
const maxReportedInvalid = 1000

// skipInvalidTarget counts (and logs once) a pc_id no Command could be
// addressed to. Such a row can only come from an older version or a manual
// write (the projector refuses them at the edge), and one bad row must not
// fail a whole fan-out or schedule tick that the real PCs are waiting for.
func skipInvalidTarget(id string, err error) {
	invalidTargets.Add(1)
	reportedInvalid.Lock()
	defer reportedInvalid.Unlock()
	if reportedInvalid.ids == nil {
		reportedInvalid.ids = map[string]bool{}
	}
	if reportedInvalid.ids[id] || len(reportedInvalid.ids) >= maxReportedInvalid {
		return
	}
	reportedInvalid.ids[id] = true
	slog.Warn("skipping a target pc_id that is not a valid subject token", "err", err)
}

// ResolveTargetPCs returns the PCs a target means at now (behaviour.md §3):
// `all` → every alive agent; `groups` → alive agents that belong to any
// listed group; `pcs` → the listed PCs verbatim, alive or not (an operator
// who names a PC wants it, and the agent may come back). The union keeps
// first-occurrence order: all, then groups, then pcs; each part sorted by
// pc_id except the verbatim list. A pc_id that is not a valid subject token
// is skipped and counted (InvalidTargets), never returned.
func ResolveTargetPCs(ctx context.Context, db bun.IDB, t messages.Target, now time.Time) ([]string, error) {
	since := T(now.Add(-AliveWindow))
	var parts [][]string
	if t.All {
		var ids []string
		err := db.NewSelect().Model((*Agent)(nil)).Column("pc_id").
			Where("last_heartbeat >= ?", since).Order("pc_id").Scan(ctx, &ids)
		if err != nil {
			return nil, fmt.Errorf("resolve target all: %w", err)
		}
		parts = append(parts, ids)
	}
	if len(t.Groups) > 0 {
		var ids []string
		err := db.NewSelect().TableExpr("agent_group_members AS m").
			ColumnExpr("DISTINCT m.pc_id").
			Join("JOIN agents AS a ON a.pc_id = m.pc_id").
			Where("m.group_name IN (?)", bun.List(t.Groups)).
			Where("a.last_heartbeat >= ?", since).
			OrderExpr("m.pc_id").Scan(ctx, &ids)
		if err != nil {
			return nil, fmt.Errorf("resolve target groups %v: %w", t.Groups, err)
		}
		parts = append(parts, ids)
	}
	if len(parts) == 1 && len(t.Pcs) == 0 {
		// One query's rows are distinct already (a primary key, DISTINCT):
		// no set to build, and no second slice, for an exec to 100 000 PCs.
		return validTargets(parts[0]), nil
	}
	parts = append(parts, t.Pcs)
	seen := map[string]bool{}
	var out []string
	for _, ids := range parts {
		for _, id := range ids {
			if !seen[id] {
				seen[id] = true
				out = append(out, id)
			}
		}
	}
	return validTargets(out), nil
}

// validTargets drops, in place, the ids that are not valid subject tokens
// (counted and logged by skipInvalidTarget).
func validTargets(ids []string) []string {
	out := ids[:0]
	for _, id := range ids {
		if err := messages.ValidateToken("pc_id", id); err != nil {
			skipInvalidTarget(id, err)
			continue
		}
		out = append(out, id)
	}
	return out
}
