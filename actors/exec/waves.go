package exec

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/execrecord"
)

// wavesPerRound bounds the waves published in one message, so that a long
// backlog after downtime does not keep the engine from answering exec
// requests; the rest follow in the next message, sent at once.
const wavesPerRound = 50

// rearm points the wave timer at the earliest pending wave (held back by a
// publish backoff) and returns the number of pending waves. The store is
// the only record of waves: the timer carries no wave, so a cancel, a
// restart or a second exec never leaves a stale timer acting on its own.
func (e *engine) rearm(ctx context.Context) int {
	if e.Leads != nil && !e.Leads() {
		// Another replica leads and publishes the waves.
		e.disarm()
		return 0
	}
	var n int
	var next storage.Time
	// A gated wave waiting for answers is next looked at when its wait is
	// over (judge_at); one behind an earlier pending wave of its exec is
	// not looked at before that wave is done (gate.go).
	err := e.Store.R.NewSelect().Model((*storage.ExecWave)(nil)).
		ColumnExpr("count(*)").
		ColumnExpr("min(CASE WHEN "+waveReady+" THEN COALESCE(exec_wave.judge_at, exec_wave.due_at) END)", false, storage.WavePending).
		Where("exec_wave.state = ?", storage.WavePending).Scan(ctx, &n, &next)
	e.refreshWatched(ctx)
	if err != nil {
		// Keep trying rather than lose track of the waves.
		e.log.Error("load pending rollout waves; retrying", "retry_in", e.RetryBackoff, "err", err)
		n, next = 1, storage.T(e.Clock.Now().Add(e.RetryBackoff))
	} else {
		e.Metrics.pendingWaves.Set(float64(n))
	}
	if n == 0 || next.IsZero() {
		e.disarm()
		return n
	}
	at := maxTime(next.Time, e.backoffUntil)
	if e.armed && e.armedAt.Equal(at) {
		return n
	}
	e.disarm()
	gen, self, root := e.gen, e.self, e.sys.Root
	e.armed, e.armedAt = true, at
	if d := at.Sub(e.Clock.Now()); d > 0 {
		e.timer = e.Clock.AfterFunc(d, func() { root.Send(self, &wavesDue{gen: gen}) })
	} else {
		root.Send(self, &wavesDue{gen: gen})
	}
	return n
}

// disarm stops the wave timer and invalidates a wavesDue already sent.
func (e *engine) disarm() {
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
	e.armed = false
	e.gen++
}

// waveReady is the SQL condition (arguments: false, the pending state)
// that a pending wave of alias exec_wave may be looked at: it is not gated,
// or no earlier wave of its exec is pending (gated waves go out in order).
const waveReady = "(exec_wave.gated = ? OR NOT EXISTS (SELECT 1 FROM exec_waves AS e" +
	" WHERE e.exec_id = exec_wave.exec_id AND e.wave_index < exec_wave.wave_index AND e.state = ?))"

// errPermanent marks a wave that can never be published (its exec's
// manifest snapshot is unusable); it is failed instead of retried.
var errPermanent = errors.New("wave cannot be published")

// errClaimed means another engine (a replica sharing the database) took
// the wave between the look-up and the claim; it publishes it.
var errClaimed = errors.New("wave claimed by another engine")

// publishDue publishes every wave whose time has come.
func (e *engine) publishDue(ctx context.Context, sys *actor.ActorSystem) {
	now := e.Clock.Now().UTC()
	if now.Before(e.backoffUntil) {
		return
	}
	var due []storage.ExecWave
	err := e.Store.R.NewSelect().Model(&due).
		Where("exec_wave.state = ?", storage.WavePending).
		Where("COALESCE(exec_wave.judge_at, exec_wave.due_at) <= ?", storage.T(now)).
		Where(waveReady, false, storage.WavePending).
		OrderExpr("exec_wave.due_at, exec_wave.exec_id, exec_wave.wave_index").Limit(wavesPerRound).Scan(ctx)
	if err != nil {
		e.log.Error("load due rollout waves; retrying", "retry_in", e.RetryBackoff, "err", err)
		e.backoffUntil = now.Add(e.RetryBackoff)
		return
	}
	for i := range due {
		w := &due[i]
		ok := true
		var err error
		if w.Gated && w.ResumedBy == nil {
			ok, err = e.gateWave(ctx, sys, w, now)
		}
		if ok && err == nil {
			err = e.publishWave(ctx, sys, w, now)
		}
		if errors.Is(err, errClaimed) {
			e.log.Debug("rollout wave claimed by another engine", "exec_id", w.ExecID, "wave", w.WaveIndex)
			continue
		}
		if errors.Is(err, errPermanent) {
			e.log.Error("rollout wave failed for good", "exec_id", w.ExecID, "wave", w.WaveIndex, "group", w.GroupName, "err", err)
			if ferr := e.setWaveState(ctx, w, storage.WaveFailed); ferr != nil {
				e.log.Error("mark rollout wave failed", "exec_id", w.ExecID, "wave", w.WaveIndex, "err", ferr)
			} else {
				e.storeRecord(ctx, w.ExecID)
			}
			continue
		}
		if err != nil {
			// Most likely NATS or the database is away: hold every wave
			// back for a while and try again, in due order.
			e.Metrics.publishFailed.Inc()
			e.log.Error("rollout wave not published; will retry", "exec_id", w.ExecID, "wave", w.WaveIndex,
				"group", w.GroupName, "retry_in", e.RetryBackoff, "err", err)
			e.backoffUntil = now.Add(e.RetryBackoff)
			return
		}
	}
}

// publishWave publishes one due wave: it resolves the wave's expected PCs
// now (group membership and liveness at the time the wave goes out),
// records the request_id and those PCs before publishing, as the first
// fan-out does, then publishes the exec's manifest snapshot to
// commands.group.<group>. The version pin is not written again: if the job
// was edited and fired since, re-pinning the old version would make agents
// drop the newer exec's Commands; an edit belongs to the next exec.
func (e *engine) publishWave(ctx context.Context, sys *actor.ActorSystem, w *storage.ExecWave, now time.Time) error {
	ex := new(storage.Execution)
	if err := e.Store.R.NewSelect().Model(ex).Where("exec_id = ?", w.ExecID).Scan(ctx); err != nil {
		return fmt.Errorf("load exec %s: %w", w.ExecID, err)
	}
	var m messages.Manifest
	if len(ex.Manifest) == 0 {
		return fmt.Errorf("%w: exec %s has no manifest snapshot", errPermanent, ex.ExecID)
	}
	if err := json.Unmarshal(ex.Manifest, &m); err != nil {
		return fmt.Errorf("%w: exec %s manifest snapshot: %v", errPermanent, ex.ExecID, err)
	}
	fresh := w.RequestID == nil
	rid := uuid.NewString()
	if !fresh {
		rid = *w.RequestID // a retry keeps the request_id already recorded
	}
	cmd, err := m.NewCommand(rid, &ex.ExecID, ex.JitterSecs)
	if err != nil {
		return fmt.Errorf("%w: %v", errPermanent, err)
	}
	payload, err := json.Marshal(cmd)
	if err != nil {
		return fmt.Errorf("%w: encode command: %v", errPermanent, err)
	}
	subject := messages.CommandsGroupSubject(w.GroupName)
	expected, err := storage.ResolveTargetPCs(ctx, e.Store.R, messages.Target{Groups: []string{w.GroupName}}, now)
	if err != nil {
		return err
	}
	dl := storage.T(deadline(now, ex.TimeoutSecs, ex.JitterSecs))
	err = e.Store.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		// The claim: with several engines on one database (replicas, or
		// an old leader still running), each may find the wave due. The
		// one whose compare-and-set of due_at succeeds publishes it; the
		// others see it moved and leave it. The new due_at is a lease: if
		// the claimer dies before recording the wave published, it falls
		// due again then, and is retried under the request_id recorded
		// here (never a second one).
		res, err := tx.NewUpdate().Model((*storage.ExecWave)(nil)).
			Set("request_id = ?", rid).Set("due_at = ?", storage.T(now.Add(e.RetryBackoff))).
			Where("exec_id = ? AND wave_index = ?", w.ExecID, w.WaveIndex).
			Where("state = ?", storage.WavePending).Where("due_at = ?", w.DueAt).
			Where("COALESCE(request_id, ?) = ?", rid, rid).Exec(ctx)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return errors.Join(errClaimed, err)
		}
		if fresh {
			req := &storage.PublishedRequest{RequestID: rid, ExecID: ex.ExecID, Subject: subject}
			if _, err := tx.NewInsert().Model(req).On("CONFLICT DO NOTHING").Exec(ctx); err != nil {
				return err
			}
		}
		exp := make([]storage.ExecExpected, len(expected))
		for i, pc := range expected {
			exp[i] = storage.ExecExpected{ExecID: ex.ExecID, PcID: pc}
		}
		if err := storage.InsertChunked(ctx, tx, exp, true); err != nil {
			return err
		}
		_, err = tx.NewUpdate().Model((*storage.Execution)(nil)).
			Set("expected_pcs = (SELECT count(*) FROM exec_expected WHERE exec_id = ?)", ex.ExecID).
			Set("deadline_at = CASE WHEN deadline_at < ? THEN ? ELSE deadline_at END", dl, dl).
			Set("updated_at = ?", storage.T(now)).
			Where("exec_id = ?", ex.ExecID).Exec(ctx)
		return err
	})
	if errors.Is(err, errClaimed) {
		return errClaimed
	}
	if err != nil {
		return fmt.Errorf("record wave %d of exec %s: %w", w.WaveIndex, ex.ExecID, err)
	}
	w.RequestID = &rid
	if _, _, err := e.publish([]outgoing{{subject: subject, requestID: rid, payload: payload}}); err != nil {
		return err
	}
	e.Metrics.published.Inc()

	var subjects []string
	if err := json.Unmarshal(ex.Subjects, &subjects); err != nil {
		subjects = nil // rewritten below; the old value was not ours to keep
	}
	subjects = append(subjects, subject)
	subjectsJSON, err := json.Marshal(subjects)
	if err != nil {
		return fmt.Errorf("%w: encode subjects: %v", errPermanent, err)
	}
	at := e.Clock.Now().UTC()
	err = e.Store.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		// due_at goes back from the claim's lease to the wave's own time.
		if _, err := tx.NewUpdate().Model(w).Set("state = ?", storage.WavePublished).
			Set("published_at = ?", storage.T(at)).Set("judge_at = NULL").
			Set("expected_pcs = ?", len(expected)).Set("due_at = ?", w.DueAt).WherePK().Exec(ctx); err != nil {
			return err
		}
		if _, err := tx.NewUpdate().Model((*storage.PublishedRequest)(nil)).Set("published_at = ?", storage.T(at)).
			Where("request_id = ?", rid).Exec(ctx); err != nil {
			return err
		}
		_, err := tx.NewUpdate().Model((*storage.Execution)(nil)).
			Set("subjects = ?", string(subjectsJSON)).Set("target_count = target_count + 1").
			Set("updated_at = ?", storage.T(at)).Where("exec_id = ?", ex.ExecID).Exec(ctx)
		return err
	})
	if err != nil {
		// The wave is out; recording it failed. Leaving it pending would
		// publish it twice, so log loudly and move on.
		e.log.Error("rollout wave published but not recorded", "exec_id", ex.ExecID, "wave", w.WaveIndex, "err", err)
		return nil
	}
	e.log.Info("rollout wave published", "exec_id", ex.ExecID, "wave", w.WaveIndex, "subject", subject, "expected_pcs", len(expected))
	e.storeRecord(ctx, ex.ExecID)
	e.progressedWaves(ctx, sys, ex.ExecID, at)
	return nil
}

func (e *engine) setWaveState(ctx context.Context, w *storage.ExecWave, state string) error {
	return e.Store.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.NewUpdate().Model(w).Set("state = ?", state).WherePK().Exec(ctx)
		return err
	})
}

// cancel cancels an exec's pending waves and returns the exec's new record
// (nil when nothing changed). The exec becomes cancelled only when nothing
// of it was published; otherwise Commands are out and their results still
// count, so the status stays the projector's.
func (e *engine) cancel(ctx context.Context, sys *actor.ActorSystem, execID string) (CancelReply, *execrecord.Record) {
	reply := CancelReply{ExecID: execID}
	if err := messages.ValidateToken("exec id", execID); err != nil {
		reply.Err = err
		return reply, nil
	}
	ex := new(storage.Execution)
	err := e.Store.R.NewSelect().Model(ex).Where("exec_id = ?", execID).Scan(ctx)
	if errors.Is(err, sql.ErrNoRows) {
		reply.Err = messages.NotFoundf("execution '%s' not found", execID)
		return reply, nil
	}
	if err != nil {
		reply.Err = fmt.Errorf("load exec %s: %w", execID, err)
		return reply, nil
	}
	now := e.Clock.Now().UTC()
	err = e.Store.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		n, err := cancelRemaining(ctx, tx, execID)
		if reply.CancelledWaves = n; err != nil || n == 0 {
			return err
		}
		// target_count counts the subjects published so far; only this
		// actor changes it, so the value read above is current.
		// A held exec has nothing left to wait for: nobody else would
		// ever finish it.
		if ex.TargetCount == 0 || ex.Status == storage.ExecHeld {
			_, err = tx.NewUpdate().Model((*storage.Execution)(nil)).
				Set("status = ?", storage.ExecCancelled).Set("finished_at = ?", storage.T(now)).
				Set("updated_at = ?", storage.T(now)).Where("exec_id = ?", execID).Exec(ctx)
			return err
		}
		// The deadline counted on the last wave; without it, PCs that
		// never answer are due as "never answered" from the last wave that
		// did go out.
		var last storage.Time
		if err := tx.NewSelect().Model((*storage.ExecWave)(nil)).ColumnExpr("max(published_at)").
			Where("exec_id = ?", execID).Where("state = ?", storage.WavePublished).Scan(ctx, &last); err != nil {
			return err
		}
		from := maxTime(ex.CreatedAt.Time, last.Time)
		_, err = tx.NewUpdate().Model((*storage.Execution)(nil)).
			Set("deadline_at = ?", storage.T(deadline(from, ex.TimeoutSecs, ex.JitterSecs))).
			Set("updated_at = ?", storage.T(now)).Where("exec_id = ?", execID).Exec(ctx)
		return err
	})
	if err != nil {
		reply.Err = fmt.Errorf("cancel waves of exec %s: %w", execID, err)
		return reply, nil
	}
	if reply.CancelledWaves == 0 {
		reply.Status = ex.Status
		reply.Err = messages.Conflictf("execution '%s' has no pending rollout waves to cancel", execID)
		return reply, nil
	}
	e.rearm(ctx)
	rec := e.loadRecord(ctx, execID)
	if err := e.Store.R.NewSelect().Model(ex).WherePK().Scan(ctx); err != nil {
		reply.Err = fmt.Errorf("reload exec %s: %w", execID, err)
		return reply, rec
	}
	reply.Status = ex.Status
	e.log.Info("rollout waves cancelled", "exec_id", execID, "waves", reply.CancelledWaves, "status", ex.Status)
	e.progressedWaves(ctx, sys, execID, now)
	return reply, rec
}
