package firebench_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"kanade-backend/internal/apptest"
	"kanade-backend/internal/sim"
	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/storagetest"
)

// burst sets up a backend with the job and n listed-PC schedules, with an
// office (ten simulated agents in group office and three once_per_pc
// schedules on it) when office is set, all due at the returned instant,
// and a subscriber counting Commands.
func burst(t *testing.T, bk *apptest.Backend, n int, office bool) (time.Time, *recorder) {
	t.Helper()
	ctx := context.Background()
	bk.JSON(t, "POST", "/api/jobs", map[string]any{
		"id": jobID, "version": "1.0.0",
		"execute": map[string]any{"shell": "powershell", "script": "exit 0", "timeout": "60s"},
	}, 200, nil)
	agents := 0
	if office {
		agents = 10
		bk.StartFleet(t, sim.Config{Agents: agents, Prefix: "OFFICE-", Heartbeat: time.Second, RunTime: sim.Range{Min: time.Millisecond, Max: time.Millisecond}})
		groups := map[string][]string{}
		for i := 1; i <= agents; i++ {
			groups[fmt.Sprintf("OFFICE-%04d", i)] = []string{"office"}
		}
		bk.SetGroups(t, groups)
	}

	rec := subscribe(t, bk)
	// The instant leaves time to write and start every schedule; 6 s of
	// it is for a loaded CI machine, where the 55 actors of the smallest
	// burst once took longer than 3 s to start.
	instant := time.Now().UTC().Add(6*time.Second + time.Duration(n)*perSchedule).Truncate(time.Second).Add(time.Second)
	cronExpr := fmt.Sprintf("%d %d %d %d %d *", instant.Second(), instant.Minute(), instant.Hour(), instant.Day(), int(instant.Month()))
	putSchedules(t, bk, n, cronExpr)
	kv, err := bk.JS.KeyValue(ctx, messages.BucketSchedules)
	if err != nil {
		t.Fatal(err)
	}
	officeSchedules := 0
	if office {
		officeSchedules = 3
	}
	for i := range officeSchedules {
		v := fmt.Sprintf(`{"id":"office-%d","cron":%q,"job_id":%q,"target":{"groups":["office"]},"mode":"once_per_pc"}`, i, cronExpr, jobID)
		if _, err := kv.Put(ctx, fmt.Sprintf("office-%d", i), []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	// The scheduler has the schedules, and its fleet view the office.
	apptest.Eventually(t, time.Until(instant), func() error {
		s, err := bk.Scheduler.Summary(ctx)
		if err != nil || s.Running != n+officeSchedules {
			return fmt.Errorf("%d schedules running (%v)", s.Running, err)
		}
		var alive int
		if err := bk.Store.R.NewSelect().TableExpr("agents").ColumnExpr("count(*)").Where("pc_id LIKE 'OFFICE-%'").Scan(ctx, &alive); err != nil || alive != agents {
			return fmt.Errorf("%d agents heartbeating (%v)", alive, err)
		}
		return nil
	})
	return instant, rec
}

// API execs and a burst of scheduled fires at the same moment all
// complete: every schedule fires once (its last tick naming its exec),
// every API exec answers 200 with its PCs, and every Command of both
// reaches a subscriber. The office schedules resolve their group through
// the scheduler's fleet view, fed by the real projectors.
func TestScheduledBurstAndAPIExecsBothComplete(t *testing.T) {
	const n, apiExecs, apiPCs = burstSchedules, 8, 500
	bk := apptest.Start(t)
	// An exec that reaches no known PC is refused (400), so the API
	// execs' PCs are known agents, written before the burst.
	if err := storagetest.Seed(context.Background(), bk.Store, storagetest.Fleet{Agents: apiExecs * apiPCs, End: time.Now()}); err != nil {
		t.Fatal(err)
	}
	instant, rec := burst(t, bk, n, true)
	rec.arm(instant, n+3*10+apiExecs*apiPCs)

	time.Sleep(time.Until(instant))
	var wg sync.WaitGroup
	responses := make([]messages.ExecResponse, apiExecs)
	for i := range apiExecs {
		pcs := make([]string, apiPCs)
		for j := range pcs {
			pcs[j] = storagetest.PcID(i*apiPCs + j)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, body := bk.Do(t, "POST", "/api/exec/"+jobID, map[string]any{"target": map[string]any{"pcs": pcs}})
			if resp.StatusCode != http.StatusOK {
				t.Errorf("API exec %d: %d %s", i, resp.StatusCode, body)
				return
			}
			if err := json.Unmarshal(body, &responses[i]); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	rec.wait(t, 60*time.Second)
	for i, r := range responses {
		if r.ExpectedPcs != apiPCs || r.TargetCount != apiPCs {
			t.Fatalf("API exec %d answered %+v", i, r)
		}
	}
	ctx := context.Background()
	for _, id := range append(scheduleIDs(n), "office-0", "office-1", "office-2") {
		var tk struct {
			outcome, execID string
			pcs             int
		}
		apptest.Eventually(t, 30*time.Second, func() error {
			st, err := bk.Scheduler.Status(ctx, id)
			if err != nil {
				return err
			}
			if len(st.LastTicks) == 0 || !st.LastTicks[0].Instant.Equal(instant) {
				return fmt.Errorf("schedule %s: no tick of the instant yet", id)
			}
			tk.outcome, tk.execID, tk.pcs = st.LastTicks[0].Outcome, st.LastTicks[0].ExecID, st.LastTicks[0].Pcs
			return nil
		})
		wantPCs := 1
		if id[:6] == "office" {
			wantPCs = 10
		}
		if tk.outcome != messages.TickFired || tk.execID != messages.ScheduledExecID(id, instant) || tk.pcs != wantPCs {
			t.Fatalf("schedule %s: %+v", id, tk)
		}
	}
	if got := len(rec.samples()); got != n+3*10+apiExecs*apiPCs {
		t.Fatalf("%d Commands, want %d", got, n+3*10+apiExecs*apiPCs)
	}
	var rows int
	if err := bk.Store.R.NewSelect().TableExpr("executions").ColumnExpr("count(*)").Scan(ctx, &rows); err != nil || rows != n+3+apiExecs {
		t.Fatalf("%d executions rows (%v), want %d", rows, err, n+3+apiExecs)
	}
}

// A backend stopped while thousands of fires are on their way stops within
// the 10 s of architecture.md §4 and leaves no exec half-written: every
// executions row has all its request_ids and expected PCs, and no Command
// went out for an exec that is not recorded.
func TestStopDuringABurstHalfWritesNothing(t *testing.T) {
	n := stopBurst
	dir := t.TempDir()
	bk, stop := apptest.StartManual(t, apptest.Options{DataDir: dir})
	instant, rec := burst(t, bk, n, false)
	rec.arm(instant, n)
	dbPath := bk.Config.DBPath()

	time.Sleep(time.Until(instant.Add(40 * time.Millisecond)))
	t0 := time.Now()
	stop()
	took := time.Since(t0)
	t.Logf("stopped %v after the instant in %v, %d Commands out", 40*time.Millisecond, took, len(rec.samples()))
	if took > 10*time.Second {
		t.Fatalf("stop took %v", took)
	}

	st := storagetest.OpenAt(t, dbPath)
	ctx := context.Background()
	var execs []storage.Execution
	if err := st.R.NewSelect().Model(&execs).Scan(ctx); err != nil {
		t.Fatal(err)
	}
	var reqs, expected []struct {
		ExecID string `bun:"exec_id"`
		N      int    `bun:"n"`
	}
	if err := st.R.NewSelect().TableExpr("exec_requests").ColumnExpr("exec_id, count(*) AS n").GroupExpr("exec_id").Scan(ctx, &reqs); err != nil {
		t.Fatal(err)
	}
	if err := st.R.NewSelect().TableExpr("exec_expected").ColumnExpr("exec_id, count(*) AS n").GroupExpr("exec_id").Scan(ctx, &expected); err != nil {
		t.Fatal(err)
	}
	nReq, nExp := map[string]int{}, map[string]int{}
	for _, r := range reqs {
		nReq[r.ExecID] = r.N
	}
	for _, r := range expected {
		nExp[r.ExecID] = r.N
	}
	commands := 0
	for _, ex := range execs {
		if ex.Status == storage.ExecFailed && ex.TargetCount == 0 {
			continue // claimed by a settle: nothing of it was published
		}
		if nReq[ex.ExecID] != ex.TargetCount || nExp[ex.ExecID] != ex.ExpectedPcs {
			t.Fatalf("exec %s half-written: %d of %d request_ids, %d of %d expected PCs",
				ex.ExecID, nReq[ex.ExecID], ex.TargetCount, nExp[ex.ExecID], ex.ExpectedPcs)
		}
		commands += ex.TargetCount
	}
	if got := len(rec.samples()); got > commands {
		t.Fatalf("%d Commands went out for %d recorded", got, commands)
	}
	t.Logf("%d execs recorded whole before the stop", len(execs))
}

func scheduleIDs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = scheduleID(i)
	}
	return out
}
