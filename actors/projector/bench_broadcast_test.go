//go:build unix

package projector

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"kanade-backend/messages"
	"kanade-backend/storage"
)

// benchBroadcastPCs is the size of the broadcast (KANADE_BENCH_PCS
// overrides; "10000,100000" runs both).
func benchBroadcastPCs() []int {
	var out []int
	for _, f := range strings.Split(os.Getenv("KANADE_BENCH_PCS"), ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && n > 0 {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		out = []int{10_000, 100_000}
	}
	return out
}

// BenchmarkBroadcastProjection measures the results projection on the
// path a broadcast takes: one exec expecting N PCs, one commands.all
// request_id, N answers. Each batch attributes its rows to the exec,
// records each PC's answer in exec_expected and moves the exec's
// progress, so a cost that grows with the exec (a count over its
// exec_expected rows per batch) shows here and not in
// BenchmarkResultsProjection. The raw ceiling of the same run is the same
// N rows inserted by the plain loop of rawInsertRate, in the order the
// answers arrive.
//
// The answers reach the stream in one of two orders: order=pc, the order
// of the PCs' ids, which is what the simulated fleet does (its agents
// answer at once, in the order they subscribed); and order=random, what a
// real fleet does (each PC answers when its script ends), in which every
// index ordered by pc_id within the broadcast (the key, the PC's and the
// exec's) takes its rows out of order. The projection sorts each batch by
// key before it writes it; the plain loop does not, so in random order the
// projection outruns its "ceiling", and the figure to read is the
// projection's time against its time in pc order.
//
//	go test -run '^$' -bench BroadcastProjection -benchtime 1x ./actors/projector/
func BenchmarkBroadcastProjection(b *testing.B) {
	for _, n := range benchBroadcastPCs() {
		for _, order := range []string{"pc", "random"} {
			b.Run(fmt.Sprintf("pcs=%d/order=%s", n, order), func(b *testing.B) {
				broadcastProjection(b, n, order == "random")
			})
		}
	}
}

// broadcastProjection is one size and order of BenchmarkBroadcastProjection.
func broadcastProjection(b *testing.B, n int, shuffled bool) {
	payloads, rows := broadcastPayloads(n)
	if shuffled {
		rand.New(rand.NewPCG(uint64(n), 1)).Shuffle(n, func(i, j int) {
			payloads[i], payloads[j] = payloads[j], payloads[i]
			rows[i], rows[j] = rows[j], rows[i]
		})
	}
	for b.Loop() {
		raw, _ := rawInsertRate(b, rows)
		proj, cpu, batches, settled := broadcastRate(b, n, payloads)
		if r, _ := rawInsertRate(b, rows); r > raw {
			raw = r
		}
		b.ReportMetric(proj, "projected_rows/s")
		b.ReportMetric(raw, "raw_rows/s")
		b.ReportMetric(proj/raw*100, "%_of_raw")
		b.ReportMetric(float64(n)/proj, "projection_s")
		b.ReportMetric(float64(n)/raw, "raw_s")
		b.ReportMetric(float64(n)/batches, "rows/batch")
		b.ReportMetric(cpu, "projected_cpu_µs/row")
		b.Logf("%d answers to one broadcast: %.0f rows/s (%.2f s, %.0f batches, %.1f µs CPU/row), raw insert %.0f rows/s (%.2f s): %.0f %% of raw; exec completed %.2f s after start",
			n, proj, float64(n)/proj, batches, cpu, raw, float64(n)/raw, proj/raw*100, settled.Seconds())
		if proj < raw/2 {
			b.Errorf("projection %.0f rows/s is below 50 %% of the raw insert %.0f rows/s", proj, raw)
		}
	}
}

// broadcastRate seeds an exec expecting the n PCs of payloads, publishes
// the payloads, projects them and returns rows per second from start until
// the last row is committed, process CPU µs per row, the number of batches
// and when the exec reached completed.
func broadcastRate(b *testing.B, n int, payloads []pubMsg) (float64, float64, float64, time.Duration) {
	var settled time.Duration
	seed := func(st *storage.Store) { seedBroadcast(b, st, "bench-exec", "bench-req", n) }
	completed := func(h *harness, start time.Time) {
		for {
			ex := execRow(b, h.store, "bench-exec")
			if ex.Status == storage.ExecCompleted {
				settled = time.Since(start)
				if ex.SuccessCount != n {
					b.Fatalf("exec completed with %d successes, want %d", ex.SuccessCount, n)
				}
				return
			}
			if time.Since(start) > 10*time.Minute {
				b.Fatalf("exec still %s with %d successes", ex.Status, ex.SuccessCount)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	rate, cpu, batches := projectionRateWith(b, payloads, seed, completed)
	return rate, cpu, batches, settled
}

// seedBroadcast writes what the exec engine writes for a broadcast to n
// PCs: the executions row, its one commands.all request_id and n
// exec_expected rows.
func seedBroadcast(b testing.TB, st *storage.Store, execID, req string, n int) {
	b.Helper()
	now := time.Now().UTC()
	err := st.InTx(context.Background(), func(ctx context.Context, tx bun.Tx) error {
		ex := storage.Execution{
			ExecID: execID, JobID: "disk-check", Version: "1", InitiatedBy: "operator:bench",
			Plan: json.RawMessage(`{}`), Subjects: json.RawMessage(`["commands.all"]`), TargetCount: 1,
			ExpectedPcs: n, Status: storage.ExecPending, TimeoutSecs: 600,
			CreatedAt: storage.T(now.Add(-time.Minute)), DeadlineAt: storage.T(now.Add(time.Hour)), UpdatedAt: storage.T(now),
		}
		if _, err := tx.NewInsert().Model(&ex).Exec(ctx); err != nil {
			return err
		}
		r := storage.PublishedRequest{RequestID: req, ExecID: execID, Subject: messages.SubjectCommandsAll, PublishedAt: storage.T(now)}
		if _, err := tx.NewInsert().Model(&r).Exec(ctx); err != nil {
			return err
		}
		exp := make([]storage.ExecExpected, n)
		for i := range exp {
			exp[i] = storage.ExecExpected{ExecID: execID, PcID: benchPC(i)}
		}
		return storage.InsertChunked(ctx, tx, exp, false)
	})
	if err != nil {
		b.Fatal(err)
	}
}

func benchPC(i int) string { return fmt.Sprintf("SIM-%06d", i) }

// broadcastPayloads returns the n answers to request bench-req, one per
// PC, and the rows they become.
func broadcastPayloads(n int) ([]pubMsg, []storage.ExecutionResult) {
	return resultPayloads(n, func(i int) (string, string, int) { return "bench-req", benchPC(i), 0 })
}
