package projector

import (
	"context"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/uptrace/bun"

	"kanade-backend/actors/clock"
	"kanade-backend/storage"
)

// retentionTick starts a sweep.
type retentionTick struct{}

// retentionSweeper deletes rows older than the configured retention
// (upstream kept everything forever, defect 7): execution_results and
// executions after ResultsDays, audit_log after AuditDays,
// projection_errors after ProjectionErrorsDays. Deletes run in transactions
// of at most BatchRows rows so that the single writer is never held for
// long, and never touch an exec still in flight (pending, running, or with
// a rollout wave still to publish) nor its results.
type retentionSweeper struct {
	env   *env
	timer clock.Timer
}

var _ actor.Actor = (*retentionSweeper)(nil)

func newRetentionSweeper(e *env) *retentionSweeper { return &retentionSweeper{env: e} }

func (r *retentionSweeper) Receive(c actor.Context) {
	switch c.Message().(type) {
	case *actor.Started:
		// The first sweep comes soon after start, so that a process
		// restarted more often than the interval still sweeps.
		r.arm(c, min(r.env.cfg.Retention.SweepInterval, time.Minute))
		reportReady(c, projRetention)
	case *retentionTick:
		ctx, cancel := r.env.opContext()
		deleted, err := sweepRetention(ctx, r.env.store, r.env.clock.Now().UTC(), r.env.cfg.Retention)
		cancel()
		// Armed before the metrics move: a test that sees them and then
		// advances a fake clock must find the next sweep's timer there.
		r.arm(c, r.env.cfg.Retention.SweepInterval)
		total := int64(0)
		for table, n := range deleted {
			r.env.metrics.retentionDeleted.WithLabelValues(table).Add(float64(n))
			total += n
		}
		if err != nil {
			r.env.log.Error("retention sweep failed; retrying at the next sweep", "deleted", deleted, "err", err)
		} else if total > 0 {
			r.env.log.Info("retention sweep", "deleted", deleted)
		}
	case *actor.Stopping, *actor.Restarting:
		if r.timer != nil {
			r.timer.Stop()
		}
	}
}

func (r *retentionSweeper) arm(c actor.Context, d time.Duration) {
	self, root := c.Self(), c.ActorSystem().Root
	r.timer = r.env.clock.AfterFunc(d, func() { root.Send(self, &retentionTick{}) })
}

// inFlightExec is true for an exec (alias e) that may still change.
const inFlightExec = "(e.status IN ('" + storage.ExecPending + "', '" + storage.ExecRunning + "') OR EXISTS " +
	"(SELECT 1 FROM exec_waves AS w WHERE w.exec_id = e.exec_id AND w.state = '" + storage.WavePending + "'))"

// oldExec is true for an exec (alias e) created before the cutoff and done.
const oldExec = "e.created_at < ? AND NOT " + inFlightExec

// sweepRetention runs one sweep at now and returns the rows deleted per
// table.
func sweepRetention(ctx context.Context, st *storage.Store, now time.Time, r Retention) (map[string]int64, error) {
	deleted := map[string]int64{}
	days := func(n int) storage.Time { return storage.T(now.Add(-time.Duration(n) * 24 * time.Hour)) }
	type step struct {
		table string
		days  int
		query string
	}
	steps := []step{
		{"execution_results", r.ResultsDays, `DELETE FROM execution_results WHERE (request_id, pc_id) IN (
			SELECT r.request_id, r.pc_id FROM execution_results AS r WHERE r.finished_at < ?
			AND NOT EXISTS (SELECT 1 FROM executions AS e WHERE e.exec_id = r.exec_id AND ` + inFlightExec + `) LIMIT ?)`},
		// An exec's children go first, in bounded batches of their own: an
		// exec to 10 000 PCs has 10 000 exec_expected rows, which the
		// foreign key cascade would otherwise delete in one transaction.
		{"exec_expected", r.ResultsDays, `DELETE FROM exec_expected WHERE (exec_id, pc_id) IN (
			SELECT x.exec_id, x.pc_id FROM exec_expected AS x JOIN executions AS e ON e.exec_id = x.exec_id
			WHERE ` + oldExec + ` LIMIT ?)`},
		{"exec_requests", r.ResultsDays, `DELETE FROM exec_requests WHERE request_id IN (
			SELECT x.request_id FROM exec_requests AS x JOIN executions AS e ON e.exec_id = x.exec_id
			WHERE ` + oldExec + ` LIMIT ?)`},
		{"exec_waves", r.ResultsDays, `DELETE FROM exec_waves WHERE (exec_id, wave_index) IN (
			SELECT x.exec_id, x.wave_index FROM exec_waves AS x JOIN executions AS e ON e.exec_id = x.exec_id
			WHERE ` + oldExec + ` LIMIT ?)`},
		{"executions", r.ResultsDays, `DELETE FROM executions WHERE exec_id IN (
			SELECT e.exec_id FROM executions AS e WHERE ` + oldExec + ` LIMIT ?)`},
		{"audit_log", r.AuditDays, `DELETE FROM audit_log WHERE id IN (
			SELECT id FROM audit_log WHERE occurred_at < ? ORDER BY occurred_at LIMIT ?)`},
		{"projection_errors", r.ProjectionErrorsDays, `DELETE FROM projection_errors WHERE id IN (
			SELECT id FROM projection_errors WHERE recorded_at < ? ORDER BY recorded_at LIMIT ?)`},
	}
	for _, s := range steps {
		if s.days <= 0 {
			continue
		}
		cutoff := days(s.days)
		for {
			var n int64
			err := st.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
				res, err := tx.ExecContext(ctx, s.query, cutoff, r.BatchRows)
				if err != nil {
					return err
				}
				n, err = res.RowsAffected()
				return err
			})
			if err != nil {
				return deleted, fmt.Errorf("retention: delete from %s before %s: %w", s.table, cutoff.Format(time.RFC3339), err)
			}
			if n > 0 {
				deleted[s.table] += n
			}
			if n < int64(r.BatchRows) {
				break
			}
		}
	}
	return deleted, nil
}

// Rebuild empties every projection fed by a stream or a KV bucket, and the
// checkpoints of the stream projections, so that the next start projects
// them again from the sources (kanade-backend --rebuild). The agents table
// stays: heartbeats are not kept in a stream, so it could not be rebuilt.
// Exec progress stays too: executions and exec_expected are the exec
// engine's records, and the answers they hold are counted once already.
func Rebuild(ctx context.Context, st *storage.Store) error {
	stmts := []string{
		"DELETE FROM execution_results",
		"DELETE FROM inventory_facts",
		"DELETE FROM audit_log",
		"DELETE FROM projection_errors WHERE projection <> '" + ProjHeartbeat + "'",
		"DELETE FROM projection_checkpoints",
		"DELETE FROM jobs",
		"DELETE FROM schedules",
		"DELETE FROM agent_group_members",
		"DELETE FROM agent_group_revisions",
	}
	err := st.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		for _, q := range stmts {
			if _, err := tx.ExecContext(ctx, q); err != nil {
				return fmt.Errorf("%s: %w", q, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("rebuild: empty projections: %w", err)
	}
	return nil
}
