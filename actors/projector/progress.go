package projector

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/uptrace/bun"

	"kanade-backend/actors/clock"
	"kanade-backend/messages"
	"kanade-backend/storage"
)

// Exec progress (behaviour.md §1). The exec engine creates an executions row
// as pending with its exec_expected PCs; from there the projectors own the
// status, except cancelled (the engine's):
//
//	pending → running      first result attributed to the exec
//	running → completed    every expected PC answered, all with exit 0, and
//	                       no rollout wave is still pending
//	running → failed       the same, with some non-zero exit
//	pending/running → expired
//	                       deadline_at passed (no pending wave) while some
//	                       expected PC never answered
//
// Counting: a PC counts once per exec, on its first result, whether the
// exec reached it through one subject or several. The first answer is
// written to its exec_expected row, and only a result that fills an
// unanswered row moves a counter, so a redelivered or duplicated result,
// or the replay of a rebuild, never counts twice. A result from a PC that
// is not in exec_expected (it joined a group after the exec fired) is
// stored and attributed (execution_results.exec_id) and may move the exec
// to running, but is not counted: the counters and the status speak about
// the PCs the exec expected.

// progress accumulates one batch's effect on execs.
type progress struct {
	delta map[string]*counts
}

type counts struct{ success, failure int }

func newProgress() *progress { return &progress{delta: map[string]*counts{}} }

// answer records r as the answer of its PC to execID if it is the first.
func (p *progress) answer(ctx context.Context, tx bun.IDB, execID string, r resultItem) error {
	d := p.delta[execID]
	if d == nil {
		d = &counts{}
		p.delta[execID] = d
	}
	res, err := tx.NewUpdate().Model((*storage.ExecExpected)(nil)).
		Set("request_id = ?", r.RequestID).
		Set("exit_code = ?", r.ExitCode).
		Set("answered_at = ?", storage.T(r.FinishedAt)).
		Where("exec_id = ?", execID).Where("pc_id = ?", r.PcID).Where("answered_at IS NULL").
		Exec(ctx)
	if err != nil {
		return fmt.Errorf("record answer of %s to exec %s: %w", r.PcID, execID, err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		if r.ExitCode == 0 {
			d.success++
		} else {
			d.failure++
		}
	}
	return nil
}

// apply moves the counters and statuses of the touched execs and returns
// the events to publish after commit.
func (p *progress) apply(ctx context.Context, tx bun.IDB, now time.Time) ([]*messages.ExecProgressed, error) {
	ids := make([]string, 0, len(p.delta))
	for id := range p.delta {
		ids = append(ids, id)
	}
	slices.Sort(ids) // a fixed order keeps concurrent writers from deadlocking on Postgres
	var events []*messages.ExecProgressed
	for _, id := range ids {
		d := p.delta[id]
		res, err := tx.NewUpdate().Model((*storage.Execution)(nil)).
			Set("success_count = success_count + ?", d.success).
			Set("failure_count = failure_count + ?", d.failure).
			Set("status = CASE WHEN status = ? THEN ? ELSE status END", storage.ExecPending, storage.ExecRunning).
			Set("updated_at = ?", storage.T(now)).
			Where("exec_id = ?", id).
			Exec(ctx)
		if err != nil {
			return nil, fmt.Errorf("update progress of exec %s: %w", id, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			continue // deleted by retention meanwhile
		}
		_, ev, err := settle(ctx, tx, id, now, false)
		if err != nil {
			return nil, err
		}
		events = append(events, ev)
	}
	return events, nil
}

// execState is what settle needs to know about an exec.
type execState struct {
	storage.Execution `bun:",extend"`
	Unanswered        int          `bun:"unanswered"`
	ExpectedRows      int          `bun:"expected_rows"`
	PendingWaves      int          `bun:"pending_waves"`
	LastAnswer        storage.Time `bun:"last_answer"`
}

// settle finishes exec id when its answers allow it, and returns whether it
// did and the exec's current progress. With expire set (the deadline has
// passed), missing answers make it expired instead of leaving it running.
func settle(ctx context.Context, tx bun.IDB, id string, now time.Time, expire bool) (bool, *messages.ExecProgressed, error) {
	var st execState
	err := tx.NewSelect().Model(&st).
		ColumnExpr("execution.*").
		ColumnExpr("(SELECT COUNT(*) FROM exec_expected AS x WHERE x.exec_id = execution.exec_id AND x.answered_at IS NULL) AS unanswered").
		ColumnExpr("(SELECT COUNT(*) FROM exec_expected AS x WHERE x.exec_id = execution.exec_id) AS expected_rows").
		ColumnExpr("(SELECT COUNT(*) FROM exec_waves AS w WHERE w.exec_id = execution.exec_id AND w.state = ?) AS pending_waves", storage.WavePending).
		ColumnExpr("(SELECT MAX(x.answered_at) FROM exec_expected AS x WHERE x.exec_id = execution.exec_id) AS last_answer").
		Where("execution.exec_id = ?", id).
		Scan(ctx)
	if err != nil {
		return false, nil, fmt.Errorf("read progress of exec %s: %w", id, err)
	}
	ex := st.Execution
	inFlight := ex.Status == storage.ExecPending || ex.Status == storage.ExecRunning
	changed := false
	next := ""
	// finished_at is when the exec's outcome became a fact: the last
	// expected answer, or the deadline for an exec settled by it. Not the
	// projection time, so that a rebuild or a late projection gives the
	// same row. Agent clocks are not trusted beyond [created_at, now].
	var finished time.Time
	if inFlight && st.PendingWaves == 0 {
		switch {
		case st.ExpectedRows > 0 && st.Unanswered == 0:
			next = finalStatus(ex)
			finished = clampTime(st.LastAnswer.Time, ex.CreatedAt.Time, now)
		case expire && st.Unanswered > 0:
			next, finished = storage.ExecExpired, clampTime(ex.DeadlineAt.Time, ex.CreatedAt.Time, now)
		case expire:
			// It expected nobody (an empty group): nothing is missing. Such
			// an exec waits for its deadline rather than finishing at once,
			// because PCs outside the expectation may still answer.
			next, finished = finalStatus(ex), clampTime(ex.DeadlineAt.Time, ex.CreatedAt.Time, now)
		}
	}
	if next != "" {
		res, err := tx.NewUpdate().Model((*storage.Execution)(nil)).
			Set("status = ?", next).Set("finished_at = ?", storage.T(finished)).Set("updated_at = ?", storage.T(now)).
			Where("exec_id = ?", id).Where("status IN (?)", bun.List([]string{storage.ExecPending, storage.ExecRunning})).
			Exec(ctx)
		if err != nil {
			return false, nil, fmt.Errorf("finish exec %s as %s: %w", id, next, err)
		}
		if n, _ := res.RowsAffected(); n == 1 {
			ex.Status, changed = next, true
		}
	}
	return changed, &messages.ExecProgressed{
		ExecID: ex.ExecID, JobID: ex.JobID, Status: ex.Status, Expected: ex.ExpectedPcs,
		Success: ex.SuccessCount, Failure: ex.FailureCount, At: now,
	}, nil
}

// clampTime returns t within [lo, hi].
func clampTime(t, lo, hi time.Time) time.Time {
	if t.Before(lo) {
		t = lo
	}
	if t.After(hi) {
		t = hi
	}
	return t
}

func finalStatus(ex storage.Execution) string {
	if ex.FailureCount > 0 {
		return storage.ExecFailed
	}
	return storage.ExecCompleted
}

// expiryTick makes the sweeper look for execs past their deadline.
type expiryTick struct{}

// expirySweeper periodically settles in-flight execs whose deadline_at has
// passed, once the results projection has applied its start-up backlog.
// The exec engine writes the deadline at creation (and pushes it back when
// a later wave publishes) as the last publish + timeout + jitter + a
// margin, so an exec still in flight then has PCs that will not answer.
type expirySweeper struct {
	env   *env
	timer clock.Timer
}

var _ actor.Actor = (*expirySweeper)(nil)

func newExpirySweeper(e *env) *expirySweeper { return &expirySweeper{env: e} }

func (s *expirySweeper) Receive(c actor.Context) {
	switch c.Message().(type) {
	case *actor.Started:
		s.arm(c)
		reportReady(c, projExpiry)
	case *expiryTick:
		if !s.env.isCurrent(ProjResults) {
			// Answers may still be in the RESULTS backlog (after downtime or
			// a rebuild): expiring now would call PCs silent that did
			// answer, and an expired exec never completes.
			s.env.log.Debug("exec expiry waits for the results projection to catch up")
			s.arm(c)
			return
		}
		ctx, cancel := opContext()
		events, err := expireDue(ctx, s.env.store, s.env.clock.Now().UTC())
		cancel()
		if err != nil {
			s.env.log.Error("expiring execs past their deadline failed; retrying at the next sweep", "err", err)
		}
		for _, ev := range events {
			if ev.Status == storage.ExecExpired {
				s.env.metrics.expired.Inc()
			}
			c.ActorSystem().EventStream.Publish(ev)
		}
		s.arm(c)
	case *actor.Stopping, *actor.Restarting:
		if s.timer != nil {
			s.timer.Stop()
		}
	}
}

func (s *expirySweeper) arm(c actor.Context) {
	self, root := c.Self(), c.ActorSystem().Root
	s.timer = s.env.clock.AfterFunc(s.env.cfg.ExpiryInterval, func() { root.Send(self, &expiryTick{}) })
}

// expireDue settles every in-flight exec whose deadline is before now, in
// transactions of at most 500 execs.
func expireDue(ctx context.Context, st *storage.Store, now time.Time) ([]*messages.ExecProgressed, error) {
	var all []*messages.ExecProgressed
	after := ""
	for {
		var ids []string
		err := st.R.NewSelect().Model((*storage.Execution)(nil)).Column("exec_id").
			Where("status IN (?)", bun.List([]string{storage.ExecPending, storage.ExecRunning})).
			Where("deadline_at < ?", storage.T(now)).
			Where("exec_id > ?", after).
			Order("exec_id").Limit(500).Scan(ctx, &ids)
		if err != nil {
			return all, fmt.Errorf("find execs past their deadline: %w", err)
		}
		if len(ids) == 0 {
			return all, nil
		}
		after = ids[len(ids)-1]
		var events []*messages.ExecProgressed
		err = st.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
			events = events[:0]
			for _, id := range ids {
				changed, ev, err := settle(ctx, tx, id, now, true)
				if err != nil {
					return err
				}
				if changed {
					events = append(events, ev)
				}
			}
			return nil
		})
		if err != nil {
			return all, err
		}
		all = append(all, events...)
	}
}
