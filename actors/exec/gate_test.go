package exec_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/storagetest"
)

// canaryGate is canary now, wave1 after 10 s, gated by gate (JSON).
func canaryGate(gate string) string {
	return `{"rollout":{"waves":[{"group":"canary","delay":"0s"},{"group":"wave1","delay":"10s"}],"gate":` + gate + `}}`
}

// answer records pc's answer to exec id the way the results projector
// does (its exec_expected row, the exec's counters, pending → running)
// and publishes the projector's ExecProgressed.
func (e *env) answer(id, pc string, code int) {
	e.t.Helper()
	ctx := context.Background()
	var rid string
	if err := e.store.R.NewSelect().Model((*storage.ExecWave)(nil)).Column("request_id").
		Where("exec_id = ?", id).Where("request_id IS NOT NULL").Order("wave_index").Limit(1).Scan(ctx, &rid); err != nil {
		e.t.Fatal(err)
	}
	now := e.clk.Now()
	res, err := e.store.W.NewUpdate().Model((*storage.ExecExpected)(nil)).Set("request_id = ?", rid).
		Set("exit_code = ?", code).Set("answered_at = ?", storage.T(now)).
		Where("exec_id = ? AND pc_id = ? AND answered_at IS NULL", id, pc).Exec(ctx)
	if n, _ := res.RowsAffected(); err != nil || n != 1 {
		e.t.Fatalf("answer of %s: %v (%d rows)", pc, err, n)
	}
	ok, bad := 1, 0
	if code != 0 {
		ok, bad = 0, 1
	}
	if _, err := e.store.W.NewUpdate().Model((*storage.Execution)(nil)).
		Set("success_count = success_count + ?", ok).Set("failure_count = failure_count + ?", bad).
		Set("status = CASE WHEN status = ? THEN ? ELSE status END", storage.ExecPending, storage.ExecRunning).
		Where("exec_id = ?", id).Exec(ctx); err != nil {
		e.t.Fatal(err)
	}
	ex := e.execution(id)
	e.sys.EventStream.Publish(&messages.ExecProgressed{ExecID: id, JobID: ex.JobID, Status: ex.Status,
		Expected: ex.ExpectedPcs, Success: ex.SuccessCount, Failure: ex.FailureCount, At: now})
}

// waitWave waits until wave i of exec id meets cond and returns it.
func (e *env) waitWave(t *testing.T, id string, i int, cond func(w storage.ExecWave) error) storage.ExecWave {
	t.Helper()
	var w storage.ExecWave
	eventually(t, func() error {
		w = e.waves(id)[i]
		return cond(w)
	})
	return w
}

// waveState waits for wave i of exec id to reach state and returns it.
func (e *env) waveState(t *testing.T, id string, i int, state string) storage.ExecWave {
	t.Helper()
	return e.waitWave(t, id, i, func(w storage.ExecWave) error {
		if w.State != state {
			return fmt.Errorf("wave %d is %s, want %s", i, w.State, state)
		}
		return nil
	})
}

// gateScenario runs scenario, in parallel with the other tests, on each
// database dialect, with an engine started with job1 and PCs c1, c2 in
// canary and w1 in wave1, recording the Commands.
func gateScenario(t *testing.T, scenario func(t *testing.T, e *env, cmds *recorder)) {
	t.Parallel()
	storagetest.ForEachDialect(t, func(t *testing.T, s *storage.Store) {
		e := newEnvOn(t, s)
		cmds := e.recordCommands()
		e.start()
		e.putJob("job1", "1", "echo")
		e.agent("c1", "canary")
		e.agent("c2", "canary")
		e.agent("w1", "wave1")
		scenario(t, e, cmds)
	})
}

// heldAtWave1 runs plan (a canary wave, then wave1 after 10 s, gated),
// has c1, c2, ... answer with codes once the canary's Command is out, and
// lets wave1's delay pass; it returns the exec once wave1 is held.
func (e *env) heldAtWave1(t *testing.T, cmds *recorder, plan string, codes ...int) (messages.ExecResponse, storage.ExecWave) {
	t.Helper()
	r := e.mustExec(plan)
	cmds.waitN(t, 1)
	for i, code := range codes {
		e.answer(r.ExecID, fmt.Sprintf("c%d", i+1), code)
	}
	e.clk.Advance(10 * time.Second)
	return r, e.waveState(t, r.ExecID, 1, storage.WaveHeld)
}

// A canary that fails holds wave1 at its delay with the reason; nothing
// goes out on wave1's subject; a resume publishes it at once, past its
// gate, naming who resumed.
func TestGateHoldsAFailedCanaryUntilResumed(t *testing.T) {
	gateScenario(t, func(t *testing.T, e *env, cmds *recorder) {
		r, w := e.heldAtWave1(t, cmds, canaryGate(`{"max_failed":0}`), 0, 1)
		if ws := e.waves(r.ExecID); ws[0].Gated || !ws[1].Gated || *ws[0].ExpectedPcs != 2 {
			t.Fatalf("waves = %+v", ws)
		}
		if w.Reason == nil || *w.Reason != "wave canary: 1 of 2 failed, max_failed 0" || w.RequestID != nil {
			t.Fatalf("held wave = %+v", w)
		}
		if ex := e.execution(r.ExecID); ex.Status != storage.ExecHeld || !ex.FinishedAt.IsZero() {
			t.Fatalf("exec = %s finished %v, want held", ex.Status, ex.FinishedAt)
		}
		e.clk.Advance(time.Hour)
		cmds.quiet(t, 1, 50*time.Millisecond)

		ctx := context.Background()
		if _, err := e.client.Resume(ctx, "nope", "operator:alice"); statusOf(err) != http.StatusNotFound {
			t.Fatalf("resume unknown: %v", err)
		}
		e.agent("w1", "wave1") // still alive an hour later
		reply, err := e.client.Resume(ctx, r.ExecID, "operator:alice")
		if err != nil || !reply.Published || reply.WaveIndex != 1 || reply.Group != "wave1" || reply.Status != storage.ExecRunning {
			t.Fatalf("resume = %+v, %v", reply, err)
		}
		cmds.waitN(t, 2)
		if cmds.subjects()[1] != "commands.group.wave1" {
			t.Fatalf("resumed wave on %v", cmds.subjects())
		}
		w = e.waves(r.ExecID)[1]
		if w.ResumedBy == nil || *w.ResumedBy != "operator:alice" || w.Reason == nil || *w.ExpectedPcs != 1 {
			t.Fatalf("resumed wave = %+v", w)
		}
		if _, err := e.client.Resume(ctx, r.ExecID, "operator:alice"); statusOf(err) != http.StatusConflict ||
			err.Error() != "execution '"+r.ExecID+"' has no held rollout wave" {
			t.Fatalf("second resume: %v", err)
		}
	})
}

// An abort cancels the held wave and the exec: no more Commands, status
// cancelled, finished.
func TestGateAbortCancelsTheRollout(t *testing.T) {
	gateScenario(t, func(t *testing.T, e *env, cmds *recorder) {
		r, _ := e.heldAtWave1(t, cmds, `{"rollout":{"waves":[{"group":"canary"},{"group":"wave1","delay":"10s"},{"group":"wave2","delay":"20s"}],"gate":{"max_failed":0}}}`, 3)
		if w := e.waves(r.ExecID)[2]; w.State != storage.WaveHeld || w.Reason != nil {
			t.Fatalf("the wave behind the held one = %+v", w)
		}
		reply, err := e.client.Abort(context.Background(), r.ExecID)
		if err != nil || reply.CancelledWaves != 2 || reply.Status != storage.ExecCancelled {
			t.Fatalf("abort = %+v, %v", reply, err)
		}
		if ex := e.execution(r.ExecID); ex.Status != storage.ExecCancelled || ex.FinishedAt.IsZero() {
			t.Fatalf("exec after abort = %+v", ex)
		}
		e.clk.Advance(time.Hour)
		cmds.quiet(t, 1, 50*time.Millisecond)
		if _, err := e.client.Abort(context.Background(), r.ExecID); statusOf(err) != http.StatusConflict {
			t.Fatalf("second abort: %v", err)
		}
	})
}

// A canary that passes lets wave1 out at its delay, not a millisecond
// later; one that has not finished answering makes wave1 wait, and its
// last answer publishes it before the wait is over.
func TestGatePassesAtTheDelayOrOnTheLastAnswer(t *testing.T) {
	gateScenario(t, func(t *testing.T, e *env, cmds *recorder) {
		r := e.mustExec(canaryGate(`{"max_failed":0,"min_success":1}`))
		cmds.waitN(t, 1)
		e.answer(r.ExecID, "c1", 0)
		e.answer(r.ExecID, "c2", 0)
		e.clk.Advance(10*time.Second - time.Millisecond)
		cmds.quiet(t, 1, 50*time.Millisecond)
		e.clk.Advance(time.Millisecond)
		cmds.waitN(t, 2)

		r2 := e.mustExec(canaryGate(`{"max_failed":0}`))
		cmds.waitN(t, 3)
		start := e.clk.Now()
		e.answer(r2.ExecID, "c1", 0)
		e.clk.Advance(10 * time.Second)
		e.waitWave(t, r2.ExecID, 1, func(w storage.ExecWave) error {
			if !w.JudgeAt.Equal(start.Add(30 * time.Second)) {
				return fmt.Errorf("wave1 judge_at = %v, want the canary's time + the job's 30s timeout", w.JudgeAt)
			}
			return nil
		})
		cmds.quiet(t, 3, 50*time.Millisecond)
		e.answer(r2.ExecID, "c2", 0)
		cmds.waitN(t, 4)
		if w := e.waveState(t, r2.ExecID, 1, storage.WavePublished); !w.JudgeAt.IsZero() || !w.PublishedAt.Equal(start.Add(10*time.Second)) {
			t.Fatalf("wave1 = %+v", w)
		}
	})
}

// When the wait is over, a PC still silent counts as failed: wave1 is
// held saying so; its late answer judges the gate again, and wave1 goes
// out by itself.
func TestGateSilentPCsAndLateAnswers(t *testing.T) {
	gateScenario(t, func(t *testing.T, e *env, cmds *recorder) {
		r := e.mustExec(canaryGate(`{"min_success":0.9,"wait":"1m"}`))
		cmds.waitN(t, 1)
		e.answer(r.ExecID, "c1", 0)
		e.clk.Advance(time.Minute - time.Millisecond)
		e.waitWave(t, r.ExecID, 1, func(w storage.ExecWave) error {
			if w.State != storage.WavePending || !w.JudgeAt.Equal(t0.Add(time.Minute)) {
				return fmt.Errorf("waiting wave = %+v", w)
			}
			return nil
		})
		cmds.quiet(t, 1, 50*time.Millisecond)
		e.clk.Advance(time.Millisecond)
		w := e.waveState(t, r.ExecID, 1, storage.WaveHeld)
		if want := "wave canary: 1 of 2 succeeded (1 did not answer within 1m0s), min_success 0.9"; w.Reason == nil || *w.Reason != want {
			t.Fatalf("reason = %v, want %q", w.Reason, want)
		}
		e.answer(r.ExecID, "c2", 0)
		cmds.waitN(t, 2)
		w = e.waveState(t, r.ExecID, 1, storage.WavePublished)
		if w.Reason != nil || w.ResumedBy != nil {
			t.Fatalf("wave released by its late answer = %+v", w)
		}
		if ex := e.execution(r.ExecID); ex.Status != storage.ExecRunning {
			t.Fatalf("exec = %s, want running", ex.Status)
		}
	})
}

// A held wave stays held across a restart; a wave waiting for answers when
// the engine stopped is judged after the restart, at once when its wait
// ran out meanwhile.
func TestGateSurvivesARestart(t *testing.T) {
	gateScenario(t, func(t *testing.T, e *env, cmds *recorder) {
		held := e.mustExec(canaryGate(`{"max_failed":0}`))
		judging := e.mustExec(canaryGate(`{"max_failed":0,"wait":"1m"}`))
		cmds.waitN(t, 2)
		e.answer(held.ExecID, "c1", 1)
		e.answer(judging.ExecID, "c1", 0)
		e.clk.Advance(10 * time.Second)
		e.waveState(t, held.ExecID, 1, storage.WaveHeld)
		e.waitWave(t, judging.ExecID, 1, func(w storage.ExecWave) error {
			if w.JudgeAt.IsZero() {
				return errors.New("second exec's wave1 not waiting yet")
			}
			return nil
		})

		e.stop()
		e.clk.Advance(2 * time.Minute)
		e.start()
		w := e.waveState(t, judging.ExecID, 1, storage.WaveHeld)
		if want := "wave canary: 0 of 2 failed and 1 did not answer within 1m0s, max_failed 0"; *w.Reason != want {
			t.Fatalf("reason = %q, want %q", *w.Reason, want)
		}
		cmds.quiet(t, 2, 50*time.Millisecond)
		if ex := e.execution(held.ExecID); ex.Status != storage.ExecHeld {
			t.Fatalf("held exec after restart = %s", ex.Status)
		}
		// Still watched after the restart: the late answer releases it.
		e.answer(judging.ExecID, "c2", 0)
		cmds.waitN(t, 3)
	})
}

// Cancel stops a held exec too, and finishes it (nobody else would).
func TestCancelFinishesAHeldExec(t *testing.T) {
	gateScenario(t, func(t *testing.T, e *env, cmds *recorder) {
		r, _ := e.heldAtWave1(t, cmds, canaryGate(`{"max_failed":0}`), 1)
		reply, err := e.client.Cancel(context.Background(), r.ExecID)
		if err != nil || reply.CancelledWaves != 1 || reply.Status != storage.ExecCancelled {
			t.Fatalf("cancel = %+v, %v", reply, err)
		}
	})
}
