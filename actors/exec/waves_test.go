package exec_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"kanade-backend/actors/actorsys"
	"kanade-backend/actors/clock"
	"kanade-backend/actors/exec"
	"kanade-backend/internal/testsupport"
	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/broker"
	"kanade-backend/storage/storagetest"
)

const canaryThenWave1 = `{"rollout":{"waves":[{"group":"canary","delay":"0s"},{"group":"wave1","delay":"3s"}]}}`

// canary@0s publishes with the exec; wave1@3s publishes when the fake clock
// reaches exec time + 3 s, not a millisecond before, and resolves its
// expected PCs then.
func TestWavesPublishAtTheirDelay(t *testing.T) {
	t.Parallel()
	storagetest.ForEachDialect(t, testWavesPublishAtTheirDelay)
}

func testWavesPublishAtTheirDelay(t *testing.T, st *storage.Store) {
	e := newEnvOn(t, st)
	cmds := e.recordCommands()
	e.start()
	e.putJob("job1", "1", "echo")
	e.agent("c1", "canary")

	r := e.mustExec(canaryThenWave1)
	if r.TargetCount != 2 || strings.Join(r.Subjects, " ") != "commands.group.canary commands.group.wave1" || r.ExpectedPcs != 1 {
		t.Fatalf("response = %+v", r)
	}
	cmds.waitN(t, 1)
	if cmds.subjects()[0] != "commands.group.canary" {
		t.Fatalf("first wave on %s", cmds.subjects()[0])
	}
	ex := e.execution(r.ExecID)
	if ex.TargetCount != 1 || ex.ExpectedPcs != 1 || !ex.DeadlineAt.Equal(t0.Add(3*time.Second+30*time.Second+60*time.Second)) {
		t.Fatalf("row after the first wave = %+v", ex)
	}
	ws := e.waves(r.ExecID)
	if ws[0].State != storage.WavePublished || ws[0].RequestID == nil || ws[1].State != storage.WavePending ||
		!ws[1].DueAt.Equal(t0.Add(3*time.Second)) || ws[1].RequestID != nil {
		t.Fatalf("waves = %+v", ws)
	}

	// wave1's PC joins its group after the exec: membership counts when the
	// wave goes out.
	e.agent("w1", "wave1")
	e.clk.Advance(3*time.Second - time.Millisecond)
	cmds.quiet(t, 1, 50*time.Millisecond)
	e.clk.Advance(time.Millisecond)
	cmds.waitN(t, 2)
	got := cmds.commands(t)
	if cmds.subjects()[1] != "commands.group.wave1" || *got[1].JobID != r.ExecID || got[1].RequestID == got[0].RequestID {
		t.Fatalf("second wave = %s %+v", cmds.subjects()[1], got[1])
	}
	eventually(t, func() error {
		ex := e.execution(r.ExecID)
		ws := e.waves(r.ExecID)
		if ex.TargetCount != 2 || ex.ExpectedPcs != 2 || ws[1].State != storage.WavePublished ||
			string(ex.Subjects) != `["commands.group.canary","commands.group.wave1"]` {
			return errors.New("wave1 not recorded yet")
		}
		return nil
	})
	if got := strings.Join(e.expected(r.ExecID), ","); got != "c1,w1" {
		t.Fatalf("expected = %s, want c1,w1", got)
	}
	for _, req := range e.requests(r.ExecID) {
		if req.PublishedAt.IsZero() {
			t.Fatalf("request %+v not stamped", req)
		}
	}
}

// Pending waves live in the store: an engine restarted after a wave fell
// due publishes it at once, and one restarted before a wave's time keeps
// its timer.
func TestWavesSurviveARestart(t *testing.T) {
	t.Parallel()
	storagetest.ForEachDialect(t, testWavesSurviveARestart)
}

func testWavesSurviveARestart(t *testing.T, st *storage.Store) {
	e := newEnvOn(t, st)
	cmds := e.recordCommands()
	e.start()
	e.putJob("job1", "1", "echo")
	e.mustExec(`{"rollout":{"waves":[{"group":"canary","delay":"0s"},{"group":"wave1","delay":"10s"},{"group":"wave2","delay":"1m"}]}}`)
	cmds.waitN(t, 1)

	e.stop()
	if n := e.clk.Pending(); n != 0 {
		t.Fatalf("%d timers left by the stopped engine", n)
	}
	e.clk.Advance(30 * time.Second) // wave1 falls due while the engine is down
	cmds.quiet(t, 1, 50*time.Millisecond)

	e.start()
	cmds.waitN(t, 2)
	if cmds.subjects()[1] != "commands.group.wave1" {
		t.Fatalf("after restart: %v", cmds.subjects())
	}
	cmds.quiet(t, 2, 50*time.Millisecond)
	eventually(t, func() error {
		if e.clk.Pending() != 1 {
			return errors.New("wave2 timer not armed")
		}
		return nil
	})
	e.clk.Advance(30 * time.Second)
	cmds.waitN(t, 3)
	if cmds.subjects()[2] != "commands.group.wave2" {
		t.Fatalf("third wave: %v", cmds.subjects())
	}
}

func TestCancelStopsPendingWaves(t *testing.T) {
	t.Parallel()
	storagetest.ForEachDialect(t, testCancelStopsPendingWaves)
}

func testCancelStopsPendingWaves(t *testing.T, st *storage.Store) {
	e := newEnvOn(t, st)
	cmds := e.recordCommands()
	e.start()
	e.putJob("job1", "1", "echo")
	ctx := context.Background()

	// Nothing published yet: the exec itself is cancelled.
	r := e.mustExec(`{"rollout":{"waves":[{"group":"a","delay":"5s"},{"group":"b","delay":"10s"}]}}`)
	if r.TargetCount != 2 || r.ExpectedPcs != 0 {
		t.Fatalf("response = %+v", r)
	}
	reply, err := e.client.Cancel(ctx, r.ExecID)
	if err != nil || reply.CancelledWaves != 2 || reply.Status != storage.ExecCancelled {
		t.Fatalf("cancel = %+v, %v", reply, err)
	}
	ex := e.execution(r.ExecID)
	if ex.Status != storage.ExecCancelled || ex.FinishedAt.IsZero() {
		t.Fatalf("row = %+v", ex)
	}
	e.clk.Advance(20 * time.Second)
	cmds.quiet(t, 0, 50*time.Millisecond)
	for _, w := range e.waves(r.ExecID) {
		if w.State != storage.WaveCancelled {
			t.Fatalf("wave %+v", w)
		}
	}

	_, err = e.client.Cancel(ctx, r.ExecID)
	if statusOf(err) != http.StatusConflict || err.Error() != "execution '"+r.ExecID+"' has no pending rollout waves to cancel" {
		t.Fatalf("second cancel: %v", err)
	}
	_, err = e.client.Cancel(ctx, "00000000-0000-4000-8000-000000000000")
	if statusOf(err) != http.StatusNotFound || err.Error() != "execution '00000000-0000-4000-8000-000000000000' not found" {
		t.Fatalf("cancel unknown: %v", err)
	}

	// Canary already out: later waves stop, the status stays the
	// projector's.
	r2 := e.mustExec(`{"rollout":{"waves":[{"group":"canary","delay":"0s"},{"group":"b","delay":"5s"}]}}`)
	cmds.waitN(t, 1)
	reply, err = e.client.Cancel(ctx, r2.ExecID)
	if err != nil || reply.CancelledWaves != 1 || reply.Status != storage.ExecPending {
		t.Fatalf("cancel after canary = %+v, %v", reply, err)
	}
	// The deadline no longer waits for the cancelled wave.
	if ex := e.execution(r2.ExecID); !ex.DeadlineAt.Equal(ex.CreatedAt.Add(30*time.Second + 60*time.Second)) {
		t.Fatalf("deadline after cancel = %v, created %v", ex.DeadlineAt, ex.CreatedAt)
	}
	e.clk.Advance(10 * time.Second)
	cmds.quiet(t, 1, 50*time.Millisecond)
	if n := e.clk.Pending(); n != 0 {
		t.Fatalf("%d timers left with no pending wave", n)
	}
}

// A stopped engine leaves no goroutine behind, even with a wave timer
// armed on the real clock.
func TestEngineStopLeavesNoGoroutines(t *testing.T) {
	e := newEnv(t)
	e.putJob("job1", "1", "echo")
	// The audit publisher's first JetStream request starts the connection's
	// reply subscription, which lives as long as the connection.
	if _, err := e.br.JS.Publish(context.Background(), "audit.test.warmup", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	// So does the subscription of its pipelined (asynchronous) publishes.
	if errs := broker.PublishAll(context.Background(), e.br.JS, []*nats.Msg{{Subject: "audit.test.warmup", Data: []byte("{}")}}); errs[0] != nil {
		t.Fatal(errs[0])
	}
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	sys := actorsys.New(quietLogger())
	d := e.deps()
	d.Clock = clock.Real{}
	pid, err := exec.Spawn(sys.Root, d)
	if err != nil {
		t.Fatal(err)
	}
	c := &exec.Client{Root: sys.Root, PID: pid}
	var plan messages.FanoutPlan
	plan.Rollout = &messages.Rollout{Waves: []messages.Wave{{Group: "a", Delay: "1h"}}}
	if _, err := c.Exec(context.Background(), &messages.ExecRequest{JobID: "job1", Plan: plan}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := actorsys.Stop(ctx, sys, pid); err != nil {
		t.Fatal(err)
	}
}

// Two engines on one database (replicas, or an old leader still running)
// both find the same waves due at the same instant: each wave is published
// once, under one request_id, by whichever engine claimed it.
func TestTwoEnginesPublishEachWaveOnce(t *testing.T) {
	t.Parallel()
	storagetest.ForEachDialect(t, func(t *testing.T, st *storage.Store) {
		e := newEnvOn(t, st)
		cmds := e.recordCommands()
		e.start()
		e.putJob("job1", "1", "echo")
		const execs = 20
		for i := range execs {
			e.mustExec(fmt.Sprintf(`{"rollout":{"waves":[{"group":"g%02d","delay":"5s"}]}}`, i))
		}
		// The second engine starts after the waves exist, so it finds them
		// pending in the database and arms its timer for them too.
		before := e.clk.Pending()
		e2 := newEngineEnv(t, e.br, st, e.clk)
		e2.start()
		eventually(t, func() error {
			if n := e.clk.Pending(); n <= before {
				return fmt.Errorf("%d timers armed, want the second engine's too", n)
			}
			return nil
		})
		e.clk.Advance(5 * time.Second)
		// Two engines through SQLite's one writer on a loaded machine
		// take longer than waitN's 5 s for 20 waves.
		testsupport.Eventually(t, 30*time.Second, func() error {
			if got := len(cmds.all()); got < execs {
				return fmt.Errorf("%d waves published, want %d", got, execs)
			}
			return nil
		})
		// A claim's lease (RetryBackoff) passing must not bring a
		// published wave back.
		e.clk.Advance(2 * time.Second)
		cmds.quiet(t, execs, 200*time.Millisecond)
		seen := map[string]bool{}
		for _, s := range cmds.subjects() {
			if seen[s] {
				t.Fatalf("%s published twice: %v", s, cmds.subjects())
			}
			seen[s] = true
		}
		eventually(t, func() error {
			var n int
			err := st.R.NewSelect().Model((*storage.ExecWave)(nil)).Where("state = ?", storage.WavePublished).
				Where("due_at = ?", storage.T(t0.Add(5*time.Second))).ColumnExpr("count(*)").Scan(context.Background(), &n)
			if err != nil || n != execs {
				return fmt.Errorf("%d waves recorded published at their own due time (%v), want %d", n, err, execs)
			}
			return nil
		})
	})
}

// Among replicas the wave timers are the leader's: a standby's engine
// records an exec with a delayed wave and publishes its first wave, but
// the delayed one goes out once, from the leader's engine, which finds it
// in the shared store; when leadership moves, the new leader publishes
// the next one.
func TestOnlyTheLeaderPublishesDelayedWaves(t *testing.T) {
	t.Parallel()
	storagetest.ForEachDialect(t, func(t *testing.T, st *storage.Store) {
		var aLeads atomic.Bool
		a := newEnvOn(t, st)
		a.leads = aLeads.Load
		b := newEngineEnv(t, a.br, st, a.clk)
		b.leads = func() bool { return !aLeads.Load() }
		cmds := a.recordCommands()
		a.start()
		b.start()
		a.putJob("job1", "1", "echo")
		a.agent("c1", "canary")
		a.agent("w1", "wave1")
		a.agent("w2", "wave2")

		r := a.mustExec(`{"rollout":{"waves":[{"group":"canary","delay":"0s"},{"group":"wave1","delay":"3s"},{"group":"wave2","delay":"6s"}]}}`)
		cmds.waitN(t, 1)
		// The leader polls every second (of the fake clock) and arms its
		// timer at the wave's time.
		advanceUntil := func(n int) {
			t.Helper()
			eventually(t, func() error {
				if len(cmds.all()) >= n {
					return nil
				}
				a.clk.Advance(100 * time.Millisecond)
				return fmt.Errorf("%d Commands", len(cmds.all()))
			})
		}
		advanceUntil(2)
		if got := cmds.subjects()[1]; got != "commands.group.wave1" {
			t.Fatalf("second Command on %s", got)
		}
		aLeads.Store(true) // leadership moves to a
		advanceUntil(3)
		cmds.quiet(t, 3, 200*time.Millisecond)
		eventually(t, func() error {
			for _, w := range a.waves(r.ExecID) {
				if w.State != storage.WavePublished {
					return fmt.Errorf("wave %d %s", w.WaveIndex, w.State)
				}
			}
			return nil
		})
	})
}
