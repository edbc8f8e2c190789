package firebench_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/uptrace/bun"

	"kanade-backend/internal/apptest"
	"kanade-backend/internal/testsupport"
	"kanade-backend/messages"
	"kanade-backend/storage"
)

// BenchmarkFires/N: N every_tick schedules, each aimed at one listed PC,
// all due at the same cron instant, in a whole in-process backend
// (apptest: embedded NATS with JetStream, SQLite file, projectors, the
// real schedule actors and exec engine). Lateness is the time from the
// instant to the arrival of each Command at a plain NATS subscriber on
// commands.pc.> (its own connection). Budget (architecture.md §6): p99
// ≤ 50 ms at 100, ≤ 150 ms at 1 000, ≤ 1 s and ≤ 3 × the raw ceiling at
// 10 000.
//
// The raw ceiling is measured in the same run, on the same backend, once
// the fires are done: the same rows (the executions, exec_requests and
// exec_expected rows the fires wrote, under new ids) inserted in one
// transaction of 1 000-row statements, then the same N Commands published
// on the backend's connection with one flush, timed from the start of the
// insert to each arrival at the same subscriber.
//
// The run fails unless every schedule fired exactly once: N Commands, N
// executions rows, no tick recorded failed, and each schedule's last tick
// fired with the exec id of its executions row.
//
//	go test -run '^$' -bench Fires -benchtime 1x -timeout 30m ./actors/schedule/firebench/
//
// KANADE_BENCH_FIRES=100,1000 picks the sizes (default 100,1000,10000);
// KANADE_BENCH_PROFILE=<file> writes a CPU profile of the fire.
func BenchmarkFires(b *testing.B) {
	for _, n := range sizes(b) {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			for b.Loop() {
				runFires(b, n)
			}
		})
	}
}

func sizes(b *testing.B) []int {
	s := os.Getenv("KANADE_BENCH_FIRES")
	if s == "" {
		return []int{100, 1000, 10_000}
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			b.Fatalf("KANADE_BENCH_FIRES: %q is not a positive number", f)
		}
		out = append(out, n)
	}
	return out
}

const jobID = "fire-bench"

func scheduleID(i int) string { return fmt.Sprintf("fire-%05d", i) }
func pcID(i int) string       { return fmt.Sprintf("pc-%05d", i) }

func runFires(b *testing.B, n int) {
	b.Logf("load average before: %s", loadavg())
	bk, stop := apptest.StartManual(b)
	defer stop()
	ctx := context.Background()
	bk.JSON(b, "POST", "/api/jobs", map[string]any{
		"id": jobID, "version": "1.0.0",
		"execute": map[string]any{"shell": "powershell", "script": "Get-CimInstance Win32_OperatingSystem | Select-Object Caption", "timeout": "60s"},
	}, 200, nil)

	rec := subscribe(b, bk)

	// One instant far enough ahead for the schedules to be written and
	// loaded; a cron naming that very second fires once.
	margin := 3*time.Second + time.Duration(n)*700*time.Microsecond // a quiet machine
	instant := time.Now().UTC().Add(margin).Truncate(time.Second).Add(time.Second)
	cronExpr := fmt.Sprintf("%d %d %d %d %d *", instant.Second(), instant.Minute(), instant.Hour(), instant.Day(), int(instant.Month()))
	putSchedules(b, bk, n, cronExpr)
	apptest.Eventually(b, time.Until(instant), func() error {
		s, err := bk.Scheduler.Summary(ctx)
		if err != nil {
			return err
		}
		if s.Running != n {
			return fmt.Errorf("%d of %d schedules running", s.Running, n)
		}
		return nil
	})
	if time.Until(instant) < 200*time.Millisecond {
		b.Fatalf("schedules loaded too close to the instant; raise the margin")
	}

	rec.arm(instant, n)
	stopProfile := profile(b, instant)
	cpu0 := testsupport.ProcessCPU()
	timeout := 30*time.Second + time.Duration(n)*10*time.Millisecond
	rec.wait(b, timeout)
	fireCPU := testsupport.ProcessCPU() - cpu0
	stopProfile()
	lat := rec.samples()

	outcomes, bad := ticks(b, bk, n, instant, timeout)
	var execRows int
	if err := bk.Store.R.NewSelect().TableExpr("executions").ColumnExpr("count(*)").
		Where("schedule_id IS NOT NULL").Scan(ctx, &execRows); err != nil {
		b.Fatal(err)
	}

	raw := rawCeiling(b, bk, rec, n)

	b.ReportMetric(pct(lat, 0.50), "p50_ms")
	b.ReportMetric(pct(lat, 0.99), "p99_ms")
	b.ReportMetric(pct(lat, 1), "max_ms")
	b.ReportMetric(pct(raw, 0.50), "raw_p50_ms")
	b.ReportMetric(pct(raw, 0.99), "raw_p99_ms")
	b.ReportMetric(pct(lat, 0.99)/pct(raw, 0.99), "p99/raw_p99")
	b.ReportMetric(fireCPU.Seconds(), "fire_cpu_s")
	b.ReportMetric(float64(len(lat)), "commands")
	b.ReportMetric(float64(execRows), "exec_rows")
	b.ReportMetric(float64(outcomes[messages.TickFailed]), "ticks_failed")
	b.Logf("N=%d: p50 %.1f ms, p99 %.1f ms, max %.1f ms; raw p50 %.1f ms, p99 %.1f ms; commands %d, executions rows %d, tick outcomes %v; load average after: %s",
		n, pct(lat, 0.5), pct(lat, 0.99), pct(lat, 1), pct(raw, 0.5), pct(raw, 0.99), len(lat), execRows, outcomes, loadavg())
	if len(lat) != n || execRows != n || outcomes[messages.TickFired] != n || bad != "" {
		b.Errorf("want %d Commands, %d executions rows and %d ticks fired with their exec ids; got %d, %d, %v %s",
			n, n, n, len(lat), execRows, outcomes, bad)
	}
}

// profile writes a CPU profile of the fire to $KANADE_BENCH_PROFILE, from
// just before the instant until the Commands have arrived.
func profile(b *testing.B, instant time.Time) func() {
	path := os.Getenv("KANADE_BENCH_PROFILE")
	if path == "" {
		return func() {}
	}
	time.Sleep(time.Until(instant.Add(-100 * time.Millisecond)))
	return testsupport.CPUProfile(b, path)
}

// putSchedules writes n schedules straight into KV schedules, 64 puts in
// flight (setup, not measured).
func putSchedules(b testing.TB, bk *apptest.Backend, n int, cronExpr string) {
	b.Helper()
	ctx := context.Background()
	kv, err := bk.JS.KeyValue(ctx, messages.BucketSchedules)
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	var failed atomic.Int32
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			v := fmt.Sprintf(`{"id":%q,"cron":%q,"job_id":%q,"target":{"pcs":[%q]},"mode":"every_tick"}`,
				scheduleID(i), cronExpr, jobID, pcID(i))
			if _, err := kv.Put(ctx, scheduleID(i), []byte(v)); err != nil {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	if failed.Load() > 0 {
		b.Fatalf("%d schedule puts failed", failed.Load())
	}
}

// ticks waits until every schedule has recorded its tick of instant and
// counts the outcomes; bad describes the first schedule whose tick does
// not name the exec its executions row holds.
func ticks(b *testing.B, bk *apptest.Backend, n int, instant time.Time, timeout time.Duration) (map[string]int, string) {
	b.Helper()
	ctx := context.Background()
	var rows []struct {
		ScheduleID string `bun:"schedule_id"`
		ExecID     string `bun:"exec_id"`
	}
	if err := bk.Store.R.NewSelect().TableExpr("executions").ColumnExpr("schedule_id, exec_id").
		Where("schedule_id IS NOT NULL").Scan(ctx, &rows); err != nil {
		b.Fatal(err)
	}
	execOf := make(map[string]string, len(rows))
	for _, r := range rows {
		execOf[r.ScheduleID] = r.ExecID
	}
	outcomes := map[string]int{}
	bad := ""
	deadline := time.Now().Add(timeout)
	for i := range n {
		id := scheduleID(i)
		for {
			st, err := bk.Scheduler.Status(ctx, id)
			if err != nil {
				b.Fatal(err)
			}
			if len(st.LastTicks) > 0 && st.LastTicks[0].Instant.Equal(instant) {
				t := st.LastTicks[0]
				outcomes[t.Outcome]++
				if bad == "" && (t.Outcome != messages.TickFired || t.ExecID == "" || t.ExecID != execOf[id] || t.Pcs != 1) {
					bad = fmt.Sprintf("(schedule %s: tick %+v, executions row %q)", id, t, execOf[id])
				}
				break
			}
			if time.Now().After(deadline) {
				outcomes["none"]++
				if bad == "" {
					bad = fmt.Sprintf("(schedule %s recorded no tick of %v)", id, instant)
				}
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return outcomes, bad
}

// rawCeiling inserts the rows the fires wrote again under new ids, in one
// transaction, then publishes the same Commands with one flush, and
// returns the time from its start to each arrival at the subscriber.
func rawCeiling(b *testing.B, bk *apptest.Backend, rec *recorder, n int) []time.Duration {
	b.Helper()
	ctx := context.Background()
	var execs []storage.Execution
	if err := bk.Store.R.NewSelect().Model(&execs).Where("schedule_id IS NOT NULL").Scan(ctx); err != nil {
		b.Fatal(err)
	}
	var reqs []storage.PublishedRequest
	if err := bk.Store.R.NewSelect().Model(&reqs).
		Where("exec_id IN (SELECT exec_id FROM executions WHERE schedule_id IS NOT NULL)").Scan(ctx); err != nil {
		b.Fatal(err)
	}
	var exp []storage.ExecExpected
	if err := bk.Store.R.NewSelect().Model(&exp).
		Where("exec_id IN (SELECT exec_id FROM executions WHERE schedule_id IS NOT NULL)").Scan(ctx); err != nil {
		b.Fatal(err)
	}
	newID := make(map[string]string, len(execs))
	for i := range execs {
		id := uuid.NewString()
		newID[execs[i].ExecID] = id
		execs[i].ExecID = id
	}
	for i := range reqs {
		reqs[i].RequestID, reqs[i].ExecID, reqs[i].PublishedAt = uuid.NewString(), newID[reqs[i].ExecID], storage.Time{}
	}
	for i := range exp {
		exp[i].ExecID = newID[exp[i].ExecID]
	}
	payload := rec.payload()
	if payload == nil {
		b.Fatal("no Command was received to copy")
	}

	rec.arm(time.Now(), n)
	err := bk.Store.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		if err := storage.InsertChunked(ctx, tx, execs, false); err != nil {
			return err
		}
		if err := storage.InsertChunked(ctx, tx, reqs, false); err != nil {
			return err
		}
		return storage.InsertChunked(ctx, tx, exp, false)
	})
	if err != nil {
		b.Fatal(err)
	}
	for i := range n {
		if err := bk.Conn.Publish(messages.CommandsPCSubject(pcID(i)), payload); err != nil {
			b.Fatal(err)
		}
	}
	if err := bk.Conn.FlushTimeout(10 * time.Second); err != nil {
		b.Fatal(err)
	}
	rec.wait(b, 30*time.Second)
	return rec.samples()
}

// subscribe starts a recorder on commands.pc.> on its own connection, as
// an agent would be, with no limit on pending messages.
func subscribe(t testing.TB, bk *apptest.Backend) *recorder {
	t.Helper()
	nc, err := nats.Connect(bk.NATSURL, nats.Name("fire-bench-subscriber"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	rec := &recorder{}
	sub, err := nc.Subscribe("commands.pc.>", rec.on)
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return rec
}

// recorder times Command arrivals from a start instant.
type recorder struct {
	mu     sync.Mutex
	from   time.Time
	want   int
	lat    []time.Duration
	sample []byte
	done   chan struct{}
}

func (r *recorder) arm(from time.Time, want int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.from, r.want, r.lat, r.done = from, want, make([]time.Duration, 0, want), make(chan struct{})
}

func (r *recorder) on(m *nats.Msg) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done == nil {
		return
	}
	r.lat = append(r.lat, now.Sub(r.from))
	if r.sample == nil {
		r.sample = append([]byte(nil), m.Data...)
	}
	if len(r.lat) == r.want {
		close(r.done)
	}
}

func (r *recorder) wait(b testing.TB, timeout time.Duration) {
	r.mu.Lock()
	done := r.done
	r.mu.Unlock()
	select {
	case <-done:
	case <-time.After(timeout):
		b.Errorf("only %d of %d Commands arrived within %v", len(r.samples()), r.want, timeout)
	}
	// Anything beyond the expected count would be a second fire.
	time.Sleep(200 * time.Millisecond)
}

func (r *recorder) samples() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.lat)
}

func (r *recorder) payload() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sample
}

// pct is the q-quantile of d in milliseconds (q = 1: the maximum).
func pct(d []time.Duration, q float64) float64 {
	if len(d) == 0 {
		return -1
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return float64(s[int(q*float64(len(s)-1))].Microseconds()) / 1000
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}
