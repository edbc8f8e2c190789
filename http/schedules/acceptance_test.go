package schedules_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"kanade-backend/internal/apptest"
	"kanade-backend/internal/sim"
	"kanade-backend/messages"
	"kanade-backend/storage"
)

// TestAcceptanceEndToEnd is the scheduler's acceptance (issue #5) on the
// whole backend — HTTP API, KV, exec engine, projectors, scheduler — with
// simulated agents speaking the wire contract over TCP (kanade-fleet's
// sim), for 20 s of wall clock. All scenarios run side by side on one
// fleet of five agents (a sixth joins at 10 s):
//
//   - once_per_pc on all, every 2 s, "sleep 3s": exactly one run per agent
//     (in-flight suppression), the late agent included;
//   - with cooldown 6s: runs again, never within 6 s of the last success;
//   - with auto_disable_when_done and no cooldown: enabled:false in KV and
//     schedule_completed in the audit log;
//   - once_per_pc on a group: the group's alive members only;
//   - once_per_target: the whole target until one PC succeeds, then no
//     more;
//   - a job edit and a cron edit take effect at the next tick; a deleted
//     schedule fires no more.
func TestAcceptanceEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("20 s wall-clock scenario")
	}
	b := apptest.Start(t)
	ctx := context.Background()
	kv := func(bucket string) interface {
		Put(context.Context, string, []byte) (uint64, error)
	} {
		k, err := b.JS.KeyValue(ctx, bucket)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	job := func(id, version, script string) {
		m := messages.Manifest{ID: id, Version: version, Execute: messages.Execute{Shell: messages.ShellPowerShell,
			Script: script, Timeout: "30s", RunAs: messages.RunAsSystem}}
		j, _ := json.Marshal(m)
		if _, err := kv(messages.BucketJobs).Put(ctx, id, j); err != nil {
			t.Fatal(err)
		}
	}
	groups := func(pc string, gs ...string) {
		g, _ := json.Marshal(messages.AgentGroups{Groups: gs})
		if _, err := kv(messages.BucketAgentGroups).Put(ctx, pc, g); err != nil {
			t.Fatal(err)
		}
	}
	fleet := func(prefix string, n int) {
		b.StartFleet(t, sim.Config{Agents: n, Prefix: prefix, Heartbeat: time.Second, Seed: 5})
	}
	countRows := func(model any, where string, args ...any) int {
		n, err := b.Store.R.NewSelect().Model(model).Where(where, args...).Count(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return int(n)
	}

	groups("SIM-0001", "canary")
	groups("SIM-0002", "canary", "office")
	fleet("SIM-", 5)
	projected := time.Now().Add(10 * time.Second)
	for countRows((*storage.Agent)(nil), "1 = 1") == 0 {
		if time.Now().After(projected) {
			t.Fatal("no heartbeat projected within 10 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	apptest.Eventually(t, 10*time.Second, func() error {
		if n := countRows((*storage.Agent)(nil), "1 = 1"); n != 5 {
			return fmt.Errorf("%d agents projected", n)
		}
		if n := countRows((*storage.GroupMember)(nil), "group_name = ?", "canary"); n != 2 {
			return fmt.Errorf("%d canary members mirrored", n)
		}
		return nil
	})

	job("once", "1.0.0", "sleep 3s")
	job("cool", "1.0.0", "sleep 1s")
	job("auto", "1.0.0", "sleep 1s")
	job("grp", "1.0.0", "sleep 1s")
	job("tgt", "1.0.0", "fail-once\nsleep 1s")
	job("ver", "1.0.0", "exit 0")
	job("edit", "1.0.0", "echo v1")
	post := func(s map[string]any) {
		b.JSON(t, http.MethodPost, "/api/schedules", s, 200, nil)
	}
	every2 := func(id, jobID string, target map[string]any, extra map[string]any) map[string]any {
		s := map[string]any{"id": id, "cron": "*/2 * * * * *", "job_id": jobID, "target": target}
		for k, v := range extra {
			s[k] = v
		}
		return s
	}
	all := map[string]any{"all": true}
	start := time.Now()
	post(every2("s-once", "once", all, map[string]any{"mode": "once_per_pc"}))
	post(every2("s-cool", "cool", all, map[string]any{"mode": "once_per_pc", "cooldown": "6s"}))
	post(every2("s-auto", "auto", all, map[string]any{"mode": "once_per_pc", "auto_disable_when_done": true}))
	post(every2("s-grp", "grp", map[string]any{"groups": []string{"canary"}}, map[string]any{"mode": "once_per_pc"}))
	post(every2("s-tgt", "tgt", all, map[string]any{"mode": "once_per_target"}))
	post(every2("s-ver", "ver", map[string]any{"pcs": []string{"SIM-0005"}}, nil))
	post(every2("s-edit", "edit", map[string]any{"pcs": []string{"SIM-0004"}}, nil))
	at := func(d time.Duration) { time.Sleep(time.Until(start.Add(d))) }

	at(7 * time.Second)
	// A job edit alone (the schedule untouched) applies at the next tick.
	job("edit", "2.0.0", "echo v2")
	jobEdited := time.Now()
	job("ver", "2.0.0", "exit 0")
	post(map[string]any{"id": "s-ver", "cron": "*/5 * * * * *", "job_id": "ver", "target": map[string]any{"pcs": []string{"SIM-0005"}}})
	edited := time.Now()
	at(10 * time.Second)
	fleet("LATE-", 1)
	at(16 * time.Second)
	if resp, body := b.Do(t, http.MethodDelete, "/api/schedules/s-ver", nil); resp.StatusCode != 204 {
		t.Fatalf("delete: %d %s", resp.StatusCode, body)
	}
	deleted := time.Now()
	at(20 * time.Second)

	runs := func(pc, jobID string) []storage.ExecutionResult {
		var rows []storage.ExecutionResult
		if err := b.Store.R.NewSelect().Model(&rows).Where("pc_id = ? AND job_id = ?", pc, jobID).
			Order("started_at").Scan(ctx); err != nil {
			t.Fatal(err)
		}
		return rows
	}
	sims := []string{"SIM-0001", "SIM-0002", "SIM-0003", "SIM-0004", "SIM-0005"}
	everyone := append(append([]string(nil), sims...), "LATE-0001")
	// Results reach the store through the RESULTS stream; allow the last
	// ones a moment.
	apptest.Eventually(t, 5*time.Second, func() error {
		for _, pc := range everyone {
			if n := len(runs(pc, "once")); n != 1 {
				return fmt.Errorf("once: %s ran %d times, want 1", pc, n)
			}
		}
		return nil
	})
	for _, pc := range sims {
		rs := runs(pc, "cool")
		if len(rs) < 2 {
			t.Errorf("cool: %s ran %d times in 20 s, want ≥ 2", pc, len(rs))
		}
		for i := 1; i < len(rs); i++ {
			if gap := rs[i].StartedAt.Sub(rs[i-1].FinishedAt.Time); gap < 6*time.Second {
				t.Errorf("cool: %s re-ran %v after its previous success", pc, gap)
			}
		}
		if n := len(runs(pc, "auto")); n != 1 {
			t.Errorf("auto: %s ran %d times, want 1", pc, n)
		}
		if rs := runs(pc, "tgt"); len(rs) != 2 || rs[0].ExitCode == 0 || rs[1].ExitCode != 0 {
			t.Errorf("tgt: %s ran %d times, want a failure then a success", pc, len(rs))
		}
	}
	for _, pc := range everyone {
		want := 0
		if pc == "SIM-0001" || pc == "SIM-0002" {
			want = 1
		}
		if n := len(runs(pc, "grp")); n != want {
			t.Errorf("grp: %s ran %d times, want %d", pc, n, want)
		}
	}
	if n := len(runs("LATE-0001", "tgt")); n != 0 {
		t.Errorf("tgt: the late agent ran it %d times after the target was done", n)
	}

	// Auto-disabled: enabled:false in KV (GET /api/schedules reads KV) and
	// audited by the scheduler.
	var list []messages.Schedule
	b.JSON(t, http.MethodGet, "/api/schedules", nil, 200, &list)
	for _, s := range list {
		if s.ID == "s-auto" && s.Enabled {
			t.Error("s-auto is still enabled in KV")
		}
		if s.ID == "s-ver" {
			t.Error("s-ver is still listed after its delete")
		}
	}
	apptest.Eventually(t, 5*time.Second, func() error {
		var rows []storage.AuditRow
		if err := b.Store.R.NewSelect().Model(&rows).Where("action = ?", messages.ActionScheduleCompleted).Scan(ctx); err != nil {
			return err
		}
		if len(rows) != 1 || rows[0].Actor != "scheduler" || rows[0].Target == nil || *rows[0].Target != "s-auto" {
			return fmt.Errorf("schedule_completed audit rows: %d", len(rows))
		}
		var p map[string]any
		_ = json.Unmarshal(rows[0].Payload, &p)
		if p["mode"] != "once_per_pc" || p["job_id"] != "auto" {
			return fmt.Errorf("payload %v", p)
		}
		return nil
	})

	// s-ver: version 1 before the edit, version 2 on multiples of 5 s from
	// the next tick after it, nothing after the delete.
	var execs []storage.Execution
	if err := b.Store.R.NewSelect().Model(&execs).Where("schedule_id = ?", "s-ver").Order("created_at").Scan(ctx); err != nil {
		t.Fatal(err)
	}
	sawV2 := false
	for _, e := range execs {
		created := e.CreatedAt.Time
		switch {
		case created.Before(edited):
			if e.Version != "1.0.0" {
				t.Errorf("s-ver fired %s before the edit", e.Version)
			}
		case created.After(deleted.Add(time.Second)):
			t.Errorf("s-ver fired at %v, after its delete at %v", created, deleted)
		default:
			if e.Version != "2.0.0" || created.Sub(created.Truncate(5*time.Second)) > 500*time.Millisecond {
				t.Errorf("s-ver fired %s at %v after the edit, want 2.0.0 on a multiple of 5 s", e.Version, created)
			}
			if !sawV2 && created.Sub(edited) > 5500*time.Millisecond {
				t.Errorf("first fire after the edit came %v after it: not the next tick", created.Sub(edited))
			}
			sawV2 = true
		}
	}
	if !sawV2 {
		t.Errorf("s-ver never fired the edited job (%d execs)", len(execs))
	}

	// s-edit: "*/2 * * * * *" fires every 2 s on even seconds (not every
	// 2 minutes), and the job edit alone shows from the next tick on.
	execs = nil
	if err := b.Store.R.NewSelect().Model(&execs).Where("schedule_id = ?", "s-edit").Order("created_at").Scan(ctx); err != nil {
		t.Fatal(err)
	}
	if len(execs) < 8 {
		t.Errorf("s-edit fired %d times in about 20 s, want one every 2 s", len(execs))
	}
	firstV2 := time.Time{}
	for i, e := range execs {
		created := e.CreatedAt.Time
		if off := created.Sub(created.Truncate(2 * time.Second)); off > 500*time.Millisecond {
			t.Errorf("s-edit fired at %v, %v after an even second", created, off)
		}
		if i > 0 {
			if gap := created.Sub(execs[i-1].CreatedAt.Time); gap < 1500*time.Millisecond || gap > 2500*time.Millisecond {
				t.Errorf("s-edit fired %v after the previous fire, want 2 s", gap)
			}
		}
		want := "1.0.0"
		if created.After(jobEdited) {
			want = "2.0.0"
			if firstV2.IsZero() {
				firstV2 = created
			}
		}
		if e.Version != want {
			t.Errorf("s-edit fired version %s at %v (job edited at %v), want %s", e.Version, created, jobEdited, want)
		}
	}
	if firstV2.IsZero() || firstV2.Sub(jobEdited) > 2500*time.Millisecond {
		t.Errorf("first fire of the edited job at %v, job edited at %v: not the next tick", firstV2, jobEdited)
	}
	var outs []storage.ExecutionResult
	if err := b.Store.R.NewSelect().Model(&outs).Where("pc_id = 'SIM-0004' AND job_id = 'edit'").Order("started_at").Scan(ctx); err != nil {
		t.Fatal(err)
	}
	said := make([]string, len(outs))
	for i, r := range outs {
		said[i] = strings.TrimSpace(r.Stdout)
	}
	if len(said) < 2 || said[0] != "v1" || said[len(said)-1] != "v2" {
		t.Errorf("SIM-0004 running the edit job said %q, want v1 first and v2 last", said)
	}
	if t.Failed() {
		for _, id := range []string{"s-once", "s-cool", "s-auto", "s-grp", "s-tgt"} {
			var st struct {
				Status struct {
					LastTicks []map[string]any `json:"last_ticks"`
				} `json:"status"`
			}
			b.JSON(t, http.MethodGet, "/api/schedules/"+id, nil, 200, &st)
			for _, tk := range st.Status.LastTicks {
				t.Logf("%s %v %v %v %v", id, tk["instant"], tk["outcome"], tk["exec_id"], tk["reason"])
			}
		}
	}
}
