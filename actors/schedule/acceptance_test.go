package schedule

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"kanade-backend/cmd/kanade-fleet/sim"
	"kanade-backend/messages"
	"kanade-backend/storage"
)

// TestAcceptanceOverTheWire runs the scheduler's acceptance scenarios at
// once, for 20 s of wall clock, against simulated agents speaking the
// wire contract over a real nats-server (cmd/kanade-fleet/sim), with the
// wire-level stand-ins of wire_test.go for the exec engine and the
// projectors:
//
//   - once_per_pc on all, cron every 2 s, script "sleep 3s": each agent
//     runs the job exactly once (in-flight suppression), and a sixth agent
//     that starts later runs it once too;
//   - with cooldown 6s each agent runs again, never sooner than 6 s after
//     its previous success;
//   - with auto_disable_when_done and no cooldown the schedule ends
//     enabled:false in KV and the audit trail shows schedule_completed;
//   - once_per_pc on a group resolves the group's alive members;
//   - once_per_target fires the whole target until one PC succeeds
//     (fail-once: the first round fails everywhere), then stops;
//   - a job edit and a cron edit take effect at the next tick, and a
//     deleted schedule fires no more.
func TestAcceptanceOverTheWire(t *testing.T) {
	if testing.Short() {
		t.Skip("20 s wall-clock scenario")
	}
	var wx *wireExec
	h := newHarness(t, harnessOpts{real: true, execActor: func(h *harness) actor.Actor {
		wx = &wireExec{h: h, nc: h.b.Conn, js: h.b.JS}
		return wx
	}})
	proj := startWireProjectors(t, h)
	auditSub, err := h.b.Conn.SubscribeSync("audit.scheduler.schedule_completed.>")
	if err != nil {
		t.Fatal(err)
	}

	h.setGroups("SIM-0001", "canary")
	h.setGroups("SIM-0002", "canary", "office")
	startFleet := func(prefix string, n int) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		f, err := sim.Start(ctx, sim.Config{Conn: h.b.Conn, Agents: n, Prefix: prefix, Heartbeat: time.Second, Seed: 7, Logger: testLogger()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = f.Stop(ctx)
		})
	}
	startFleet("SIM-", 5)
	h.eventually(10*time.Second, func() error {
		n, err := h.store.R.NewSelect().Model((*storage.Agent)(nil)).Count(context.Background())
		if err != nil || n != 5 {
			return fmt.Errorf("%d agents seen", n)
		}
		return nil
	})

	putScript(t, h, "once", "1.0.0", "sleep 3s")
	putScript(t, h, "cool", "1.0.0", "sleep 1s")
	putScript(t, h, "auto", "1.0.0", "sleep 1s")
	putScript(t, h, "grp", "1.0.0", "sleep 1s")
	putScript(t, h, "tgt", "1.0.0", "fail-once\nsleep 1s")
	putScript(t, h, "ver", "1.0.0", "exit 0")
	sched := func(id, js string) {
		h.putSchedule(fmt.Sprintf(`{"id":%q,"cron":"*/2 * * * * *",%s}`, id, js))
	}
	start := time.Now()
	sched("s-once", `"job_id":"once","target":{"all":true},"mode":"once_per_pc"`)
	sched("s-cool", `"job_id":"cool","target":{"all":true},"mode":"once_per_pc","cooldown":"6s"`)
	sched("s-auto", `"job_id":"auto","target":{"all":true},"mode":"once_per_pc","auto_disable_when_done":true`)
	sched("s-grp", `"job_id":"grp","target":{"groups":["canary"]},"mode":"once_per_pc"`)
	sched("s-tgt", `"job_id":"tgt","target":{"all":true},"mode":"once_per_target"`)
	sched("s-ver", `"job_id":"ver","target":{"pcs":["SIM-0005"]}`)

	sleepUntil := func(d time.Duration) { time.Sleep(time.Until(start.Add(d))) }

	// At 7 s: a new version of the job and a new cron for s-ver.
	sleepUntil(7 * time.Second)
	putScript(t, h, "ver", "2.0.0", "exit 0")
	h.putSchedule(`{"id":"s-ver","cron":"*/5 * * * * *","job_id":"ver","target":{"pcs":["SIM-0005"]}}`)
	edited := time.Now()

	// At 10 s a sixth agent comes online.
	sleepUntil(10 * time.Second)
	startFleet("LATE-", 1)

	// At 16 s s-ver is deleted.
	sleepUntil(16 * time.Second)
	if err := h.kv(messages.BucketSchedules).Delete(context.Background(), "s-ver"); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	sleepUntil(20 * time.Second)

	sims := []string{"SIM-0001", "SIM-0002", "SIM-0003", "SIM-0004", "SIM-0005"}
	all := append(append([]string(nil), sims...), "LATE-0001")

	// once_per_pc: exactly once per agent, the late one included.
	for _, pc := range all {
		if n := len(proj.runsOf(pc, "once")); n != 1 {
			t.Errorf("once: %s ran %d times, want 1", pc, n)
		}
	}
	// cooldown: again, but never within 6 s of the previous success.
	for _, pc := range sims {
		runs := proj.runsOf(pc, "cool")
		if len(runs) < 2 {
			t.Errorf("cool: %s ran %d times in 20 s, want ≥ 2", pc, len(runs))
		}
		for i := 1; i < len(runs); i++ {
			if gap := runs[i].StartedAt.Sub(runs[i-1].FinishedAt.Time); gap < 6*time.Second {
				t.Errorf("cool: %s re-ran %v after its previous success", pc, gap)
			}
		}
	}
	// auto-disable: once each, then enabled:false in KV and audited.
	for _, pc := range sims {
		if n := len(proj.runsOf(pc, "auto")); n != 1 {
			t.Errorf("auto: %s ran %d times, want 1", pc, n)
		}
	}
	if s, _ := h.getSchedule("s-auto"); s.Enabled {
		t.Error("s-auto is still enabled in KV")
	}
	if msg, err := auditSub.NextMsg(time.Second); err != nil {
		t.Errorf("no schedule_completed audit event: %v", err)
	} else {
		var ev messages.AuditEvent
		_ = json.Unmarshal(msg.Data, &ev)
		if ev.Actor != "scheduler" || *ev.Target != "s-auto" || ev.Payload["mode"] != "once_per_pc" || ev.Payload["job_id"] != "auto" {
			t.Errorf("audit %+v", ev)
		}
	}
	// group target: the alive members of canary only.
	for _, pc := range all {
		want := 0
		if pc == "SIM-0001" || pc == "SIM-0002" {
			want = 1
		}
		if n := len(proj.runsOf(pc, "grp")); n != want {
			t.Errorf("grp: %s ran %d times, want %d", pc, n, want)
		}
	}
	// once_per_target: a failed round everywhere, a successful one, then
	// nothing (the late agent never got it: the target was done by then).
	for _, pc := range sims {
		runs := proj.runsOf(pc, "tgt")
		if len(runs) != 2 || runs[0].ExitCode == 0 || runs[1].ExitCode != 0 {
			t.Errorf("tgt: %s runs %+v, want one failure then one success", pc, exitCodes(runs))
		}
	}
	if n := len(proj.runsOf("LATE-0001", "tgt")); n != 0 {
		t.Errorf("tgt: the late agent ran it %d times", n)
	}

	// Edits at the next tick, and nothing after the delete.
	var execs []storage.Execution
	if err := h.store.R.NewSelect().Model(&execs).Where("schedule_id = ?", "s-ver").Order("created_at").Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	sawV2 := false
	for _, e := range execs {
		at := e.CreatedAt.Time
		switch {
		case at.Before(edited):
			if e.Version != "1.0.0" {
				t.Errorf("s-ver fired %s before the edit", e.Version)
			}
		case at.After(deleted.Add(time.Second)):
			t.Errorf("s-ver fired at %v, after its delete at %v", at, deleted)
		default:
			if e.Version != "2.0.0" || at.Sub(at.Truncate(5*time.Second)) > 500*time.Millisecond {
				t.Errorf("s-ver fired version %s at %v after the edit, want 2.0.0 on a multiple of 5 s", e.Version, at)
			}
			if !sawV2 && at.Sub(edited) > 5*time.Second+500*time.Millisecond {
				t.Errorf("first fire after the edit at %v, %v after it: not the next tick", at, at.Sub(edited))
			}
			sawV2 = true
		}
	}
	if !sawV2 {
		t.Errorf("s-ver never fired the edited job: %d execs", len(execs))
	}
	st, err := h.client.Summary(context.Background())
	if err != nil || st.Total != 5 {
		t.Errorf("summary %+v %v: s-ver should be gone", st, err)
	}
	if t.Failed() {
		for _, id := range []string{"s-once", "s-cool", "s-auto", "s-grp", "s-tgt"} {
			if st, err := h.client.Status(context.Background(), id); err == nil {
				for _, tk := range st.LastTicks {
					t.Logf("%s %s %s %s %s", id, tk.Instant.Format("15:04:05"), tk.Outcome, tk.ExecID, tk.Reason)
				}
			}
		}
	}
}

func exitCodes(runs []storage.ExecutionResult) []int {
	var out []int
	for _, r := range runs {
		out = append(out, r.ExitCode)
	}
	return out
}
