package assets_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"kanade-backend/internal/apptest"
	"kanade-backend/messages"
)

// TestBrowserGatedRollout drives a gated rollout from the dashboard against
// the fleet simulator: the exec form sends the gate, the execution page
// shows the held wave with its reason live, Resume (with a reason)
// publishes it, and Abort on another held exec cancels it.
func TestBrowserGatedRollout(t *testing.T) {
	browserCtx(t)
	b := apptest.Start(t)
	b.JSON(t, "POST", "/api/jobs", `{"id":"flaky","version":"1","execute":{"shell":"powershell","script":"fail-once","timeout":"30s"}}`, 200, nil)
	b.JSON(t, "POST", "/api/jobs", `{"id":"flaky2","version":"1","execute":{"shell":"powershell","script":"fail-once","timeout":"30s"}}`, 200, nil)
	startFleet(t, b, 4, func(i int) []string {
		if i <= 2 {
			return []string{"canary"}
		}
		return []string{"wave1"}
	})
	apptest.Eventually(t, 30*time.Second, func() error {
		var agents []map[string]any
		b.JSON(t, "GET", "/api/agents?online=true", nil, 200, &agents)
		if len(agents) != 4 {
			return fmt.Errorf("%d agents online, want 4", len(agents))
		}
		return nil
	})
	tb := newTab(t, b.URL, 1280)
	tb.signIn()

	tb.open("/exec?job=flaky")
	tb.waitJS("exec form", `document.querySelector('select[name=job]')?.value === 'flaky'`)
	tb.clickText("button", "Add wave")
	tb.clickText("button", "Add wave")
	tb.setValue(".waves > .wave:nth-child(1) [name=wave-group]", "canary")
	tb.setValue(".waves > .wave:nth-child(2) [name=wave-group]", "wave1")
	tb.setValue(".waves > .wave:nth-child(2) [name=wave-delay]", "2s")
	tb.setValue("input[name=gate-max-failed]", "0")
	tb.clickText("button", "Exec")
	tb.waitJS("execution page", `location.pathname.startsWith('/executions/')`)
	execID := strings.TrimPrefix(tb.location(), "/executions/")

	tb.wait("exec held", 30*time.Second, func() (bool, string) {
		st := eval[string](tb, `document.querySelector('[data-exec-status]')?.dataset.execStatus || ''`)
		return st == "held", st
	})
	tb.waitText("[data-hold-reason]", "wave canary: 2 of 2 failed, max_failed 0")
	tb.waitJS("wave 2 held", `document.querySelector('[data-wave="1"] [data-wave-state]')?.dataset.waveState === 'held'`)
	var d struct {
		Plan messages.FanoutPlan `json:"plan"`
	}
	b.JSON(t, "GET", "/api/executions/"+execID, nil, 200, &d)
	if g := d.Plan.Rollout.Gate; g == nil || g.MaxFailed == nil || *g.MaxFailed != 0 || g.MinSuccess != nil {
		t.Fatalf("the form sent gate %+v", g)
	}

	tb.setValue("input[name=resume-reason]", "canaries were patched by hand")
	tb.clickText("button", "Resume next wave")
	tb.waitText("main [role=status]", "Wave 2 (wave1) published")
	tb.waitJS("wave 2 fired", `document.querySelector('[data-wave="1"] [data-wave-state]')?.dataset.waveState === 'fired'`)
	tb.waitText(`[data-wave="1"]`, "resumed by operator")

	// Another held exec, aborted from its page.
	var r messages.ExecResponse
	b.JSON(t, "POST", "/api/exec/flaky2", `{"rollout":{"waves":[{"group":"canary"},{"group":"wave1","delay":"1s"}],"gate":{"max_failed":0}}}`, 200, &r)
	tb.open("/executions/" + r.ExecID)
	tb.wait("second exec held", 30*time.Second, func() (bool, string) {
		st := eval[string](tb, `document.querySelector('[data-exec-status]')?.dataset.execStatus || ''`)
		return st == "held", st
	})
	tb.clickText("button", "Abort rollout")
	tb.clickText("button", "Confirm: cancel the remaining waves?")
	tb.wait("exec cancelled", 30*time.Second, func() (bool, string) {
		st := eval[string](tb, `document.querySelector('[data-exec-status]')?.dataset.execStatus || ''`)
		return st == "cancelled", st
	})
	tb.waitJS("wave 2 cancelled", `document.querySelector('[data-wave="1"] [data-wave-state]')?.dataset.waveState === 'cancelled'`)
	if strings.Contains(tb.text("main"), "Rollout held") {
		t.Fatalf("the held notice stayed after the abort: %s", tb.text("main"))
	}
}
