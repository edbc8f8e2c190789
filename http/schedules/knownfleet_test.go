package schedules_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"kanade-backend/actors/clock"
	"kanade-backend/actors/schedule"
	"kanade-backend/internal/apptest"
	"kanade-backend/internal/sim"
	"kanade-backend/messages"
	"kanade-backend/storage"
)

// The README's hello-once example (issue 16) on the whole backend with
// simulated agents over TCP: once_per_pc on all PCs, every 2 s, with
// auto_disable_when_done. The 20 PCs ran yesterday and are switched on
// again one after another (kanade-fleet --ramp, compressed from 30 s to
// 8 s); one of them stays off past its turn. The schedule fires only at
// the PCs that are on, keeps waiting for the one that is off (listed as
// remaining, offline) instead of disabling itself, and disables itself
// once that PC has come back and run it: every PC exactly once.
func TestHelloOnceWaitsForEveryKnownPC(t *testing.T) {
	if testing.Short() {
		t.Skip("15 s wall-clock scenario")
	}
	b := apptest.Start(t)
	ctx := context.Background()

	// Yesterday: the fleet announced itself (heartbeats stamped 20 h ago),
	// then was switched off.
	yesterday := clock.NewFake(time.Now().Add(-20 * time.Hour))
	old := b.StartFleet(t, sim.Config{Agents: 20, Ramp: time.Second, Heartbeat: 1000 * time.Hour, Clock: yesterday, Seed: 3})
	yesterday.Advance(time.Second)
	pcs := old.PCIDs()
	apptest.Eventually(t, 10*time.Second, func() error {
		var rows []struct {
			PcID   string `json:"pc_id"`
			Online bool   `json:"online"`
		}
		b.JSON(t, http.MethodGet, "/api/agents", nil, 200, &rows)
		if len(rows) != 20 || rows[19].Online {
			return fmt.Errorf("%d agents known: %+v", len(rows), rows)
		}
		return nil
	})
	if err := old.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	// The README, word for word.
	if resp, body := b.Do(t, http.MethodPost, "/api/jobs", "id: hello\nversion: 1.0.0\nexecute:\n  shell: powershell\n  script: echo hi\n  timeout: 30s\n",
		"Content-Type", "application/yaml"); resp.StatusCode != 200 {
		t.Fatalf("POST /api/jobs: %d %s", resp.StatusCode, body)
	}
	b.JSON(t, http.MethodPost, "/api/schedules", `{"id":"hello-once","cron":"*/2 * * * * *","job_id":"hello",
  "target":{"all":true},"mode":"once_per_pc","auto_disable_when_done":true}`, 200, nil)

	type statusDoc struct {
		Status struct {
			State     string             `json:"state"`
			LastTicks []schedule.Tick    `json:"last_ticks"`
			Progress  *schedule.Progress `json:"progress"`
		} `json:"status"`
	}
	status := func() statusDoc {
		var d statusDoc
		b.JSON(t, http.MethodGet, "/api/schedules/hello-once", nil, 200, &d)
		return d
	}
	// Nobody is on: the schedule skips, stays enabled and says why.
	apptest.Eventually(t, 10*time.Second, func() error {
		d := status()
		p := d.Status.Progress
		if p == nil || p.Known != 20 || p.Done != 0 || p.Remaining != 20 || p.Offline != 20 || len(p.RemainingPCs) != 20 {
			return fmt.Errorf("progress %+v", p)
		}
		if d.Status.State != "running" || len(d.Status.LastTicks) == 0 ||
			!strings.Contains(d.Status.LastTicks[0].Reason, "20 of 20 known PCs have not run it yet and are offline") {
			return fmt.Errorf("state %s, ticks %+v", d.Status.State, d.Status.LastTicks)
		}
		return nil
	})

	// This morning: the PCs come on over 8 s; SIM-0013 (its turn at 4.8 s)
	// is switched off before it.
	morning := b.StartFleet(t, sim.Config{Agents: 20, Ramp: 8 * time.Second, Seed: 4})
	const late = "SIM-0013"
	if err := morning.SwitchOff(late); err != nil {
		t.Fatal(err)
	}
	runs := func(pc string) int {
		n, err := b.Store.R.NewSelect().Model((*storage.ExecutionResult)(nil)).
			Where("pc_id = ? AND job_id = ?", pc, "hello").Count(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return int(n)
	}
	var waited time.Time
	apptest.Eventually(t, 25*time.Second, func() error {
		for _, pc := range pcs {
			want := 1
			if pc == late {
				want = 0
			}
			if n := runs(pc); n != want {
				return fmt.Errorf("%s ran hello %d times, want %d", pc, n, want)
			}
		}
		d := status()
		p := d.Status.Progress
		if p == nil || p.Done != 19 || p.Remaining != 1 || p.Offline != 1 ||
			!slices.Equal(p.RemainingPCs, []schedule.RemainingPC{{PcID: late, Online: false}}) {
			return fmt.Errorf("progress %+v", p)
		}
		if d.Status.State != "running" {
			return fmt.Errorf("state %s with %s remaining", d.Status.State, late)
		}
		waited = time.Now()
		return nil
	})
	// Ticks after every online PC is done keep it enabled, saying why.
	apptest.Eventually(t, 10*time.Second, func() error {
		d := status()
		tk := d.Status.LastTicks[0]
		if d.Status.State != "running" {
			return fmt.Errorf("state %s with %s remaining", d.Status.State, late)
		}
		if !tk.At.After(waited) || tk.Outcome != messages.TickSkipped || !strings.Contains(tk.Reason, "1 of 20 known PCs") {
			return fmt.Errorf("last tick %+v", tk)
		}
		return nil
	})

	// SIM-0013 comes back: it runs hello, and the schedule disables itself.
	if err := morning.SwitchOn(late); err != nil {
		t.Fatal(err)
	}
	apptest.Eventually(t, 15*time.Second, func() error {
		d := status()
		if d.Status.State != "disabled" {
			return fmt.Errorf("state %s, progress %+v", d.Status.State, d.Status.Progress)
		}
		if p := d.Status.Progress; p == nil || p.Done != 20 || p.Remaining != 0 {
			return fmt.Errorf("progress %+v", p)
		}
		return nil
	})
	for _, pc := range pcs {
		if n := runs(pc); n != 1 {
			t.Errorf("%s ran hello %d times, want exactly 1", pc, n)
		}
	}
	var list []messages.Schedule
	b.JSON(t, http.MethodGet, "/api/schedules", nil, 200, &list)
	if len(list) != 1 || list[0].Enabled {
		t.Errorf("schedules in KV: %+v", list)
	}
	apptest.Eventually(t, 5*time.Second, func() error {
		n, err := b.Store.R.NewSelect().Model((*storage.AuditRow)(nil)).
			Where("action = ? AND target = ?", messages.ActionScheduleCompleted, "hello-once").Count(ctx)
		if err != nil || n != 1 {
			return fmt.Errorf("%d schedule_completed rows (%v)", n, err)
		}
		return nil
	})
}
