package executions_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"kanade-backend/actors/clock"
	"kanade-backend/cmd/kanade-backend/app"
	"kanade-backend/http/executions"
	"kanade-backend/internal/apptest"
	"kanade-backend/internal/testsupport"
	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/storagetest"
)

// POST /api/exec/{job} to all + a group + a PC: three subjects in order,
// three request_ids under one exec_id, and the version pin already in
// place when an agent reads it on receiving the first Command.
func TestExecPublishesThreeSubjectsAfterThePin(t *testing.T) {
	t.Parallel()
	b := apptest.Start(t)
	putJob(t, b, "job1", "2.0.0", "echo hi")

	// The agent reads script_current on its own connection when the first
	// Command arrives, exactly as a real agent checks the pin.
	_, js := testsupport.ConnectJS(t, b.NATSURL)
	pins, err := js.KeyValue(context.Background(), messages.BucketScriptCurrent)
	if err != nil {
		t.Fatal(err)
	}
	var pinMu sync.Mutex
	pin := ""
	ag := startAgentWith(t, b.NATSURL, func() {
		v := "<missing>"
		if e, err := pins.Get(context.Background(), "job1"); err == nil {
			v = string(e.Value())
		}
		pinMu.Lock()
		pin = v
		pinMu.Unlock()
	}, "commands.>") // one subscription keeps the publish order

	heartbeat(t, b, "p1")
	resp, body := b.Do(t, "POST", "/api/exec/job1", `{"target":{"all":true,"groups":["a"],"pcs":["p1"]}}`,
		"X-Kanade-Source", "cli")
	if resp.StatusCode != 200 {
		t.Fatalf("exec: %d %s", resp.StatusCode, body)
	}
	var r messages.ExecResponse
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatal(err)
	}
	if r.TargetCount != 3 || strings.Join(r.Subjects, " ") != "commands.all commands.group.a commands.pc.p1" ||
		r.JobID != "job1" || r.Version != "2.0.0" || len(r.ExecID) != 36 {
		t.Fatalf("response = %s", body)
	}
	got := ag.waitN(t, 3, 5*time.Second)
	if ag.subjects() != "commands.all commands.group.a commands.pc.p1" {
		t.Fatalf("agent received %s", ag.subjects())
	}
	ids := map[string]bool{}
	for _, g := range got {
		ids[g.cmd.RequestID] = true
		if g.cmd.JobID == nil || *g.cmd.JobID != r.ExecID {
			t.Fatalf("job_id %v, want exec_id %s", g.cmd.JobID, r.ExecID)
		}
	}
	if len(ids) != 3 {
		t.Fatalf("request_ids not distinct: %v", ids)
	}
	pinMu.Lock()
	defer pinMu.Unlock()
	if pin != "2.0.0" {
		t.Fatalf("pin seen with the first Command = %q, want 2.0.0", pin)
	}

	var d executions.Detail
	b.JSON(t, "GET", "/api/executions/"+r.ExecID, nil, 200, &d)
	if d.InitiatedBy != "operator:admin" || d.Status != "pending" || d.TargetCount != 3 {
		t.Fatalf("detail = %+v", d.Execution)
	}

	// The exec audit event, read back from the AUDIT stream.
	ev := lastAudit(t, b, "audit.operator.exec.job1")
	if ev.Payload["exec_id"] != r.ExecID || ev.Payload["sub"] != "admin" || ev.Payload["source"] != "cli" ||
		ev.Payload["wave_mode"] != false || fmt.Sprint(ev.Payload["target_count"]) != "3" {
		t.Fatalf("exec audit event = %+v", ev)
	}

	resp, body = b.Do(t, "GET", "/metrics", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d", resp.StatusCode)
	}
	for _, want := range []string{`kanade_exec_fired_total{actor="operator"} 1`, "kanade_exec_commands_published_total 3",
		"kanade_exec_publish_failures_total 0", "kanade_exec_pending_waves 0", "kanade_exec_fanout_duration_seconds_count 1"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// lastAudit reads the newest audit event stored on subject.
func lastAudit(t *testing.T, b *apptest.Backend, subject string) messages.AuditEvent {
	t.Helper()
	var ev messages.AuditEvent
	apptest.Eventually(t, 5*time.Second, func() error {
		msg, err := b.JS.Stream(context.Background(), messages.StreamAudit)
		if err != nil {
			return err
		}
		m, err := msg.GetLastMsgForSubject(context.Background(), subject)
		if err != nil {
			return err
		}
		return json.Unmarshal(m.Data, &ev)
	})
	return ev
}

// canary@0s runs at once, wave1@3s about three seconds later.
func TestRolloutWavesOverHTTP(t *testing.T) {
	t.Parallel()
	b := apptest.Start(t)
	putJob(t, b, "job1", "1", "echo")
	canary := startAgent(t, b.NATSURL, "commands.group.canary")
	wave1 := startAgent(t, b.NATSURL, "commands.group.wave1")
	member(t, b, "c1", "canary")
	t0 := time.Now()
	r := execJob(t, b, "job1", `{"rollout":{"waves":[{"group":"canary","delay":"0s"},{"group":"wave1","delay":"3s"}]}}`)
	if r.TargetCount != 2 {
		t.Fatalf("response = %+v", r)
	}
	c := canary.waitN(t, 1, 2*time.Second)
	if d := c[0].at.Sub(t0); d > time.Second {
		t.Fatalf("canary ran %v after the exec", d)
	}
	w := wave1.waitN(t, 1, 6*time.Second)
	if d := w[0].at.Sub(t0); d < 2900*time.Millisecond || d > 6*time.Second {
		t.Fatalf("wave1 ran %v after the exec, want about 3s", d)
	}
	if *w[0].cmd.JobID != r.ExecID {
		t.Fatal("wave1 Command carries another exec_id")
	}
}

// The backend stops after the canary and starts again on the same data
// directory: wave1 still runs, about three seconds after the exec.
func TestRolloutWaveSurvivesBackendRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	natsAddr := freeAddr(t)
	opts := apptest.Options{DataDir: dir, Configure: func(c *app.Config) { c.NATS.Listen = natsAddr }}
	b, stop := apptest.StartManual(t, opts)
	putJob(t, b, "job1", "1", "echo")
	canary := startAgent(t, b.NATSURL, "commands.group.canary")
	wave1 := startAgent(t, b.NATSURL, "commands.group.wave1")
	member(t, b, "c1", "canary")
	t0 := time.Now()
	r := execJob(t, b, "job1", `{"rollout":{"waves":[{"group":"canary","delay":"0s"},{"group":"wave1","delay":"3s"}]}}`)
	canary.waitN(t, 1, 2*time.Second)
	stop()
	restarted := time.Now()
	if restarted.Sub(t0) > 2500*time.Millisecond {
		t.Logf("stop took until %v after the exec; wave1 will be overdue at start", restarted.Sub(t0))
	}
	b2, stop2 := apptest.StartManual(t, opts)
	defer stop2()
	t.Logf("backend down for %v", time.Since(restarted))
	w := wave1.waitN(t, 1, 8*time.Second)
	d := w[0].at.Sub(t0)
	t.Logf("wave1 ran %v after the exec", d)
	if d < 2900*time.Millisecond || d > 6*time.Second {
		t.Fatalf("wave1 ran %v after the exec, want about 3s", d)
	}
	if *w[0].cmd.JobID != r.ExecID || len(canary.all()) != 1 {
		t.Fatalf("after restart: wave1 %+v, canary got %d", w[0].cmd, len(canary.all()))
	}
	var dt executions.Detail
	apptest.Eventually(t, 5*time.Second, func() error {
		b2.JSON(t, "GET", "/api/executions/"+r.ExecID, nil, 200, &dt)
		if len(dt.Waves) != 2 || dt.Waves[1].State != storage.WavePublished || dt.TargetCount != 2 {
			return fmt.Errorf("waves %+v target_count %d", dt.Waves, dt.TargetCount)
		}
		return nil
	})
}

// Cancel before wave1's time: wave1 never runs. The backend runs on a
// fake clock, so wave1's time is reached by advancing it, not by sleeping.
func TestCancelBeforeTheWaveStopsIt(t *testing.T) {
	t.Parallel()
	fake := clock.NewFake(time.Now())
	b := apptest.Start(t, apptest.Options{Prepare: func(a *app.App) { a.Clock = fake }})
	putJob(t, b, "job1", "1", "echo")
	canary := startAgent(t, b.NATSURL, "commands.group.canary")
	wave1 := startAgent(t, b.NATSURL, "commands.group.wave1")
	member(t, b, "c1", "canary")
	r := execJob(t, b, "job1", `{"rollout":{"waves":[{"group":"canary","delay":"0s"},{"group":"wave1","delay":"3s"}]}}`)
	canary.waitN(t, 1, 2*time.Second)

	var reply map[string]any
	b.JSON(t, "POST", "/api/executions/"+r.ExecID+"/cancel", nil, 200, &reply)
	if reply["exec_id"] != r.ExecID || reply["cancelled_waves"] != float64(1) || reply["status"] != "pending" ||
		reply["job_id"] != "job1" || reply["target_count"] != float64(1) {
		t.Fatalf("cancel = %v", reply)
	}
	resp, body := b.Do(t, "POST", "/api/executions/"+r.ExecID+"/cancel", nil)
	if resp.StatusCode != 409 || apptest.ErrorText(t, body) != "execution '"+r.ExecID+"' has no pending rollout waves to cancel" {
		t.Fatalf("second cancel: %d %s", resp.StatusCode, body)
	}
	fake.Advance(3500 * time.Millisecond)
	// The engine handles messages in order: once a third cancel is
	// answered, a wave made due by the advance has been handled too.
	resp, body = b.Do(t, "POST", "/api/executions/"+r.ExecID+"/cancel", nil)
	if resp.StatusCode != 409 {
		t.Fatalf("cancel after wave1's time: %d %s", resp.StatusCode, body)
	}
	if n := len(wave1.all()); n != 0 {
		t.Fatalf("wave1 ran %d times after cancel", n)
	}
	var d executions.Detail
	b.JSON(t, "GET", "/api/executions/"+r.ExecID, nil, 200, &d)
	if len(d.Waves) != 2 || d.Waves[0].State != "published" || d.Waves[1].State != "cancelled" {
		t.Fatalf("waves = %+v", d.Waves)
	}
}

func TestKillPublishesOnTheExecID(t *testing.T) {
	t.Parallel()
	b := apptest.Start(t)
	id := "e3b4c0d2-8a41-4b7f-9c57-0f7d2b8e1a33"
	ag := startAgent(t, b.NATSURL, "kill.>")
	var mu sync.Mutex
	var actions []string
	sub, err := b.Conn.Subscribe("audit.operator.exec_kill.>", func(m *nats.Msg) {
		mu.Lock()
		actions = append(actions, m.Subject)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	for _, path := range []string{"/api/jobs/" + id + "/kill", "/api/executions/" + id + "/kill"} {
		b.JSON(t, "POST", path, nil, http.StatusNoContent, nil)
	}
	got := ag.waitN(t, 2, 5*time.Second)
	for _, g := range got {
		if g.subject != "kill."+id {
			t.Fatalf("kill on %s", g.subject)
		}
	}
	apptest.Eventually(t, 5*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(actions) != 2 {
			return fmt.Errorf("exec_kill audit events: %v", actions)
		}
		return nil
	})
	resp, body := b.Do(t, "POST", "/api/executions/a.b/kill", nil)
	if resp.StatusCode != 400 || !strings.HasPrefix(apptest.ErrorText(t, body), `invalid exec id "a.b"`) {
		t.Fatalf("bad id: %d %s", resp.StatusCode, body)
	}
}

func TestExecErrorsUseTheAPITexts(t *testing.T) {
	t.Parallel()
	b := apptest.Start(t)
	putJob(t, b, "job1", "1", "echo")
	heartbeat(t, b, "pc-1", "a")
	kv, err := b.JS.KeyValue(context.Background(), messages.BucketJobs)
	if err != nil {
		t.Fatal(err)
	}
	// A job stored around the API with a timeout the API would refuse.
	if _, err := kv.Put(context.Background(), "badtimeout", []byte(`{"id":"badtimeout","version":"1","execute":{"shell":"cmd","script":"x","timeout":"1x"}}`)); err != nil {
		t.Fatal(err)
	}
	const noTarget = "target must specify at least one of all / groups / pcs (or set rollout.waves)"
	cases := []struct {
		name, path, body string
		status           int
		text             string
	}{
		{"unknown job", "/api/exec/nope", `{"target":{"all":true}}`, 404, "job 'nope' not found in catalog"},
		{"no target", "/api/exec/job1", `{}`, 400, noTarget},
		{"empty body", "/api/exec/job1", ``, 400, noTarget},
		{"empty target", "/api/exec/job1", `{"target":{"all":false,"groups":[],"pcs":[]}}`, 400, noTarget},
		{"bad jitter", "/api/exec/job1", `{"target":{"all":true},"jitter":"a while"}`, 400, "invalid jitter: …"},
		{"bad wave delay", "/api/exec/job1", `{"rollout":{"waves":[{"group":"a","delay":"0s"},{"group":"b","delay":"5"}]}}`, 400, "invalid rollout.waves[1].delay: …"},
		{"bad timeout", "/api/exec/badtimeout", `{"target":{"all":true}}`, 400, "invalid timeout: …"},
		{"bad group", "/api/exec/job1", `{"target":{"groups":["a b"]}}`, 400, `invalid group "a b": …`},
		{"bad job id", "/api/exec/a.b", `{"target":{"all":true}}`, 400, `invalid job id "a.b": …`},
		{"malformed", "/api/exec/job1", `{"target":`, 400, "malformed JSON …"},
		{"wrong type", "/api/exec/job1", `{"target":{"all":"yes"}}`, 400, "invalid target.all: …"},
		{"unknown job, empty target", "/api/exec/nope", `{"target":{"groups":["canray"]}}`, 404, "job 'nope' not found in catalog"},
		{"no PC", "/api/exec/job1", `{"target":{"groups":["canray"],"pcs":["ghost"]}}`, 400,
			"target matches no PCs (unknown group 'canray' (no PC is a member); unknown PC 'ghost' (no heartbeat, no group))"},
		{"waves to nobody", "/api/exec/job1", `{"target":{"all":true},"rollout":{"waves":[{"group":"b","delay":"0s"}]}}`, 400,
			"target matches no PCs (unknown group 'b' (no PC is a member))"},
		{"cancel unknown", "/api/executions/00000000-0000-4000-8000-000000000000/cancel", ``, 404, "execution '00000000-0000-4000-8000-000000000000' not found"},
		{"rerun unknown", "/api/executions/00000000-0000-4000-8000-000000000000/rerun-failed", ``, 404, "execution '00000000-0000-4000-8000-000000000000' not found"},
		{"cancel bad id", "/api/executions/a*b/cancel", ``, 400, `invalid exec id "a*b": …`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var body any
			if c.body != "" {
				body = c.body
			}
			resp, out := b.Do(t, "POST", c.path, body)
			text := apptest.ErrorText(t, out)
			if resp.StatusCode != c.status {
				t.Errorf("status %d, want %d (%s)", resp.StatusCode, c.status, text)
			}
			if prefix, ok := strings.CutSuffix(c.text, "…"); ok {
				if !strings.HasPrefix(text, prefix) {
					t.Errorf("error %q, want prefix %q", text, prefix)
				}
			} else if text != c.text {
				t.Errorf("error %q, want %q", text, c.text)
			}
		})
	}
	for _, path := range []string{"/api/executions/nope-not-there", "/api/executions?status=done"} {
		resp, out := b.Do(t, "GET", path, nil)
		if resp.StatusCode/100 != 4 {
			t.Errorf("GET %s: %d %s", path, resp.StatusCode, out)
		}
	}
	resp, out := b.Do(t, "GET", "/api/executions?status=done", nil)
	if resp.StatusCode != 400 || apptest.ErrorText(t, out) != `invalid status "done": want one of pending, running, completed, failed, expired, cancelled, held` {
		t.Fatalf("bad status filter: %d %s", resp.StatusCode, out)
	}
}

// An edit made through the API applies to the next exec.
func TestJobEditTakesEffectAtTheNextExec(t *testing.T) {
	t.Parallel()
	b := apptest.Start(t)
	ag := startAgent(t, b.NATSURL, "commands.pc.p1")
	heartbeat(t, b, "p1")
	putJob(t, b, "job1", "1.0.0", "echo one")
	execJob(t, b, "job1", `{"target":{"pcs":["p1"]}}`)
	putJob(t, b, "job1", "1.0.1", "echo two")
	r := execJob(t, b, "job1", `{"target":{"pcs":["p1"]}}`)
	if r.Version != "1.0.1" {
		t.Fatalf("second exec version %s", r.Version)
	}
	got := ag.waitN(t, 2, 5*time.Second)
	if got[0].cmd.Script != "echo one" || got[1].cmd.Script != "echo two" || got[1].cmd.Version != "1.0.1" {
		t.Fatalf("commands = %+v / %+v", got[0].cmd, got[1].cmd)
	}
}

func TestExecutionsListDetailAndRerun(t *testing.T) {
	t.Parallel()
	storagetest.RunDialects(t, testExecutionsListDetailAndRerun)
}

func testExecutionsListDetailAndRerun(t *testing.T, db storagetest.Dialect) {
	b := apptest.Start(t, apptest.Options{DBURL: db.URL(t)})
	putJob(t, b, "job1", "1", "echo")
	putJob(t, b, "job2", "1", "echo")
	heartbeat(t, b, "a1", "g")
	for _, pc := range []string{"p1", "p2", "p3", "p9"} {
		heartbeat(t, b, pc)
	}
	ag := startAgent(t, b.NATSURL, "commands.pc.>")

	first := execJob(t, b, "job1", `{"target":{"pcs":["p1","p2","p3"]},"jitter":"10s","rollout":null}`)
	second := execJob(t, b, "job2", `{"target":{"groups":["g"]}}`)
	if second.ExpectedPcs != 1 {
		t.Fatalf("group exec expected_pcs = %d", second.ExpectedPcs)
	}

	var list []storage.Execution
	resp, body := b.Do(t, "GET", "/api/executions", nil)
	if err := json.Unmarshal(body, &list); err != nil || resp.Header.Get("X-Total-Count") != "2" ||
		len(list) != 2 || list[0].ExecID != second.ExecID || list[1].ExecID != first.ExecID {
		t.Fatalf("list: %s (total %s)", body, resp.Header.Get("X-Total-Count"))
	}
	b.JSON(t, "GET", "/api/executions?job_id=job1", nil, 200, &list)
	if len(list) != 1 || list[0].ExecID != first.ExecID || list[0].ExpectedPcs != 3 {
		t.Fatalf("filter job_id: %+v", list)
	}
	b.JSON(t, "GET", "/api/executions?status=pending&initiated_by=operator:admin&limit=1&offset=1", nil, 200, &list)
	if len(list) != 1 || list[0].ExecID != first.ExecID {
		t.Fatalf("filter status+initiated_by+page: %+v", list)
	}
	b.JSON(t, "GET", "/api/executions?initiated_by=scheduler:x", nil, 200, &list)
	if len(list) != 0 {
		t.Fatalf("filter initiated_by: %+v", list)
	}

	// p1 succeeded, p2 failed, p3 is silent.
	result(t, b, first.ExecID, "commands.pc.p1", "p1", 0)
	result(t, b, first.ExecID, "commands.pc.p2", "p2", 3)
	var d executions.Detail
	b.JSON(t, "GET", "/api/executions/"+first.ExecID, nil, 200, &d)
	states := map[string]executions.PCStatus{}
	for _, p := range d.Pcs {
		states[p.PcID] = p
	}
	if len(d.Pcs) != 3 || states["p1"].State != "answered" || *states["p1"].ExitCode != 0 || *states["p1"].DurationMs != 1500 ||
		*states["p2"].ExitCode != 3 || states["p3"].State != "pending" {
		t.Fatalf("per-PC rows = %+v", d.Pcs)
	}
	if d.Summary != (executions.Summary{Answered: 2, Succeeded: 1, Failed: 1, Pending: 1}) {
		t.Fatalf("summary = %+v", d.Summary)
	}
	if !strings.Contains(string(d.Manifest), `"id":"job1"`) || d.JitterSecs == nil || *d.JitterSecs != 10 {
		t.Fatalf("manifest %s jitter %v", d.Manifest, d.JitterSecs)
	}

	// Before the deadline only the failed PC re-runs.
	ag.waitN(t, 3, 5*time.Second)
	var re messages.ExecResponse
	b.JSON(t, "POST", "/api/executions/"+first.ExecID+"/rerun-failed", nil, 200, &re)
	if strings.Join(re.Subjects, " ") != "commands.pc.p2" {
		t.Fatalf("rerun before deadline = %+v", re)
	}
	// After it, the silent one too; the jitter is kept.
	if _, err := b.Store.W.NewUpdate().Model((*storage.Execution)(nil)).Set("deadline_at = ?", storage.T(time.Now().Add(-time.Second))).
		Where("exec_id = ?", first.ExecID).Exec(context.Background()); err != nil {
		t.Fatal(err)
	}
	b.JSON(t, "GET", "/api/executions/"+first.ExecID, nil, 200, &d)
	if d.Summary.NeverAnswered != 1 {
		t.Fatalf("after the deadline: %+v", d.Summary)
	}
	b.JSON(t, "POST", "/api/executions/"+first.ExecID+"/rerun-failed", nil, 200, &re)
	if strings.Join(re.Subjects, " ") != "commands.pc.p2 commands.pc.p3" || re.JobID != "job1" {
		t.Fatalf("rerun after deadline = %+v", re)
	}
	got := ag.waitN(t, 6, 5*time.Second)
	last := got[len(got)-1].cmd
	if last.JitterSecs == nil || *last.JitterSecs != 10 || *last.JobID != re.ExecID {
		t.Fatalf("rerun command = %+v", last)
	}
	b.JSON(t, "GET", "/api/executions/"+re.ExecID, nil, 200, &d)
	if !strings.Contains(string(d.Plan), `"pcs":["p2","p3"]`) || strings.Contains(string(d.Plan), "rollout") {
		t.Fatalf("rerun plan = %s", d.Plan)
	}

	// Nothing failed, nothing silent: 400.
	ok := execJob(t, b, "job1", `{"target":{"pcs":["p9"]}}`)
	result(t, b, ok.ExecID, "commands.pc.p9", "p9", 0)
	resp, body = b.Do(t, "POST", "/api/executions/"+ok.ExecID+"/rerun-failed", nil)
	if resp.StatusCode != 400 || !strings.HasPrefix(apptest.ErrorText(t, body), "execution '"+ok.ExecID+"' has nothing to re-run") {
		t.Fatalf("rerun with nothing to do: %d %s", resp.StatusCode, body)
	}
}
