package assets_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"kanade-backend/actors/clock"
	"kanade-backend/internal/apptest"
	"kanade-backend/internal/sim"
)

// The schedule page shows how far a once_per_pc schedule has come over the
// known PCs of its target: three PCs seen yesterday and offline now are
// counted as remaining and listed by name, each marked offline; once one
// is switched on and runs the job, it counts as done and the schedule
// keeps waiting for the other two.
func TestScheduleProgressPage(t *testing.T) {
	browserCtx(t)
	b := apptest.Start(t)
	yesterday := clock.NewFake(time.Now().Add(-20 * time.Hour))
	old := b.StartFleet(t, sim.Config{Agents: 3, Ramp: time.Second, Heartbeat: 1000 * time.Hour, Clock: yesterday, Seed: 2})
	yesterday.Advance(time.Second)
	apptest.Eventually(t, 10*time.Second, func() error {
		_, body := b.Do(t, http.MethodGet, "/api/agents?online=false", nil)
		if strings.Count(string(body), `"pc_id"`) != 3 {
			return errString("agents: " + string(body))
		}
		return nil
	})
	if err := old.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if resp, body := b.Do(t, http.MethodPost, "/api/jobs", helloJob, "Content-Type", "application/yaml"); resp.StatusCode != 200 {
		t.Fatalf("job: %d %s", resp.StatusCode, body)
	}
	b.JSON(t, http.MethodPost, "/api/schedules", map[string]any{"id": "hello-once", "cron": "* * * * * *", "job_id": "hello",
		"target": map[string]any{"all": true}, "mode": "once_per_pc", "auto_disable_when_done": true}, 200, nil)

	tb := newTab(t, b.URL, 1280)
	tb.signIn()
	tb.open("/schedules/hello-once")
	tb.wait("nothing done, three offline", 20*time.Second, func() (bool, string) {
		got := eval[string](tb, `document.querySelector('[data-progress]')?.dataset.progress || ''`)
		return got == "0/3/3", got
	})
	tb.waitText("main", "0/3 known PCs done")
	rows := eval[string](tb, `[...document.querySelectorAll('tr[data-remaining]')].map((r) => r.dataset.remaining + ':' + r.innerText.replace(/\s+/g, ' ').trim()).join('|')`)
	for _, pc := range []string{"SIM-0001", "SIM-0002", "SIM-0003"} {
		if !strings.Contains(rows, pc+":") || !strings.Contains(rows, "offline") {
			t.Fatalf("remaining rows %q", rows)
		}
	}

	// This morning the PCs are switched on over an hour: SIM-0001 at once,
	// the others long after the test. SIM-0001 runs it.
	b.StartFleet(t, sim.Config{Agents: 3, Ramp: time.Hour, Heartbeat: time.Hour, Seed: 2})
	tb.wait("one done, two offline", 30*time.Second, func() (bool, string) {
		got := eval[string](tb, `document.querySelector('[data-progress]')?.dataset.progress || ''`)
		return got == "1/2/2", got
	})
	if got := eval[string](tb, `[...document.querySelectorAll('tr[data-remaining]')].map((r) => r.dataset.remaining).join(',')`); got != "SIM-0002,SIM-0003" {
		t.Fatalf("remaining rows %q", got)
	}
	if st := eval[string](tb, `document.querySelector('[data-schedule-state]')?.dataset.scheduleState || ''`); st != "running" {
		t.Fatalf("state %q with two PCs remaining", st)
	}
}

type errString string

func (e errString) Error() string { return string(e) }
