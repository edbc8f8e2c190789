package broadcastbench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/uptrace/bun"

	"kanade-backend/internal/apptest"
	"kanade-backend/internal/sim"
	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/broker/brokertest"
	"kanade-backend/storage/storagetest"
)

// sizes are the fleet sizes to run (KANADE_BENCH_AGENTS, comma-separated;
// default 10 000 and 100 000).
func sizes() []int {
	var out []int
	for _, f := range strings.Split(os.Getenv("KANADE_BENCH_AGENTS"), ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && n > 0 {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		out = []int{10_000, 100_000}
	}
	return out
}

// BenchmarkBroadcast runs, per fleet size N, a backend and N simulated
// agents (kanade-fleet's sim, in process), and times an operator's
// POST /api/exec/{job} with target all (the exec API: N expected PCs
// resolved and recorded, one commands.all published) and the broadcast
// from that request until the exec is completed, which the results
// projection sets in the transaction of the last answer's row: every one
// of the N rows is committed. lag_s is that commit after the RESULTS
// stream stored the last agent's answer.
//
// The raw ceiling of the same run (raw_s) is the same N results published
// to JetStream from a plain loop (acks awaited) and inserted into a fresh
// SQLite database of the same schema by a plain loop of 500-row
// statements, one transaction each. %_of_raw is raw_s ÷ broadcast_s.
//
//	go test -run '^$' -bench Broadcast -benchtime 1x -timeout 30m ./cmd/kanade-backend/app/broadcastbench/
func BenchmarkBroadcast(b *testing.B) {
	for _, n := range sizes() {
		b.Run(fmt.Sprintf("agents=%d", n), func(b *testing.B) {
			for b.Loop() {
				broadcast(b, n)
			}
		})
	}
}

func broadcast(b *testing.B, n int) {
	ctx := context.Background()
	be := apptest.Start(b)
	be.JSON(b, "POST", "/api/jobs", `{"id":"bench","version":"1","execute":{"shell":"powershell","script":"echo ok\nexit 0","timeout":"10m"}}`, 200, nil)
	start := time.Now()
	be.StartFleet(b, sim.Config{Agents: n, Heartbeat: 30 * time.Second})
	fleetStart := time.Since(start)
	// "all" is the agents the backend has seen: wait for every first
	// heartbeat to be projected.
	apptest.Eventually(b, 5*time.Minute, func() error {
		c, err := be.Store.R.NewSelect().Model((*storage.Agent)(nil)).Count(ctx)
		if err != nil || c != int64(n) {
			return fmt.Errorf("%d agents projected, want %d (%v)", c, n, err)
		}
		return nil
	})

	t0 := time.Now()
	var resp messages.ExecResponse
	be.JSON(b, "POST", "/api/exec/bench", `{"target":{"all":true}}`, 200, &resp)
	api := time.Since(t0)
	if resp.ExpectedPcs != n {
		b.Fatalf("expected_pcs %d, want %d", resp.ExpectedPcs, n)
	}
	var ex storage.Execution
	for {
		if err := be.Store.R.NewSelect().Model(&ex).Column("status", "success_count", "failure_count").
			Where("exec_id = ?", resp.ExecID).Scan(ctx); err != nil {
			b.Fatal(err)
		}
		if ex.Status != storage.ExecPending && ex.Status != storage.ExecRunning {
			break
		}
		if time.Since(t0) > 10*time.Minute {
			b.Fatalf("exec still %s after 10 min: %d answers", ex.Status, ex.SuccessCount+ex.FailureCount)
		}
		time.Sleep(5 * time.Millisecond)
	}
	done := time.Now()
	total := done.Sub(t0)
	if ex.Status != storage.ExecCompleted || ex.SuccessCount != n {
		b.Fatalf("exec %s with %d successes, %d failures; want completed, %d", ex.Status, ex.SuccessCount, ex.FailureCount, n)
	}
	rows, err := be.Store.R.NewSelect().Model((*storage.ExecutionResult)(nil)).Where("exec_id = ?", resp.ExecID).Count(ctx)
	if err != nil || rows != int64(n) {
		b.Fatalf("%d result rows, want %d (%v)", rows, n, err)
	}
	js, err := jetstream.New(be.Conn)
	if err != nil {
		b.Fatal(err)
	}
	st, err := js.Stream(ctx, messages.StreamResults)
	if err != nil {
		b.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		b.Fatal(err)
	}
	lag := done.Sub(info.State.LastTime)

	rawPub, rawIns := rawCeiling(b, n)
	raw := rawPub + rawIns
	b.ReportMetric(api.Seconds(), "exec_api_s")
	b.ReportMetric(total.Seconds(), "broadcast_s")
	b.ReportMetric(lag.Seconds(), "lag_s")
	b.ReportMetric(raw.Seconds(), "raw_s")
	b.ReportMetric(raw.Seconds()/total.Seconds()*100, "%_of_raw")
	b.ReportMetric(fleetStart.Seconds(), "fleet_start_s")
	b.ReportMetric(float64(peakRSS())/(1<<20), "peak_rss_MB")
	b.ReportMetric(0, "ns/op")
	b.Logf("%d agents: POST /api/exec %.3f s; last row committed %.2f s after the request, %.2f s after the last answer was stored; "+
		"raw ceiling %.2f s (publish %.2f s + insert %.2f s) = %.0f %% of raw; fleet started in %.2f s; load %s",
		n, api.Seconds(), total.Seconds(), lag.Seconds(), raw.Seconds(), rawPub.Seconds(), rawIns.Seconds(),
		raw.Seconds()/total.Seconds()*100, fleetStart.Seconds(), loadavg())
}

// rawCeiling publishes n results like the agents' to a fresh broker's
// RESULTS stream from a plain loop (every ack awaited) and inserts the
// rows they make into a fresh database with plain 500-row statements, one
// transaction each, and returns the two times.
func rawCeiling(b *testing.B, n int) (time.Duration, time.Duration) {
	ctx := context.Background()
	br := brokertest.Start(b)
	now := time.Now().UTC()
	job := "bench"
	rows := make([]storage.ExecutionResult, n)
	t0 := time.Now()
	var futures []jetstream.PubAckFuture
	for i, pc := range sim.PCIDs("SIM-", n) {
		r := messages.ExecResult{RequestID: "raw-req", PcID: pc, Stdout: "ok\n", StartedAt: now, FinishedAt: now, ManifestID: &job}
		data, _ := json.Marshal(r)
		f, err := br.JS.PublishAsync(messages.ResultsSubject(r.RequestID), data, jetstream.WithStallWait(time.Minute))
		if err != nil {
			b.Fatal(err)
		}
		futures = append(futures, f)
		rows[i] = storage.ExecutionResult{RequestID: r.RequestID, PcID: pc, JobID: &job, Stdout: r.Stdout,
			StartedAt: storage.T(now), FinishedAt: storage.T(now), RecordedAt: storage.T(now), StreamSeq: uint64(i + 1)}
	}
	<-br.JS.PublishAsyncComplete()
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			b.Fatal(err)
		}
	}
	pub := time.Since(t0)

	db := storagetest.OpenAt(b, filepath.Join(b.TempDir(), "raw.db"))
	t0 = time.Now()
	for i := 0; i < n; i += 500 {
		part := rows[i:min(i+500, n)]
		err := db.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
			args := make([]any, 0, len(part)*11)
			vals := make([]string, len(part))
			for j, r := range part {
				args = append(args, r.RequestID, r.PcID, nil, r.JobID, r.ExitCode, r.Stdout, r.Stderr,
					r.StartedAt, r.FinishedAt, r.RecordedAt, int64(r.StreamSeq))
				vals[j] = "(?,?,?,?,?,?,?,?,?,?,?)"
			}
			_, err := tx.Tx.ExecContext(ctx, "INSERT INTO execution_results (request_id, pc_id, exec_id, job_id, exit_code, stdout, stderr, started_at, finished_at, recorded_at, stream_seq) VALUES "+
				strings.Join(vals, ","), args...)
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	return pub, time.Since(t0)
}

// peakRSS is the process's peak resident set size (VmHWM) in bytes.
func peakRSS() uint64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func loadavg() string {
	data, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
