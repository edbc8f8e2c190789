package exec

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/uptrace/bun"

	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/execrecord"
)

// Success-gated rollout waves (issue 20). With rollout.gate every wave
// after the first is "gated": when it falls due, the engine judges the
// gate on the answers of the PCs the exec expected so far (the earlier
// waves'), read from the executions row the results projector keeps:
//
//   - met for certain (even if every silent PC failed): published now;
//   - failed for certain (even if every silent PC succeeded): held;
//   - otherwise it waits for answers until judge_at (the previous wave's
//     publish time plus gate.wait, default the job's timeout plus jitter),
//     judged again on every answer (ExecProgressed) and at judge_at, when
//     a PC still silent counts as failed.
//
// A held wave (and every later wave of its exec) is not published; the
// exec's status is held, which the projectors leave alone, until an
// operator resumes (the first held wave goes out past its gate, the later
// ones are judged again in their turn) or aborts (the remaining waves are
// cancelled and the exec is cancelled). A late answer judges a held wave
// again, and it goes out by itself once its gate is met.
//
// Everything is in exec_waves (gated, judge_at, reason, resumed_by) and in
// the exec's record, so a restart keeps a held wave held and judges a wave
// that was waiting at its judge_at (at once if that passed meanwhile).
// Gated waves of one exec go out in order: one is not judged while an
// earlier one is still pending.

// verdict is the outcome of judging a gate.
type verdict int

const (
	verdictPass verdict = iota
	verdictWait
	verdictHold
)

type judgement struct {
	verdict verdict
	// judgeAt is when a waiting wave is judged at the latest.
	judgeAt time.Time
	// reason says why a wave is held.
	reason string
}

// gateFloatSlack absorbs the rounding of min_success × expected.
const gateFloatSlack = 1e-9

// judge judges the gate of due wave w of exec ex at now.
func (e *engine) judge(ctx context.Context, ex *storage.Execution, w *storage.ExecWave, now time.Time) (judgement, error) {
	var fp messages.FanoutPlan
	if err := json.Unmarshal(ex.Plan, &fp); err != nil {
		return judgement{}, fmt.Errorf("%w: exec %s plan: %v", errPermanent, ex.ExecID, err)
	}
	if fp.Rollout == nil || fp.Rollout.Gate == nil {
		return judgement{verdict: verdictPass}, nil // gated rows come from a gated plan; nothing to judge
	}
	g := fp.Rollout.Gate
	var earlier []storage.ExecWave
	if err := e.Store.R.NewSelect().Model(&earlier).Where("exec_id = ?", ex.ExecID).
		Where("wave_index < ?", w.WaveIndex).Order("wave_index").Scan(ctx); err != nil {
		return judgement{}, fmt.Errorf("load earlier waves of exec %s: %w", ex.ExecID, err)
	}
	var groups []string
	last := w.DueAt.Time
	for _, p := range earlier {
		if p.State == storage.WavePublished {
			groups = append(groups, p.GroupName)
			if !p.PublishedAt.IsZero() {
				last = p.PublishedAt.Time
			}
		}
	}
	wait, set, err := g.WaitDuration()
	if err != nil {
		return judgement{}, fmt.Errorf("%w: exec %s gate wait: %v", errPermanent, ex.ExecID, err)
	}
	if !set {
		wait = time.Duration(ex.TimeoutSecs) * time.Second
		if ex.JitterSecs != nil {
			wait += time.Duration(*ex.JitterSecs) * time.Second
		}
	}
	c := gateCounts{n: ex.ExpectedPcs, s: ex.SuccessCount, f: ex.FailureCount}
	c.u = max(c.n-c.s-c.f, 0)
	switch {
	case !c.canPass(g):
		return judgement{verdict: verdictHold, reason: c.reason(g, groups, 0)}, nil
	case c.passes(g):
		return judgement{verdict: verdictPass}, nil
	case now.Before(last.Add(wait)):
		return judgement{verdict: verdictWait, judgeAt: last.Add(wait)}, nil
	}
	// The wait is over and the gate is met only if silent PCs succeed:
	// they count as failed, which is what passes already assumed.
	return judgement{verdict: verdictHold, reason: c.reason(g, groups, wait)}, nil
}

// gateCounts are the earlier waves' expected PCs (n) and how many of
// them succeeded (s), failed (f) and have not answered (u).
type gateCounts struct{ n, s, f, u int }

// passes reports whether the gate is met whatever the unanswered PCs
// answer: counted as failed against max_failed, and not as successes.
func (c gateCounts) passes(g *messages.Gate) bool {
	if g.MaxFailed != nil && uint64(c.f+c.u) > *g.MaxFailed {
		return false
	}
	return g.MinSuccess == nil || c.successShare(*g.MinSuccess, c.s)
}

// canPass reports whether the gate can still be met if every unanswered
// PC succeeds.
func (c gateCounts) canPass(g *messages.Gate) bool {
	if g.MaxFailed != nil && uint64(c.f) > *g.MaxFailed {
		return false
	}
	return g.MinSuccess == nil || c.successShare(*g.MinSuccess, c.s+c.u)
}

// successShare reports whether ok of the n expected PCs reach share min.
// Earlier waves that expected nobody prove nothing: only a min_success of
// 0 passes them.
func (c gateCounts) successShare(min float64, ok int) bool {
	if c.n == 0 {
		return min == 0
	}
	return float64(ok) >= min*float64(c.n)-gateFloatSlack
}

// reason is the operator's text for a held wave, e.g. "wave canary: 3 of
// 10 failed, max_failed 1". silentFor > 0 says the wait is over and the
// silent PCs count as failed.
func (c gateCounts) reason(g *messages.Gate, groups []string, silentFor time.Duration) string {
	prefix := "wave " + strings.Join(groups, ", ")
	if len(groups) > 1 {
		prefix = "waves " + strings.Join(groups, ", ")
	} else if len(groups) == 0 {
		prefix = "earlier waves"
	}
	silent := ""
	if silentFor > 0 && c.u > 0 {
		silent = fmt.Sprintf("%d did not answer within %s", c.u, silentFor)
	}
	var parts []string
	if g.MaxFailed != nil {
		failed := uint64(c.f)
		if silentFor > 0 {
			failed += uint64(c.u)
		}
		if failed > *g.MaxFailed {
			p := fmt.Sprintf("%d of %d failed", c.f, c.n)
			if silent != "" {
				p += " and " + silent
			}
			parts = append(parts, p+fmt.Sprintf(", max_failed %d", *g.MaxFailed))
		}
	}
	if g.MinSuccess != nil {
		ok := c.s
		if silentFor == 0 {
			ok += c.u // judged early: even if the silent PCs succeed
		}
		if !c.successShare(*g.MinSuccess, ok) {
			var p string
			if c.n == 0 {
				p = "expected no PCs"
			} else {
				p = fmt.Sprintf("%d of %d succeeded", c.s, c.n)
				if silent != "" {
					p += " (" + silent + ")"
				} else if c.u > 0 {
					p += fmt.Sprintf(" (%d not answered)", c.u)
				}
			}
			parts = append(parts, p+", min_success "+formatShare(*g.MinSuccess))
		}
	}
	return prefix + ": " + strings.Join(parts, "; ")
}

func formatShare(v float64) string {
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.4f", v), "0"), ".")
}

// gateWave judges due gated wave w and acts on anything but a pass: it
// records the wait (judge_at) or holds the wave. It reports whether w may
// be published now.
func (e *engine) gateWave(ctx context.Context, sys *actor.ActorSystem, w *storage.ExecWave, now time.Time) (bool, error) {
	// Watched before its counts are read: an answer committed after the
	// read is forwarded, one committed before is in the counts.
	e.watch(w.ExecID)
	ex, err := e.loadExec(ctx, w.ExecID)
	if err != nil {
		return false, err
	}
	j, err := e.judge(ctx, ex, w, now)
	if err != nil {
		return false, err
	}
	switch j.verdict {
	case verdictPass:
		return true, nil
	case verdictWait:
		if w.JudgeAt.Equal(j.judgeAt) {
			return false, nil
		}
		err := e.Store.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
			_, err := tx.NewUpdate().Model(w).Set("judge_at = ?", storage.T(j.judgeAt)).WherePK().
				Where("state = ?", storage.WavePending).Exec(ctx)
			return err
		})
		if err != nil {
			return false, fmt.Errorf("record the gate wait of wave %d of exec %s: %w", w.WaveIndex, w.ExecID, err)
		}
		w.JudgeAt = storage.T(j.judgeAt)
		e.log.Info("rollout wave waits for answers to its gate", "exec_id", w.ExecID, "wave", w.WaveIndex,
			"group", w.GroupName, "judge_at", j.judgeAt)
		e.storeRecord(ctx, w.ExecID)
		e.progressedWaves(ctx, sys, w.ExecID, now)
		return false, nil
	}
	return false, e.hold(ctx, sys, w, j.reason, now)
}

// hold holds wave w and every later pending wave of its exec, and the
// exec with them.
func (e *engine) hold(ctx context.Context, sys *actor.ActorSystem, w *storage.ExecWave, reason string, now time.Time) error {
	err := e.Store.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.NewUpdate().Model(w).Set("state = ?", storage.WaveHeld).Set("reason = ?", reason).
			Set("judge_at = NULL").WherePK().Where("state = ?", storage.WavePending).Exec(ctx); err != nil {
			return err
		}
		if _, err := tx.NewUpdate().Model((*storage.ExecWave)(nil)).Set("state = ?", storage.WaveHeld).
			Where("exec_id = ?", w.ExecID).Where("wave_index > ?", w.WaveIndex).
			Where("state = ?", storage.WavePending).Exec(ctx); err != nil {
			return err
		}
		_, err := tx.NewUpdate().Model((*storage.Execution)(nil)).Set("status = ?", storage.ExecHeld).
			Set("updated_at = ?", storage.T(now)).Where("exec_id = ?", w.ExecID).
			Where("status IN (?)", bun.List([]string{storage.ExecPending, storage.ExecRunning})).Exec(ctx)
		return err
	})
	if err != nil {
		return fmt.Errorf("hold wave %d of exec %s: %w", w.WaveIndex, w.ExecID, err)
	}
	e.Metrics.wavesHeld.Inc()
	e.log.Warn("rollout wave held: its gate is not met", "exec_id", w.ExecID, "wave", w.WaveIndex,
		"group", w.GroupName, "reason", reason)
	e.storeRecord(ctx, w.ExecID)
	e.progressedWaves(ctx, sys, w.ExecID, now)
	return nil
}

// rejudge judges exec id's gate again after new answers: a wave waiting
// for them may go out early, and a held wave goes out once its gate is
// met after all (a late answer); a held wave's reason follows the counts.
func (e *engine) rejudge(ctx context.Context, sys *actor.ActorSystem, execID string) {
	now := e.Clock.Now().UTC()
	var waves []storage.ExecWave
	if err := e.Store.R.NewSelect().Model(&waves).Where("exec_id = ?", execID).
		Where("state IN (?)", bun.List([]string{storage.WavePending, storage.WaveHeld})).
		Order("wave_index").Limit(1).Scan(ctx); err != nil {
		e.log.Error("load waves to judge again", "exec_id", execID, "err", err)
		return
	}
	if len(waves) == 0 {
		return
	}
	w := &waves[0]
	if !w.Gated || w.ResumedBy != nil || w.State == storage.WavePending && w.JudgeAt.IsZero() {
		return // not waiting on answers: judged when due
	}
	ex, err := e.loadExec(ctx, execID)
	if err != nil {
		e.log.Error("judge a rollout gate again", "exec_id", execID, "err", err)
		return
	}
	j, err := e.judge(ctx, ex, w, now)
	if err != nil {
		e.log.Error("judge a rollout gate again", "exec_id", execID, "err", err)
		return
	}
	if w.State == storage.WavePending {
		// Waiting for answers: decided early. A pass is published by the
		// wave timer (with its retries), made due now; a hold is recorded.
		switch j.verdict {
		case verdictPass:
			err = e.Store.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
				_, err := tx.NewUpdate().Model(w).Set("judge_at = ?", storage.T(now)).WherePK().
					Where("state = ?", storage.WavePending).Exec(ctx)
				return err
			})
			if err == nil {
				e.rearm(ctx)
			}
		case verdictHold:
			err = e.hold(ctx, sys, w, j.reason, now)
		}
		if err != nil {
			e.log.Error("act on a rollout gate judged again", "exec_id", execID, "err", err)
		}
		return
	}
	switch {
	case j.verdict == verdictPass:
		e.log.Info("held rollout wave meets its gate after late answers", "exec_id", execID, "wave", w.WaveIndex)
		if _, err := e.unhold(ctx, execID, nil, now); err != nil {
			e.log.Error("release a held wave", "exec_id", execID, "err", err)
			return
		}
		e.publishDue(ctx, sys)
		e.rearm(ctx)
	case j.verdict == verdictHold && (w.Reason == nil || *w.Reason != j.reason):
		err := e.Store.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
			_, err := tx.NewUpdate().Model(w).Set("reason = ?", j.reason).WherePK().
				Where("state = ?", storage.WaveHeld).Exec(ctx)
			return err
		})
		if err != nil {
			e.log.Error("update the reason of a held wave", "exec_id", execID, "err", err)
			return
		}
		e.storeRecord(ctx, execID)
		e.progressedWaves(ctx, sys, execID, now)
	}
}

// unhold makes exec id's held waves pending again; the first one past its
// gate when resumedBy is set (an operator's resume), judged again
// otherwise. The exec goes back to pending or running. It returns the
// first held wave.
func (e *engine) unhold(ctx context.Context, execID string, resumedBy *string, now time.Time) (*storage.ExecWave, error) {
	first := new(storage.ExecWave)
	err := e.Store.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		err := tx.NewSelect().Model(first).Where("exec_id = ?", execID).Where("state = ?", storage.WaveHeld).
			Order("wave_index").Limit(1).Scan(ctx)
		if errors.Is(err, sql.ErrNoRows) {
			return messages.Conflictf("execution '%s' has no held rollout wave", execID)
		}
		if err != nil {
			return err
		}
		q := tx.NewUpdate().Model(first).Set("state = ?", storage.WavePending).Set("judge_at = NULL")
		if resumedBy != nil {
			q = q.Set("resumed_by = ?", *resumedBy)
		} else {
			q = q.Set("reason = NULL")
		}
		if _, err := q.WherePK().Exec(ctx); err != nil {
			return err
		}
		if _, err := tx.NewUpdate().Model((*storage.ExecWave)(nil)).Set("state = ?", storage.WavePending).
			Set("reason = NULL").Where("exec_id = ?", execID).Where("state = ?", storage.WaveHeld).Exec(ctx); err != nil {
			return err
		}
		_, err = tx.NewUpdate().Model((*storage.Execution)(nil)).
			Set("status = CASE WHEN success_count + failure_count > 0 THEN ? ELSE ? END", storage.ExecRunning, storage.ExecPending).
			Set("updated_at = ?", storage.T(now)).Where("exec_id = ?", execID).Where("status = ?", storage.ExecHeld).Exec(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	first.State, first.ResumedBy = storage.WavePending, resumedBy
	return first, nil
}

// Resume asks the engine to publish an exec's first held wave past its
// gate; the later held waves are judged again in their turn. It replies
// *ResumeReply.
type Resume struct {
	ExecID string
	// By is who resumes, in executions.initiated_by form.
	By string
}

// ResumeReply answers Resume. Err is ErrNotFound or ErrConflict (no held
// wave) with an operator-facing text.
type ResumeReply struct {
	ExecID    string `json:"exec_id"`
	WaveIndex int    `json:"wave_index"`
	Group     string `json:"group"`
	// Published says the wave went out before this answer (false: it is
	// pending, retried after a publish failure).
	Published bool   `json:"published"`
	Status    string `json:"status"`
	Err       error  `json:"-"`
}

// Abort asks the engine to cancel an exec's remaining waves (held or
// pending) and the exec itself; it replies *CancelReply.
type Abort struct {
	ExecID string
}

func (e *engine) resume(ctx context.Context, sys *actor.ActorSystem, m *Resume) (ResumeReply, *execrecord.Record) {
	reply := ResumeReply{ExecID: m.ExecID}
	if _, err := e.loadExecChecked(ctx, m.ExecID); err != nil {
		reply.Err = err
		return reply, nil
	}
	now := e.Clock.Now().UTC()
	by := m.By
	w, err := e.unhold(ctx, m.ExecID, &by, now)
	if err != nil {
		if !errors.Is(err, messages.ErrConflict) {
			err = fmt.Errorf("resume exec %s: %w", m.ExecID, err)
		}
		reply.Err = err
		return reply, nil
	}
	reply.WaveIndex, reply.Group = w.WaveIndex, w.GroupName
	e.log.Info("held rollout wave resumed", "exec_id", m.ExecID, "wave", w.WaveIndex, "group", w.GroupName, "by", by)
	// Publish it before answering, so the operator sees it out.
	e.publishDue(ctx, sys)
	e.rearm(ctx)
	var state string
	if err := e.Store.R.NewSelect().Model((*storage.ExecWave)(nil)).Column("state").
		Where("exec_id = ?", m.ExecID).Where("wave_index = ?", w.WaveIndex).Scan(ctx, &state); err == nil {
		reply.Published = state == storage.WavePublished
	}
	ex, err := e.loadExec(ctx, m.ExecID)
	if err == nil {
		reply.Status = ex.Status
	}
	if !reply.Published {
		e.progressedWaves(ctx, sys, m.ExecID, now)
	}
	return reply, e.loadRecord(ctx, m.ExecID)
}

// abort cancels exec id's held and pending waves and the exec: unlike a
// cancel, which leaves an exec that published something to its results,
// an abort is the operator's "stop this rollout".
func (e *engine) abort(ctx context.Context, sys *actor.ActorSystem, execID string) (CancelReply, *execrecord.Record) {
	reply := CancelReply{ExecID: execID}
	if _, err := e.loadExecChecked(ctx, execID); err != nil {
		reply.Err = err
		return reply, nil
	}
	now := e.Clock.Now().UTC()
	err := e.Store.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		n, err := cancelRemaining(ctx, tx, execID)
		if reply.CancelledWaves = n; err != nil || n == 0 {
			return err
		}
		_, err = tx.NewUpdate().Model((*storage.Execution)(nil)).
			Set("status = ?", storage.ExecCancelled).Set("finished_at = ?", storage.T(now)).
			Set("updated_at = ?", storage.T(now)).Where("exec_id = ?", execID).
			Where("status IN (?)", bun.List([]string{storage.ExecPending, storage.ExecRunning, storage.ExecHeld})).Exec(ctx)
		return err
	})
	if err != nil {
		reply.Err = fmt.Errorf("abort exec %s: %w", execID, err)
		return reply, nil
	}
	ex, err := e.loadExec(ctx, execID)
	if err != nil {
		reply.Err = err
		return reply, nil
	}
	reply.Status = ex.Status
	if reply.CancelledWaves == 0 {
		reply.Err = messages.Conflictf("execution '%s' has no held or pending rollout wave to abort", execID)
		return reply, nil
	}
	e.rearm(ctx)
	e.log.Info("rollout aborted", "exec_id", execID, "waves", reply.CancelledWaves)
	e.progressedWaves(ctx, sys, execID, now)
	return reply, e.loadRecord(ctx, execID)
}

// cancelRemaining cancels exec id's pending and held waves and returns
// how many.
func cancelRemaining(ctx context.Context, tx bun.Tx, execID string) (int, error) {
	res, err := tx.NewUpdate().Model((*storage.ExecWave)(nil)).Set("state = ?", storage.WaveCancelled).
		Set("judge_at = NULL").Where("exec_id = ?", execID).
		Where("state IN (?)", bun.List([]string{storage.WavePending, storage.WaveHeld})).Exec(ctx)
	if err != nil {
		return 0, err
	}
	n, err := res.RowsAffected()
	return int(n), err
}

func (e *engine) loadExec(ctx context.Context, execID string) (*storage.Execution, error) {
	ex := new(storage.Execution)
	if err := e.Store.R.NewSelect().Model(ex).Where("exec_id = ?", execID).Scan(ctx); err != nil {
		return nil, fmt.Errorf("load exec %s: %w", execID, err)
	}
	return ex, nil
}

// loadExecChecked is loadExec for an id from an operator: an invalid or
// unknown id is the operator's error.
func (e *engine) loadExecChecked(ctx context.Context, execID string) (*storage.Execution, error) {
	if err := messages.ValidateToken("exec id", execID); err != nil {
		return nil, err
	}
	ex, err := e.loadExec(ctx, execID)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, messages.NotFoundf("execution '%s' not found", execID)
	}
	return ex, err
}

// watched are the execs whose gate waits on answers (a due wave waiting,
// or a held one): the results projector's ExecProgressed for them is
// forwarded to the engine. It is read by the event subscriber, written by
// the engine after each change of waves.
func (e *engine) refreshWatched(ctx context.Context) {
	var ids []string
	err := e.Store.R.NewSelect().Model((*storage.ExecWave)(nil)).Column("exec_id").Distinct().
		WhereGroup(" AND ", func(q *bun.SelectQuery) *bun.SelectQuery {
			return q.Where("state = ?", storage.WaveHeld).
				WhereOr("state = ? AND judge_at IS NOT NULL", storage.WavePending)
		}).Scan(ctx, &ids)
	if err != nil {
		e.log.Error("load the rollouts waiting on a gate", "err", err)
		return // keep the previous set
	}
	set := make(map[string]bool, len(ids))
	for _, id := range ids {
		set[id] = true
	}
	e.watched.Store(&set)
}

// watch adds exec id to the watched set until the next refresh.
func (e *engine) watch(execID string) {
	set := map[string]bool{execID: true}
	if old := e.watched.Load(); old != nil {
		if (*old)[execID] {
			return
		}
		for id := range *old {
			set[id] = true
		}
	}
	e.watched.Store(&set)
}

// gateAnswers tells the engine that exec id, whose gate waits on answers,
// got some.
type gateAnswers struct{ execID string }

// forwardAnswers is the EventStream filter of the projectors' progress
// events: only those of watched execs reach the engine's mailbox (a
// fan-out to 10 000 PCs makes many).
func (e *engine) forwardAnswers(ev *messages.ExecProgressed) *gateAnswers {
	if ev.Waves != nil {
		return nil // the engine's own
	}
	if set := e.watched.Load(); set != nil && (*set)[ev.ExecID] {
		return &gateAnswers{execID: ev.ExecID}
	}
	return nil
}

// WaveRow is an exec_waves row with the answers to its Command.
type WaveRow struct {
	storage.ExecWave `bun:",extend"`
	Success          int `bun:"success" json:"success"`
	Failure          int `bun:"failure" json:"failure"`
}

// LoadWaveRows returns exec id's rollout waves with the answers to each
// (none: an empty list).
func LoadWaveRows(ctx context.Context, db bun.IDB, execID string) ([]WaveRow, error) {
	rows := []WaveRow{}
	err := db.NewSelect().Model(&rows).ColumnExpr("exec_wave.*").
		ColumnExpr("(SELECT COUNT(*) FROM exec_expected AS x WHERE x.exec_id = exec_wave.exec_id AND x.request_id = exec_wave.request_id AND x.exit_code = 0) AS success").
		ColumnExpr("(SELECT COUNT(*) FROM exec_expected AS x WHERE x.exec_id = exec_wave.exec_id AND x.request_id = exec_wave.request_id AND x.exit_code <> 0) AS failure").
		Where("exec_wave.exec_id = ?", execID).Order("exec_wave.wave_index").Scan(ctx)
	if err != nil {
		return nil, fmt.Errorf("load waves of exec %s: %w", execID, err)
	}
	return rows, nil
}

// LoadWaves returns exec id's rollout waves as the live events show them.
func LoadWaves(ctx context.Context, db bun.IDB, execID string) ([]messages.WaveProgress, error) {
	rows, err := LoadWaveRows(ctx, db, execID)
	if err != nil {
		return nil, err
	}
	out := make([]messages.WaveProgress, len(rows))
	for i, r := range rows {
		p := messages.WaveProgress{Index: r.WaveIndex, Group: r.GroupName, State: r.State, DueAt: r.DueAt.UTC(),
			Gated: r.Gated, Reason: r.Reason, ResumedBy: r.ResumedBy, Expected: r.ExpectedPcs,
			Success: r.Success, Failure: r.Failure}
		if !r.JudgeAt.IsZero() {
			t := r.JudgeAt.UTC()
			p.JudgeAt = &t
		}
		out[i] = p
	}
	return out, nil
}

// progressedWaves publishes ExecProgressed for exec id with its waves.
func (e *engine) progressedWaves(ctx context.Context, sys *actor.ActorSystem, execID string, at time.Time) {
	ex, err := e.loadExec(ctx, execID)
	if err != nil {
		e.log.Error("exec progress event not published", "exec_id", execID, "err", err)
		return
	}
	waves, err := LoadWaves(ctx, e.Store.R, execID)
	if err != nil {
		e.log.Error("exec progress event without its waves", "exec_id", execID, "err", err)
		waves = []messages.WaveProgress{}
	}
	sys.EventStream.Publish(&messages.ExecProgressed{
		ExecID: ex.ExecID, JobID: ex.JobID, Status: ex.Status, Expected: ex.ExpectedPcs,
		Success: ex.SuccessCount, Failure: ex.FailureCount, At: at, Waves: waves,
	})
}

// immediateWaveExpected records how many PCs each wave published with
// the exec expects: all of them for a single such wave, otherwise each
// group resolved on its own (rollouts are rare; a query per wave is fine).
func (e *engine) immediateWaveExpected(ctx context.Context, p *plan, all []string, now time.Time) error {
	var idx []int
	for i, w := range p.waves {
		if w.RequestID != nil {
			idx = append(idx, i)
		}
	}
	for _, i := range idx {
		n := len(all)
		if len(idx) > 1 {
			pcs, err := storage.ResolveTargetPCs(ctx, e.Store.R, messages.Target{Groups: []string{p.waves[i].GroupName}}, now)
			if err != nil {
				return err
			}
			n = len(pcs)
		}
		p.waves[i].ExpectedPcs = &n
	}
	return nil
}
