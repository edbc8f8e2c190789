package app_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"kanade-backend/cmd/kanade-backend/app"
	"kanade-backend/http/health"
	"kanade-backend/internal/apptest"
	"kanade-backend/internal/sim"
	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/broker/brokertest"
	"kanade-backend/storage/storagetest"
)

// These tests put the backend's data on a real small filesystem (a tmpfs)
// and fill it while the fleet reports: nothing may be lost, nothing good
// may be recorded as poison, fleet health must say what is wrong, and
// everything must catch up once space is freed, without a restart.

// publishResults publishes results req-<from>..req-<to-1> (one PC each)
// through js and returns how many the stream acknowledged within wait.
func publishResults(t *testing.T, js jetstream.JetStream, from, to int, wait time.Duration) int {
	t.Helper()
	at := time.Now().UTC().Add(-time.Minute)
	var futures []jetstream.PubAckFuture
	for i := from; i < to; i++ {
		r := messages.ExecResult{RequestID: fmt.Sprintf("req-%06d", i), PcID: fmt.Sprintf("pc-%04d", i%500),
			ExitCode: i % 3, Stdout: "done", StartedAt: at, FinishedAt: at.Add(time.Second)}
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		f, err := js.PublishAsync(messages.ResultsSubject(r.RequestID), b, jetstream.WithStallWait(wait))
		if err != nil {
			t.Fatalf("publish result %d: %v", i, err)
		}
		futures = append(futures, f)
	}
	return brokertest.Acked(futures, wait)
}

func count(t *testing.T, b *apptest.Backend, table string) int {
	t.Helper()
	n, err := b.Store.R.NewSelect().TableExpr(table).Count(context.Background())
	if err != nil {
		t.Fatalf("count %s: %v", table, err)
	}
	return int(n)
}

func fleetHealth(t *testing.T, b *apptest.Backend) (int, health.Fleet) {
	t.Helper()
	resp, body := b.Do(t, http.MethodGet, "/api/health/fleet", nil)
	var f health.Fleet
	if err := json.Unmarshal(body, &f); err != nil {
		t.Fatalf("fleet health %d %s: %v", resp.StatusCode, body, err)
	}
	return resp.StatusCode, f
}

// problem returns the first problem of check whose name contains name.
func problem(f health.Fleet, check, name string) (health.Problem, bool) {
	for _, p := range f.Problems {
		if p.Check == check && strings.Contains(p.Name, name) {
			return p, true
		}
	}
	return health.Problem{}, false
}

// metricLine returns the /metrics line that starts with prefix, "" if none.
func metricLine(t *testing.T, b *apptest.Backend, prefix string) string {
	t.Helper()
	_, body := b.Do(t, http.MethodGet, "/metrics", nil)
	for _, l := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

// The database's filesystem fills up while 20 000 results arrive: no good
// result is recorded as poison, fleet health is degraded naming the disk
// and the stalled projection, a large write answers 503 with the cause,
// and once space is freed every row arrives without a restart.
func TestDatabaseDiskFullDuring20000Results(t *testing.T) {
	disk := storagetest.SmallDisk(t, 32<<20)
	b := apptest.Start(t, apptest.Options{Configure: func(c *app.Config) {
		c.DB.SQLitePath = filepath.Join(disk, "backend.db")
		c.Disk = app.DiskConfig{MinFreePercent: 5, MinFreeMiB: -1}
	}})
	const total = 20000
	if n := publishResults(t, b.JS, 0, 5000, time.Minute); n != 5000 {
		t.Fatalf("%d of 5000 results stored", n)
	}
	apptest.Eventually(t, time.Minute, func() error {
		if n := count(t, b, "execution_results"); n < 5000 {
			return fmt.Errorf("%d rows", n)
		}
		return nil
	})
	if code, f := fleetHealth(t, b); code != 200 || len(f.Problems) != 0 {
		t.Fatalf("health before the disk fills: %d %+v", code, f)
	}

	// The PCs of the large exec below must be known (an exec that reaches
	// no known PC is refused before any write), so they are seeded while
	// the disk still has room.
	const bigTarget = 20000
	if err := storagetest.Seed(context.Background(), b.Store, storagetest.Fleet{Agents: bigTarget, End: time.Now()}); err != nil {
		t.Fatal(err)
	}

	free := storagetest.Fill(t, disk)
	if n := publishResults(t, b.JS, 5000, total, time.Minute); n != total-5000 {
		t.Fatalf("%d of %d results stored (the stream is on another disk)", n, total-5000)
	}
	apptest.Eventually(t, time.Minute, func() error {
		code, f := fleetHealth(t, b)
		d, okDisk := problem(f, health.CheckDisk, disk)
		p, okProj := problem(f, health.CheckProjection, "results")
		if code != http.StatusServiceUnavailable || f.Status != health.StatusDegraded || !okDisk || !okProj {
			return fmt.Errorf("health %d %+v", code, f)
		}
		if !strings.Contains(d.Name, "database") || !strings.HasPrefix(d.Reason, "low disk space") ||
			!strings.Contains(p.Reason, "database or disk is full") || p.Since == nil {
			return fmt.Errorf("problems %+v", f.Problems)
		}
		return nil
	})
	if l := metricLine(t, b, `kanade_projection_stalled{projection="results"}`); !strings.HasSuffix(l, " 1") {
		t.Errorf("metric: %q", l)
	}
	if l := metricLine(t, b, `kanade_projection_write_failures_total{cause="disk_full",projection="results"}`); l == "" {
		t.Errorf("no disk_full failures counted")
	}
	if l := metricLine(t, b, `kanade_disk_low{`); !strings.HasSuffix(l, " 1") || !strings.Contains(l, "database") {
		t.Errorf("metric: %q", l)
	}
	// A write too large for whatever slack the WAL still has: 503 with the
	// cause, not 500.
	b.JSON(t, http.MethodPost, "/api/jobs", map[string]any{"id": "big", "version": "1",
		"execute": map[string]any{"shell": "powershell", "script": "x", "timeout": "1m"}}, 200, nil)
	pcs := make([]string, bigTarget)
	for i := range pcs {
		pcs[i] = storagetest.PcID(i)
	}
	b.WantError(t, http.MethodPost, "/api/exec/big", map[string]any{"target": map[string]any{"pcs": pcs}},
		http.StatusServiceUnavailable, "storage unavailable: database or disk is full")
	if n := count(t, b, "projection_errors"); n != 0 {
		t.Fatalf("%d projection errors while the disk is full; a database error is not poison", n)
	}

	free()
	// The seeded PCs served only the exec above; they never heartbeat, so
	// on a slow run they turn stale and fleet health would rightly call
	// the fleet degraded.
	if _, err := b.Store.W.NewDelete().TableExpr("agents").Where("pc_id LIKE 'pc-%'").Exec(context.Background()); err != nil {
		t.Fatal(err)
	}
	apptest.Eventually(t, 2*time.Minute, func() error {
		if n := count(t, b, "execution_results"); n != total {
			return fmt.Errorf("%d of %d rows after freeing space", n, total)
		}
		return nil
	})
	if n := count(t, b, "projection_errors"); n != 0 {
		t.Fatalf("%d projection errors", n)
	}
	apptest.Eventually(t, 30*time.Second, func() error {
		if code, f := fleetHealth(t, b); code != 200 || len(f.Problems) != 0 {
			return fmt.Errorf("health after recovery: %d %+v", code, f)
		}
		return nil
	})
}

// The embedded JetStream store (and the database) on a filesystem that
// fills up while agents report: fleet health names the stream that cannot
// store; once space is freed the backend restarts the embedded server in
// place (the process keeps running), the stream stores again, and every
// result the stream acknowledged, before and after, is kept and projected.
func TestJetStreamStoreDiskFull(t *testing.T) {
	disk := storagetest.SmallDisk(t, 64<<20)
	b := apptest.Start(t, apptest.Options{DataDir: disk,
		Configure: func(c *app.Config) { c.Disk = app.DiskConfig{MinFreePercent: 5, MinFreeMiB: -1} },
		Prepare:   func(a *app.App) { a.Guards.StoreWatchInterval = 200 * time.Millisecond },
	})
	// Agents publish over TCP, as real ones do.
	nc, err := nats.Connect(b.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// A publish the stream never acknowledges fails after 3 s and frees
	// its slot, as an agent's would.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	acked := publishResults(t, js, 0, 3000, time.Minute)
	if acked != 3000 {
		t.Fatalf("%d of 3000 results stored", acked)
	}
	free := storagetest.Fill(t, disk)
	// Agents keep publishing; the stream stops acknowledging.
	next := 3000
	apptest.Eventually(t, time.Minute, func() error {
		acked += publishResults(t, js, next, next+200, 2*time.Second)
		next += 200
		code, f := fleetHealth(t, b)
		p, ok := problem(f, health.CheckJetStream, messages.StreamResults)
		if code != http.StatusServiceUnavailable || !ok || !strings.Contains(p.Reason, "no space left on device") {
			return fmt.Errorf("health %d %+v", code, f)
		}
		if _, ok := problem(f, health.CheckDisk, disk); !ok {
			return fmt.Errorf("disk not named: %+v", f.Problems)
		}
		return nil
	})
	if l := metricLine(t, b, `kanade_jetstream_store_failing{stream="RESULTS"}`); !strings.HasSuffix(l, " 1") {
		t.Errorf("metric: %q", l)
	}
	st, err := js.Stream(context.Background(), messages.StreamResults)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	stored := info.State.Msgs
	if stored < uint64(acked) {
		t.Fatalf("the stream holds %d messages but acknowledged %d", stored, acked)
	}

	free()
	apptest.Eventually(t, time.Minute, func() error {
		_, f := fleetHealth(t, b)
		if _, ok := problem(f, health.CheckJetStream, ""); ok {
			return fmt.Errorf("still failing: %+v", f.Problems)
		}
		return nil
	})
	if n := publishResults(t, js, next, next+1000, time.Minute); n != 1000 {
		t.Fatalf("%d of 1000 results stored after recovery", n)
	}
	// The batches the full database refused before the restart come back
	// only after AckWait (30 s): the restarted consumer does not know they
	// were handed back.
	apptest.Eventually(t, 2*time.Minute, func() error {
		info, err := st.Info(context.Background())
		if err != nil {
			return err
		}
		if info.State.Msgs != stored+1000 {
			return fmt.Errorf("stream holds %d, want %d stored before plus 1000", info.State.Msgs, stored)
		}
		if n := count(t, b, "execution_results"); n != int(stored)+1000 {
			return fmt.Errorf("%d rows, want %d", n, stored+1000)
		}
		return nil
	})
	if n := count(t, b, "projection_errors"); n != 0 {
		t.Fatalf("%d projection errors", n)
	}
	if l := metricLine(t, b, "kanade_jetstream_store_recoveries_total"); l == "" || strings.HasSuffix(l, " 0") {
		t.Errorf("metric: %q", l)
	}
}

// Heartbeats and results whose pc_id is not a subject token ("*", ">",
// "a.b", " ") are recorded in projection_errors and never become agents;
// an agents row like that from an older version is skipped when targets
// are resolved; a once_per_pc schedule on all PCs keeps firing at the real
// agents.
func TestInvalidPcIDsNeverStopASchedule(t *testing.T) {
	b := apptest.Start(t)
	b.StartFleet(t, sim.Config{Agents: 3, Prefix: "REAL-", Heartbeat: time.Second, Seed: 7,
		RunTime: sim.Range{Min: 10 * time.Millisecond, Max: 50 * time.Millisecond}})
	nc, err := nats.Connect(b.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	bad := []string{"*", ">", "a.b", " "}
	for i, pc := range bad {
		hb, _ := json.Marshal(messages.Heartbeat{PcID: pc, At: time.Now().UTC(), AgentVersion: "0.21.2"})
		if err := nc.Publish(fmt.Sprintf("heartbeat.bad%d", i), hb); err != nil {
			t.Fatal(err)
		}
		r, _ := json.Marshal(messages.ExecResult{RequestID: fmt.Sprintf("bad-%d", i), PcID: pc, StartedAt: time.Now(), FinishedAt: time.Now()})
		if _, err := b.JS.Publish(context.Background(), messages.ResultsSubject(fmt.Sprintf("bad-%d", i)), r); err != nil {
			t.Fatal(err)
		}
	}
	apptest.Eventually(t, 20*time.Second, func() error {
		var errs []struct {
			Projection string `bun:"projection"`
			Error      string `bun:"error"`
		}
		if err := b.Store.R.NewSelect().TableExpr("projection_errors").Column("projection", "error").
			Scan(context.Background(), &errs); err != nil {
			return err
		}
		hb, res := 0, 0
		for _, e := range errs {
			if !strings.Contains(e.Error, "invalid pc_id") {
				return fmt.Errorf("projection error %+v", e)
			}
			switch e.Projection {
			case "heartbeat":
				hb++
			case "results":
				res++
			}
		}
		if hb != len(bad) || res != len(bad) {
			return fmt.Errorf("%d heartbeat and %d results projection errors, want %d each", hb, res, len(bad))
		}
		return nil
	})
	var agents []string
	if err := b.Store.R.NewSelect().TableExpr("agents").Column("pc_id").Order("pc_id").Scan(context.Background(), &agents); err != nil {
		t.Fatal(err)
	}
	if strings.Join(agents, ",") != "REAL-0001,REAL-0002,REAL-0003" {
		t.Fatalf("agents = %q", agents)
	}
	// A row an older version let in, alive.
	now := storage.T(time.Now())
	if _, err := b.Store.W.NewInsert().Model(&storage.Agent{PcID: "old.bad", AgentVersion: "0.21.2",
		LastHeartbeat: now, UpdatedAt: now}).Exec(context.Background()); err != nil {
		t.Fatal(err)
	}

	b.JSON(t, http.MethodPost, "/api/jobs", map[string]any{"id": "hello", "version": "1",
		"execute": map[string]any{"shell": "powershell", "script": "echo hi", "timeout": "1m"}}, 200, nil)
	b.JSON(t, http.MethodPost, "/api/schedules", map[string]any{"id": "once", "cron": "* * * * * *", "job_id": "hello",
		"target": map[string]any{"all": true}, "mode": "once_per_pc"}, 200, nil)
	apptest.Eventually(t, 30*time.Second, func() error {
		var pcs []string
		if err := b.Store.R.NewSelect().TableExpr("execution_results").ColumnExpr("DISTINCT pc_id").
			Where("job_id = 'hello'").Order("pc_id").Scan(context.Background(), &pcs); err != nil {
			return err
		}
		if strings.Join(pcs, ",") != "REAL-0001,REAL-0002,REAL-0003" {
			return fmt.Errorf("hello ran on %q", pcs)
		}
		return nil
	})
}
