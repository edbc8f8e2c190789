package projector

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
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

// progress accumulates one batch's effect on execs. Its cost depends on
// the batch's own rows, never on the size of the execs they answer: the
// answers are recorded with one statement per chunk of rows, the counters
// move by what that statement changed, and an exec's expected_pcs minus
// its counters says how many PCs it still waits for.
type progress struct {
	answers []answerRow
	seen    map[answerKey]bool
	delta   map[string]*counts
	stmts   *stmtCache
}

type answerKey struct{ exec, pc string }

// answerRow is a PC's candidate first answer to an exec.
type answerRow struct {
	execID string
	r      resultItem
}

type counts struct{ success, failure int }

func newProgress(stmts *stmtCache) *progress {
	return &progress{seen: map[answerKey]bool{}, delta: map[string]*counts{}, stmts: stmts}
}

// answer notes r as a candidate first answer of its PC to execID. Within a
// batch the first result of a PC wins, as it would one statement at a time;
// apply writes it only if the PC has not answered before.
func (p *progress) answer(execID string, r resultItem) {
	if p.delta[execID] == nil {
		p.delta[execID] = &counts{}
	}
	k := answerKey{execID, r.PcID}
	if p.seen[k] {
		return
	}
	p.seen[k] = true
	p.answers = append(p.answers, answerRow{execID: execID, r: r})
}

// answerChunk bounds the rows of one UPDATE: 4 arguments a row.
const answerChunk = 500

// answerGroup is one exec's answers whose exit codes are all zero (ok) or
// all non-zero: each chunk of a group is one UPDATE, and the rows it
// changed are the counter's delta.
type answerGroup struct {
	exec string
	ok   bool
}

// record writes the batch's answers into the exec_expected rows that have
// none yet and counts, per exec, the rows it filled. Only a row a
// statement changed counts (answered_at IS NULL, rows affected), so a
// redelivered or duplicated result, a second writer, or the replay of a
// rebuild never counts twice. A PC outside exec_expected has no row and
// is not counted.
//
// The answers are grouped by exec and by success or failure so that the
// database's count of changed rows says which counter moves: no row comes
// back to be scanned (SQLite builds a RETURNING clause's rows in a table of
// their own before handing back the first one).
func (p *progress) record(ctx context.Context, tx bun.Tx) error {
	groups := map[answerGroup][]answerRow{}
	for _, a := range p.answers {
		g := answerGroup{a.execID, a.r.ExitCode == 0}
		groups[g] = append(groups[g], a)
	}
	// A fixed order (exec, then failures before successes) keeps
	// concurrent writers from deadlocking on PostgreSQL.
	order := slices.SortedFunc(maps.Keys(groups), func(a, b answerGroup) int {
		if c := strings.Compare(a.exec, b.exec); c != 0 {
			return c
		}
		return cmpBool(a.ok, b.ok)
	})
	for _, g := range order {
		d := p.delta[g.exec]
		// In pc_id order, like the rows inserted before them: each
		// statement walks the exec's exec_expected rows forward.
		rows := groups[g]
		slices.SortFunc(rows, func(a, b answerRow) int { return strings.Compare(a.r.PcID, b.r.PcID) })
		err := chunks(rows, answerChunk, func(part []answerRow) error {
			res, err := p.stmts.exec(ctx, tx, answersSQL(tx, g.exec, part), len(part) == answerChunk)
			if err != nil {
				return fmt.Errorf("record %d answers to exec %s: %w", len(part), g.exec, err)
			}
			n, err := res.RowsAffected()
			if err != nil {
				return fmt.Errorf("record answers to exec %s: %w", g.exec, err)
			}
			if g.ok {
				d.success += int(n)
			} else {
				d.failure += int(n)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	default:
		return -1
	}
}

// answersSQL is the UPDATE that records part, answers to exec execID:
// each row's exec_expected row is found by its primary key, and only one
// without an answer changes.
func answersSQL(db bun.IDB, execID string, part []answerRow) *storage.DriverSQL {
	q := storage.NewDriverSQL(db, len(part)*4+1)
	// VALUES columns are column1… on both SQLite and PostgreSQL; the cast
	// types the exit code for PostgreSQL, which would take it as text
	// (SQLite takes the bound integer as it is, and 500 casts cost it a
	// tenth of the statement).
	q.WriteString("UPDATE exec_expected SET request_id = v.column2, exit_code = v.column3, answered_at = v.column4 FROM (VALUES ")
	for i, a := range part {
		if i > 0 {
			q.WriteByte(',')
		}
		q.WriteByte('(')
		q.Arg(a.r.PcID)
		q.WriteByte(',')
		q.Arg(a.r.RequestID)
		q.WriteByte(',')
		if q.Numbered() {
			q.WriteString("CAST(")
			q.Arg(a.r.ExitCode)
			q.WriteString(" AS INTEGER)")
		} else {
			q.Arg(a.r.ExitCode)
		}
		q.WriteByte(',')
		q.Arg(storage.T(a.r.FinishedAt))
		q.WriteByte(')')
	}
	q.WriteString(") AS v WHERE exec_expected.exec_id = ")
	q.Arg(execID)
	q.WriteString(" AND exec_expected.pc_id = v.column1 AND exec_expected.answered_at IS NULL")
	return q
}

// apply records the answers, moves the counters and statuses of the
// touched execs and returns the events to publish after commit.
func (p *progress) apply(ctx context.Context, tx bun.Tx, now time.Time) ([]*messages.ExecProgressed, error) {
	if err := p.record(ctx, tx); err != nil {
		return nil, err
	}
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
	PendingWaves      int `bun:"pending_waves"`
}

// expectedState is an exec's exec_expected rows, counted.
type expectedState struct {
	Rows       int          `bun:"expected_rows"`
	Unanswered int          `bun:"unanswered"`
	LastAnswer storage.Time `bun:"last_answer"`
}

// countExpected counts exec id's expected and unanswered PCs and finds its
// last answer: a scan of the exec's exec_expected rows, which settle does
// only when the counters say the exec may be finished, or at its deadline.
func countExpected(ctx context.Context, tx bun.IDB, id string) (expectedState, error) {
	var x expectedState
	if err := countExpectedQuery(tx, id).Scan(ctx, &x); err != nil {
		return x, fmt.Errorf("count expected PCs of exec %s: %w", id, err)
	}
	return x, nil
}

func countExpectedQuery(tx bun.IDB, id string) *bun.SelectQuery {
	return tx.NewSelect().Model((*storage.ExecExpected)(nil)).
		ColumnExpr("COUNT(*) AS expected_rows").
		ColumnExpr("COALESCE(SUM(CASE WHEN answered_at IS NULL THEN 1 ELSE 0 END), 0) AS unanswered").
		ColumnExpr("MAX(answered_at) AS last_answer").
		Where("exec_id = ?", id)
}

// settleQuery reads exec id and its pending waves into st.
func settleQuery(tx bun.IDB, st *execState, id string) *bun.SelectQuery {
	return tx.NewSelect().Model(st).
		ColumnExpr("execution.*").
		// The state is tested outside the WHERE clause so that SQLite reads
		// the exec's own waves by primary key, not every pending wave of
		// every exec through exec_waves_due.
		ColumnExpr("(SELECT COALESCE(SUM(CASE WHEN w.state = ? THEN 1 ELSE 0 END), 0) FROM exec_waves AS w WHERE w.exec_id = execution.exec_id) AS pending_waves", storage.WavePending).
		Where("execution.exec_id = ?", id)
}

// settle finishes exec id when its answers allow it, and returns whether it
// did and the exec's current progress. With expire set (the deadline has
// passed), missing answers make it expired instead of leaving it running.
//
// The counters decide when to look: success_count + failure_count counts
// the exec_expected rows answered (they move in the transaction that
// fills a row) and expected_pcs is the number of rows (the engine writes
// both together), so while the counters fall short of expected_pcs the
// exec waits and nothing is read but its own row. The exact count over
// exec_expected then confirms, once per exec, before anything is final.
func settle(ctx context.Context, tx bun.IDB, id string, now time.Time, expire bool) (bool, *messages.ExecProgressed, error) {
	var st execState
	if err := settleQuery(tx, &st, id).Scan(ctx); err != nil {
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
	mayBeDone := ex.ExpectedPcs > 0 && ex.SuccessCount+ex.FailureCount >= ex.ExpectedPcs
	if inFlight && st.PendingWaves == 0 && (expire || mayBeDone) {
		x, err := countExpected(ctx, tx, id)
		if err != nil {
			return false, nil, err
		}
		switch {
		case x.Rows > 0 && x.Unanswered == 0:
			next = finalStatus(ex)
			finished = clampTime(x.LastAnswer.Time, ex.CreatedAt.Time, now)
		case expire && x.Unanswered > 0:
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
		ctx, cancel := s.env.opContext()
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
