package fleet_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"kanade-backend/http/fleet"
	"kanade-backend/http/internal/fleettest"
	"kanade-backend/internal/apptest"
	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/storagetest"
)

// DELETE /api/agents/{pc_id} takes a PC out of the fleet (its row and
// groups), keeps its history, is audited, refuses an online PC, and stops
// once_per_pc schedules from waiting for it: a schedule whose only
// remaining PC is decommissioned completes and disables itself.
func TestDecommission(t *testing.T) {
	storagetest.RunDialects(t, testDecommission)
}

func testDecommission(t *testing.T, d storagetest.Dialect) {
	b := apptest.Start(t, apptest.Options{DBURL: d.URL(t)})
	ctx := context.Background()
	audit := fleettest.RecordAudit(t, b.Conn)
	now := time.Now().UTC()
	fleettest.InsertAgents(t, b.Store,
		fleettest.Agent{PcID: "OLD-1", Hostname: "old1", OS: "windows", Seen: now.Add(-72 * time.Hour)},
		fleettest.Agent{PcID: "DONE-1", Hostname: "done1", OS: "windows", Seen: now.Add(-24 * time.Hour)},
		fleettest.Agent{PcID: "LIVE-1", Hostname: "live1", OS: "windows", Seen: now},
	)
	for _, pc := range []string{"OLD-1", "DONE-1", "KIT-1"} {
		b.JSON(t, http.MethodPut, "/api/agents/"+pc+"/groups", map[string]any{"groups": []string{"lab"}}, 200, nil)
	}
	// History: DONE-1 ran the job yesterday, OLD-1 failed it.
	result := func(pc string, code int) storage.ExecutionResult {
		job, at := "hello", storage.T(now.Add(-20*time.Hour))
		return storage.ExecutionResult{RequestID: "req-" + pc, PcID: pc, JobID: &job, ExitCode: code,
			StartedAt: at, FinishedAt: at, RecordedAt: at, StreamSeq: 1}
	}
	if err := storage.InsertChunked(ctx, b.Store.W, []storage.ExecutionResult{result("DONE-1", 0), result("OLD-1", 1)}, false); err != nil {
		t.Fatal(err)
	}
	if resp, body := b.Do(t, http.MethodPost, "/api/jobs", "id: hello\nversion: 1.0.0\nexecute:\n  shell: cmd\n  script: echo hi\n  timeout: 30s\n",
		"Content-Type", "application/yaml"); resp.StatusCode != 200 {
		t.Fatalf("POST /api/jobs: %d %s", resp.StatusCode, body)
	}
	b.JSON(t, http.MethodPost, "/api/schedules", map[string]any{"id": "lab-once", "cron": "* * * * * *", "job_id": "hello",
		"target": map[string]any{"groups": []string{"lab"}}, "mode": "once_per_pc", "auto_disable_when_done": true}, 200, nil)
	type progress struct {
		Status struct {
			State    string `json:"state"`
			Progress *struct {
				Done, Remaining, Offline int
			} `json:"progress"`
		} `json:"status"`
	}
	waitProgress := func(state string, done, remaining int) {
		t.Helper()
		apptest.Eventually(t, 10*time.Second, func() error {
			var p progress
			b.JSON(t, http.MethodGet, "/api/schedules/lab-once", nil, 200, &p)
			pr := p.Status.Progress
			if p.Status.State != state || pr == nil || pr.Done != done || pr.Remaining != remaining || pr.Offline != remaining {
				return fmt.Errorf("state %s, progress %+v", p.Status.State, pr)
			}
			return nil
		})
	}
	// OLD-1 and KIT-1 (groups, never seen) remain, both offline.
	waitProgress("running", 1, 2)

	wantErrorPrefix(t, b, http.MethodDelete, "/api/agents/LIVE-1", 409, "agent 'LIVE-1' is online (last heartbeat ")
	b.WantError(t, http.MethodDelete, "/api/agents/nope", nil, 404, "agent 'nope' not found")
	wantErrorPrefix(t, b, http.MethodDelete, "/api/agents/bad.id", 400, `invalid pc_id "bad.id"`)

	var got fleet.Decommissioned
	b.JSON(t, http.MethodDelete, "/api/agents/OLD-1", nil, 200, &got)
	if got.PcID != "OLD-1" || got.Hostname == nil || *got.Hostname != "old1" || got.LastHeartbeat == nil ||
		got.LastHeartbeat.Sub(now.Add(-72*time.Hour)).Abs() > time.Millisecond ||
		got.DecommissionedBy != "operator:admin" || !slices.Equal(got.Groups, []string{"lab"}) {
		t.Fatalf("decommissioned: %+v", got)
	}
	b.WantError(t, http.MethodGet, "/api/agents/OLD-1", nil, 404, "agent 'OLD-1' not found")
	var groups messages.AgentGroups
	b.JSON(t, http.MethodGet, "/api/agents/OLD-1/groups", nil, 200, &groups)
	if len(groups.Groups) != 0 {
		t.Fatalf("groups after decommission: %v", groups.Groups)
	}
	// Its history stays.
	if n, err := b.Store.R.NewSelect().Model((*storage.ExecutionResult)(nil)).Where("pc_id = ?", "OLD-1").Count(ctx); err != nil || n != 1 {
		t.Fatalf("OLD-1 results after decommission: %d %v", n, err)
	}
	ev := audit.Wait(t, messages.ActionAgentDecommission, 1)[0]
	if ev.Target == nil || *ev.Target != "OLD-1" || ev.Payload["hostname"] != "old1" || fmt.Sprint(ev.Payload["groups"]) != "[lab]" {
		raw, _ := json.Marshal(ev)
		t.Fatalf("audit event %s", raw)
	}
	// Gone twice is not found.
	b.WantError(t, http.MethodDelete, "/api/agents/OLD-1", nil, 404, "agent 'OLD-1' not found")
	waitProgress("running", 1, 1)

	// A PC that only had groups (kitted, never switched on).
	got = fleet.Decommissioned{}
	b.JSON(t, http.MethodDelete, "/api/agents/KIT-1", nil, 200, &got)
	if got.PcID != "KIT-1" || got.LastHeartbeat != nil || got.Hostname != nil || !slices.Equal(got.Groups, []string{"lab"}) {
		t.Fatalf("decommissioned group-only PC: %+v", got)
	}
	// Nothing remains: the schedule completes and disables itself.
	waitProgress("disabled", 1, 0)
	var rows []storage.DecommissionedPC
	if err := b.Store.R.NewSelect().Model(&rows).Order("pc_id").Scan(ctx); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].PcID != "KIT-1" || rows[1].PcID != "OLD-1" || rows[1].LastHeartbeat == nil {
		t.Fatalf("decommissioned_pcs: %+v", rows)
	}
}

// wantErrorPrefix is apptest's WantError for a message whose tail varies.
func wantErrorPrefix(t *testing.T, b *apptest.Backend, method, path string, status int, prefix string) {
	t.Helper()
	b.WantError(t, method, path, nil, status, "")
	_, out := b.Do(t, method, path, nil)
	if got := apptest.ErrorText(t, out); !strings.HasPrefix(got, prefix) {
		t.Fatalf("%s %s: error %q, want it to start with %q", method, path, got, prefix)
	}
}
