package schedule

import (
	"testing"
	"time"

	"kanade-backend/messages"
)

// An every_tick schedule with a gated rollout fires its plan with the gate,
// so the exec engine holds its later waves as it does an operator's
// (issue 20).
func TestEveryTickKeepsTheRolloutGate(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.putJob("job", "30s")
	h.agents("a", "b")
	h.groupMembers("canary", "a")
	h.groupMembers("rest", "b")
	h.putSchedule(`{"id":"g","cron":"*/2 * * * * *","job_id":"job","target":{},` +
		`"rollout":{"waves":[{"group":"canary"},{"group":"rest","delay":"10m"}],"gate":{"max_failed":0,"min_success":0.5,"wait":"5m"}}}`)
	if tk := h.tickNow("g"); tk.Outcome != messages.TickFired {
		t.Fatalf("tick %+v", tk)
	}
	req := h.exec.nextRequest(t, time.Second)
	g := req.Plan.Rollout.Gate
	if g == nil || g.MaxFailed == nil || *g.MaxFailed != 0 || g.MinSuccess == nil || *g.MinSuccess != 0.5 || g.Wait == nil || *g.Wait != "5m" {
		t.Fatalf("fired plan's gate = %+v", g)
	}
}
