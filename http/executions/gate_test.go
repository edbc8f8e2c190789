package executions_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"kanade-backend/cmd/kanade-backend/app"
	"kanade-backend/http/executions"
	"kanade-backend/internal/apptest"
	"kanade-backend/internal/sim"
	"kanade-backend/messages"
	"kanade-backend/storage"
)

// commandLog records the Commands published on one subject by exec id,
// with the time each arrived.
type commandLog struct {
	mu  sync.Mutex
	got map[string][]time.Time
}

func recordSubject(t *testing.T, nc *nats.Conn, subject string) *commandLog {
	t.Helper()
	l := &commandLog{got: map[string][]time.Time{}}
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		var c messages.Command
		if json.Unmarshal(m.Data, &c) == nil && c.JobID != nil {
			l.mu.Lock()
			l.got[*c.JobID] = append(l.got[*c.JobID], time.Now())
			l.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return l
}

func (l *commandLog) of(execID string) []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]time.Time(nil), l.got[execID]...)
}

// The acceptance of issue 20 against the fleet simulator: a script that
// fails on the canary (fail-once: every PC fails its first run of a job)
// with gate max_failed 0 holds wave1 (no Command on its subject, the exec
// held with the reason), and a restart keeps it held; an operator's resume
// publishes wave1 and is audited with the operator's name; an abort
// publishes nothing more and cancels the exec; a passing canary lets wave1
// out at its delay.
func TestGatedRolloutAgainstTheFleetSimulator(t *testing.T) {
	t.Parallel()
	dir, natsAddr := t.TempDir(), freeAddr(t)
	opts := apptest.Options{DataDir: dir, Configure: func(c *app.Config) { c.NATS.Listen = natsAddr }}
	b, stop := apptest.StartManual(t, opts)
	putJob(t, b, "flaky", "1.0.0", "fail-once")
	putJob(t, b, "flaky2", "1.0.0", "fail-once")
	putJob(t, b, "hello", "1.0.0", "echo hello")
	alice := b.CreateOperator(t, "alice", "operator")
	f := b.StartFleet(t, sim.Config{Agents: 4, Heartbeat: time.Second, Seed: 1})
	b.SetGroups(t, map[string][]string{"SIM-0001": {"canary"}, "SIM-0002": {"canary"}, "SIM-0003": {"wave1"}, "SIM-0004": {"wave1"}})
	apptest.Eventually(t, 5*time.Second, func() error {
		var agents []map[string]any
		b.JSON(t, "GET", "/api/agents?online=true", nil, 200, &agents)
		if len(agents) != 4 {
			return errorf("%d agents online, want 4", len(agents))
		}
		return nil
	})
	const gated = `{"rollout":{"waves":[{"group":"canary","delay":"0s"},{"group":"wave1","delay":"2s"}],"gate":{"max_failed":0}}}`
	// The subscription lives on a connection of its own, which survives
	// the backend's restart (the embedded server comes back on natsAddr).
	nc, err := nats.Connect(b.NATSURL, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	wave1 := recordSubject(t, nc, messages.CommandsGroupSubject("wave1"))
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	held := execJob(t, b, "flaky", gated)
	aborted := execJob(t, b, "flaky2", gated)
	wantHeld := func(b *apptest.Backend, id string) executions.Detail {
		var d executions.Detail
		apptest.Eventually(t, 10*time.Second, func() error {
			b.JSON(t, "GET", "/api/executions/"+id, nil, 200, &d)
			if d.Status != storage.ExecHeld {
				return errorf("exec %s: status %s, %d/%d failed, waves %+v", id, d.Status, d.FailureCount, d.ExpectedPcs, d.Waves)
			}
			return nil
		})
		return d
	}
	for _, id := range []string{held.ExecID, aborted.ExecID} {
		d := wantHeld(b, id)
		if d.HoldReason == nil || *d.HoldReason != "wave canary: 2 of 2 failed, max_failed 0" ||
			d.Waves[1].State != storage.WaveHeld || d.Waves[1].RequestID != nil {
			t.Fatalf("held exec: reason %v, waves %+v", d.HoldReason, d.Waves)
		}
	}

	// A restart keeps it held, and publishes nothing.
	stop()
	b, stop = apptest.StartManual(t, opts)
	defer func() { stop() }()
	defer func() { // the agents leave before the server they talk to
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := f.Stop(ctx); err != nil {
			t.Errorf("stop simulated fleet: %v", err)
		}
	}()
	apptest.Eventually(t, 10*time.Second, func() error {
		if !nc.IsConnected() {
			return errorf("the recording connection has not reconnected")
		}
		return nc.Flush()
	})
	time.Sleep(time.Second) // a released wave would be published at once
	wantHeld(b, held.ExecID)
	if n := len(wave1.of(held.ExecID)) + len(wave1.of(aborted.ExecID)); n != 0 {
		t.Fatalf("%d Commands on wave1's subject for held execs", n)
	}

	// Resume: needs a reason; publishes wave1 and records who and why.
	b.WantError(t, "POST", "/api/executions/"+held.ExecID+"/waves/resume", `{}`, http.StatusBadRequest,
		"reason is required: say why the wave goes out although its gate is not met")
	resp, body := b.Do(t, "POST", "/api/executions/"+held.ExecID+"/waves/resume", `{"reason":"canary PCs were rebooting"}`, apptest.Bearer(alice)...)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("resume: %d %s", resp.StatusCode, body)
	}
	var resumed executions.WavesResponse
	if err := json.Unmarshal(body, &resumed); err != nil {
		t.Fatal(err)
	}
	if resumed.Resumed == nil || !resumed.Resumed.Published || resumed.Resumed.Group != "wave1" ||
		resumed.Waves[1].State != storage.WavePublished || *resumed.Waves[1].ResumedBy != "operator:alice" {
		t.Fatalf("resume answered %s", body)
	}
	apptest.Eventually(t, 5*time.Second, func() error {
		if n := len(wave1.of(held.ExecID)); n != 1 {
			return errorf("%d Commands on wave1's subject after resume, want 1", n)
		}
		return nil
	})
	apptest.Eventually(t, 5*time.Second, func() error {
		var events []struct {
			Actor   string         `json:"actor"`
			Payload map[string]any `json:"payload"`
		}
		b.JSON(t, "GET", "/api/audit?action="+executions.ActionExecWaveResume, nil, 200, &events)
		if len(events) != 1 || events[0].Payload["sub"] != "alice" || events[0].Payload["reason"] != "canary PCs were rebooting" ||
			events[0].Payload["exec_id"] != held.ExecID {
			return errorf("resume audit events: %+v", events)
		}
		return nil
	})

	// Abort: nothing more goes out, the exec is cancelled.
	var ab executions.WavesResponse
	b.JSON(t, "POST", "/api/executions/"+aborted.ExecID+"/waves/abort", `{"reason":"bad script"}`, 200, &ab)
	if ab.Status != storage.ExecCancelled || ab.CancelledWaves != 1 || ab.Waves[1].State != storage.WaveCancelled {
		t.Fatalf("abort answered %+v", ab)
	}
	b.WantError(t, "POST", "/api/executions/"+aborted.ExecID+"/waves/resume", `{"reason":"x"}`, http.StatusConflict,
		"execution '"+aborted.ExecID+"' has no held rollout wave")

	// A passing canary: wave1 at its delay, within a second.
	t0 := time.Now()
	ok := execJob(t, b, "hello", gated)
	apptest.Eventually(t, 10*time.Second, func() error {
		if n := len(wave1.of(ok.ExecID)); n != 1 {
			return errorf("%d Commands on wave1's subject for the passing exec", n)
		}
		return nil
	})
	if d := wave1.of(ok.ExecID)[0].Sub(t0); d < 2*time.Second || d > 3*time.Second {
		t.Fatalf("wave1 published %v after the exec, want within a second of its 2s delay", d)
	}
	var done executions.Detail
	apptest.Eventually(t, 10*time.Second, func() error {
		b.JSON(t, "GET", "/api/executions/"+ok.ExecID, nil, 200, &done)
		if done.Status != storage.ExecCompleted || done.SuccessCount != 4 {
			return errorf("passing exec: %s %d/%d", done.Status, done.SuccessCount, done.ExpectedPcs)
		}
		return nil
	})
	if w := done.Waves[1]; w.Success != 2 || w.Failure != 0 || *w.ExpectedPcs != 2 || w.Reason != nil {
		t.Fatalf("wave1 of the passing exec: %+v", w)
	}
	if n := len(wave1.of(aborted.ExecID)); n != 0 {
		t.Fatalf("%d Commands for the aborted exec", n)
	}
	if d := wave1.of(held.ExecID); len(d) != 1 {
		t.Fatalf("resumed exec's wave1 published %d times", len(d))
	}
	if !strings.HasPrefix(done.InitiatedBy, "operator") {
		t.Fatalf("initiated_by %q", done.InitiatedBy)
	}
}
