package executions_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
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

// simResults records the ExecResults a simulated fleet publishes, with the
// time each arrived.
type simResults struct {
	mu  sync.Mutex
	got []simResult
}

type simResult struct {
	res messages.ExecResult
	at  time.Time
}

func (s *simResults) all() []simResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]simResult(nil), s.got...)
}

// startFleet runs n simulated agents (SIM-0001…) against b, with their
// agent_groups written to KV first, and records their results.
func startFleet(t *testing.T, b *apptest.Backend, n int, groups map[string][]string) (*sim.Fleet, *simResults) {
	t.Helper()
	b.SetGroups(t, groups)
	rs := &simResults{}
	sub, err := b.Conn.Subscribe("results.>", func(m *nats.Msg) {
		var r messages.ExecResult
		if json.Unmarshal(m.Data, &r) == nil {
			rs.mu.Lock()
			rs.got = append(rs.got, simResult{res: r, at: time.Now()})
			rs.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return b.StartFleet(t, sim.Config{Agents: n, Heartbeat: time.Minute, Seed: 1}), rs
}

// Against the fleet simulator, which checks the version pin and the
// groups exactly as agents do: all + a group + a PC reach SIM-0001 three
// times (one result per request_id) and no Command is dropped for its
// pin; canary runs at once and wave1 about three seconds later.
func TestExecAgainstTheFleetSimulator(t *testing.T) {
	t.Parallel()
	b := apptest.Start(t)
	putJob(t, b, "hello", "1.0.0", "echo hello")
	f, rs := startFleet(t, b, 4, map[string][]string{
		"SIM-0001": {"a", "canary"}, "SIM-0002": {"canary"}, "SIM-0003": {"wave1"}, "SIM-0004": {"wave1"},
	})

	execJob(t, b, "hello", `{"target":{"all":true,"groups":["a"],"pcs":["SIM-0001"]}}`)
	apptest.Eventually(t, 10*time.Second, func() error {
		if n := len(rs.all()); n != 6 {
			return errorf("%d results, want 6 (4 from commands.all, SIM-0001 twice more)", n)
		}
		return nil
	})
	perPC := map[string]map[string]bool{}
	for _, x := range rs.all() {
		if x.res.ExitCode != 0 || x.res.ManifestID == nil || *x.res.ManifestID != "hello" {
			t.Fatalf("result %+v", x.res)
		}
		if perPC[x.res.PcID] == nil {
			perPC[x.res.PcID] = map[string]bool{}
		}
		perPC[x.res.PcID][x.res.RequestID] = true
	}
	if len(perPC["SIM-0001"]) != 3 || len(perPC["SIM-0004"]) != 1 {
		t.Fatalf("request_ids per PC = %v", perPC)
	}
	if st := f.Stats(); st.DroppedPin != 0 || st.DroppedRevoked != 0 {
		t.Fatalf("simulated agents dropped Commands: %+v", st)
	}

	before := len(rs.all())
	t0 := time.Now()
	execJob(t, b, "hello", `{"rollout":{"waves":[{"group":"canary","delay":"0s"},{"group":"wave1","delay":"3s"}]}}`)
	apptest.Eventually(t, 10*time.Second, func() error {
		if n := len(rs.all()) - before; n != 4 {
			return errorf("%d wave results, want 4", n)
		}
		return nil
	})
	for _, x := range rs.all()[before:] {
		d := x.at.Sub(t0)
		canary := x.res.PcID == "SIM-0001" || x.res.PcID == "SIM-0002"
		if canary && d > 2*time.Second || !canary && (d < 2900*time.Millisecond || d > 6*time.Second) {
			t.Errorf("%s answered %v after the exec", x.res.PcID, d)
		}
	}
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

// The database file is deleted while a rollout is between its waves, and
// the backend starts again on the same JetStream: the exec comes back from
// its record on the EXEC stream, the canary's results are projected again
// under their exec, and wave1 still runs once, on time; nothing runs twice.
func TestWipedDatabaseGetsItsExecutionsBack(t *testing.T) {
	t.Parallel()
	dir, natsAddr := t.TempDir(), freeAddr(t)
	opts := apptest.Options{DataDir: dir, Configure: func(c *app.Config) { c.NATS.Listen = natsAddr }}
	b, stop := apptest.StartManual(t, opts)
	putJob(t, b, "hello", "1.0.0", "echo hello")
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

	// An exec that finishes before the wipe must come back the same.
	done := execJob(t, b, "hello", `{"target":{"all":true}}`)
	var doneBefore executions.Detail
	apptest.Eventually(t, 10*time.Second, func() error {
		b.JSON(t, "GET", "/api/executions/"+done.ExecID, nil, 200, &doneBefore)
		if doneBefore.Status != storage.ExecCompleted {
			return errorf("first exec: %s %d/%d", doneBefore.Status, doneBefore.SuccessCount, doneBefore.ExpectedPcs)
		}
		return nil
	})

	t0 := time.Now()
	r := execJob(t, b, "hello", `{"rollout":{"waves":[{"group":"canary","delay":"0s"},{"group":"wave1","delay":"6s"}]}}`)
	var before executions.Detail
	apptest.Eventually(t, 5*time.Second, func() error {
		b.JSON(t, "GET", "/api/executions/"+r.ExecID, nil, 200, &before)
		if before.SuccessCount != 2 {
			return errorf("canary: success_count %d, want 2", before.SuccessCount)
		}
		return nil
	})
	stop()
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if err := os.Remove(filepath.Join(dir, "backend.db"+suffix)); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	t.Logf("backend stopped and database deleted %v after the exec", time.Since(t0))
	b2, stop2 := apptest.StartManual(t, opts)
	defer stop2()
	defer func() { // the agents leave before the server they talk to
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := f.Stop(ctx); err != nil {
			t.Errorf("stop simulated fleet: %v", err)
		}
	}()
	t.Logf("backend started again %v after the exec", time.Since(t0))

	var after executions.Detail
	b2.JSON(t, "GET", "/api/executions/"+r.ExecID, nil, 200, &after)
	if after.JobID != "hello" || after.Version != "1.0.0" || !after.CreatedAt.Equal(before.CreatedAt.Time) ||
		len(after.Waves) != 2 || after.Waves[0].State != storage.WavePublished {
		t.Fatalf("exec after the wipe: %+v", after.Execution)
	}
	apptest.Eventually(t, 12*time.Second, func() error {
		b2.JSON(t, "GET", "/api/executions/"+r.ExecID, nil, 200, &after)
		if after.Status != storage.ExecCompleted || after.SuccessCount != 4 || after.ExpectedPcs != 4 || after.TargetCount != 2 {
			return errorf("exec: status %s success %d expected %d target_count %d waves %+v fleet %+v", after.Status, after.SuccessCount, after.ExpectedPcs, after.TargetCount, after.Waves, f.Stats())
		}
		return nil
	})
	if d := after.Waves[1].PublishedAt.Sub(t0); after.Waves[1].State != storage.WavePublished || d < 5900*time.Millisecond || d > 9*time.Second {
		t.Fatalf("wave1 %s %v after the exec, want published about 6s after", after.Waves[1].State, d)
	}
	var results []storage.ExecutionResult
	b2.JSON(t, "GET", "/api/results?exec_id="+r.ExecID, nil, 200, &results)
	perPC := map[string]int{}
	for _, x := range results {
		perPC[x.PcID]++
	}
	if len(results) != 4 || len(perPC) != 4 {
		t.Fatalf("results of the exec after the wipe: %v, want one from each of the 4 agents", perPC)
	}
	if st := f.Stats(); st.ResultsSent != 8 {
		t.Fatalf("the fleet sent %d results, want 8 (4 for each exec; a canary run twice?)", st.ResultsSent)
	}

	var doneAfter executions.Detail
	b2.JSON(t, "GET", "/api/executions/"+done.ExecID, nil, 200, &doneAfter)
	same := func(d executions.Detail) string {
		return fmt.Sprintf("%s %s %d/%d of %d, %d subjects %s, created %v deadline %v finished %v, pcs %d",
			d.Status, d.JobID, d.SuccessCount, d.FailureCount, d.ExpectedPcs, d.TargetCount, d.Subjects,
			d.CreatedAt.Time, d.DeadlineAt.Time, d.FinishedAt.Time, len(d.Pcs))
	}
	if a, b := same(doneAfter), same(doneBefore); a != b {
		t.Fatalf("finished exec after the wipe:\n got %s\nwant %s", a, b)
	}
}
