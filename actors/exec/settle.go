package exec

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/uptrace/bun"

	"kanade-backend/messages"
	"kanade-backend/storage"
)

// FireState is what became of an exec request whose answer its sender
// stopped waiting for.
type FireState int

const (
	// FireClaimed: no exec held the id; the caller's failed row holds it
	// now, so the engine will never record or publish an exec under it.
	FireClaimed FireState = iota + 1
	// FirePublished: the exec is recorded and its Commands were published
	// (or it has none to publish yet: only delayed waves).
	FirePublished
	// FireFailed: the exec is recorded as failed and nothing of it was
	// published.
	FireFailed
	// FireRecorded: the exec is recorded and its Commands are not
	// published yet: the engine is between its transaction and its
	// publish (or stopped there; scaleout.md §3.4).
	FireRecorded
)

// Settlement is Settle's finding.
type Settlement struct {
	State FireState
	// Exec is the exec's row (for FireClaimed, the caller's failed row).
	Exec storage.Execution
}

// Settle resolves a request that got no answer in time by looking its exec
// up, never by guessing: req must name its exec id. In one transaction it
// either claims the id with a failed executions row carrying reason (no
// exec had it: from then on the primary key refuses the engine's insert,
// so the request can never publish) or reads the exec recorded under it
// and says whether its Commands went out. The caller records the outcome
// that matches what was published.
func Settle(ctx context.Context, st *storage.Store, req *messages.ExecRequest, reason string, now time.Time) (Settlement, error) {
	if req.ExecID == "" {
		return Settlement{}, fmt.Errorf("settle an exec request: it names no exec id")
	}
	row, err := claimRow(req, reason, now)
	if err != nil {
		return Settlement{}, err
	}
	var out Settlement
	err = st.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		out = Settlement{}
		// A former leader claims nothing once a newer one took over: the
		// id is the newer leader's to fire.
		if req.Fence != 0 {
			if err := storage.CheckFence(ctx, tx, req.Fence); err != nil {
				return err
			}
		}
		res, err := tx.NewInsert().Model(row).On("CONFLICT (exec_id) DO NOTHING").Exec(ctx)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 1 {
			out.State, out.Exec = FireClaimed, *row
			return nil
		}
		if err := tx.NewSelect().Model(&out.Exec).Where("exec_id = ?", req.ExecID).Scan(ctx); err != nil {
			return err
		}
		var total, published int
		if err := tx.NewSelect().Model((*storage.PublishedRequest)(nil)).
			ColumnExpr("count(*)").ColumnExpr("count(published_at)").
			Where("exec_id = ?", req.ExecID).Scan(ctx, &total, &published); err != nil {
			return err
		}
		switch {
		case published > 0 || total == 0 && out.Exec.Status != storage.ExecFailed:
			out.State = FirePublished
		case out.Exec.Status == storage.ExecFailed:
			out.State = FireFailed
		default:
			out.State = FireRecorded
		}
		return nil
	})
	if err != nil {
		return Settlement{}, fmt.Errorf("settle exec %s: %w", req.ExecID, err)
	}
	return out, nil
}

// claimRow is the failed executions row that claims an exec id no exec
// holds: the exec as requested, with nothing published.
func claimRow(req *messages.ExecRequest, reason string, now time.Time) (*storage.Execution, error) {
	plan, err := json.Marshal(req.Plan)
	if err != nil {
		return nil, fmt.Errorf("encode plan: %w", err)
	}
	row := &storage.Execution{
		ExecID: req.ExecID, JobID: req.JobID, InitiatedBy: req.InitiatedBy, Plan: plan, Subjects: json.RawMessage(`[]`),
		Status: storage.ExecFailed, Error: &reason, CreatedAt: storage.T(now), DeadlineAt: storage.T(now),
		FinishedAt: storage.T(now), UpdatedAt: storage.T(now),
	}
	if row.InitiatedBy == "" {
		row.InitiatedBy = auditActor(req)
	}
	if req.ScheduleID != "" {
		row.ScheduleID = &req.ScheduleID
	}
	if m := req.Manifest; m != nil {
		row.Version = m.Version
		if secs, err := m.Execute.TimeoutSecs(); err == nil {
			row.TimeoutSecs = secs
		}
		if row.Manifest, err = json.Marshal(m); err != nil {
			return nil, fmt.Errorf("encode manifest: %w", err)
		}
	}
	return row, nil
}
