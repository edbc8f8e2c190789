//go:build unix

package projector

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

	"github.com/uptrace/bun"

	"kanade-backend/internal/testsupport"
	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/broker/brokertest"
	"kanade-backend/storage/storagetest"
)

// benchResults is the number of results per measurement
// (KANADE_BENCH_RESULTS overrides).
func benchResults() int {
	if n, err := strconv.Atoi(os.Getenv("KANADE_BENCH_RESULTS")); err == nil && n > 0 {
		return n
	}
	return 50_000
}

// benchStore opens a new, empty, migrated store for one run of a
// projection benchmark or of its raw ceiling: a SQLite file, or with
// KANADE_BENCH_DIALECT=postgres a new database on the package's throwaway
// PostgreSQL (storage/pgtest: Unix socket, fsync and synchronous_commit
// off, for the projection and the raw ceiling alike).
func benchStore(b testing.TB) *storage.Store {
	b.Helper()
	switch d := os.Getenv("KANADE_BENCH_DIALECT"); d {
	case "", "sqlite":
		return storagetest.OpenAt(b, filepath.Join(b.TempDir(), "backend.db"))
	case "postgres":
		return storagetest.OpenPostgres(b)
	default:
		b.Fatalf("KANADE_BENCH_DIALECT=%s: want sqlite or postgres", d)
		return nil
	}
}

// benchRounds is the number of projection runs per measurement
// (KANADE_BENCH_ROUNDS overrides).
func benchRounds() int {
	if n, err := strconv.Atoi(os.Getenv("KANADE_BENCH_ROUNDS")); err == nil && n > 0 {
		return n
	}
	return 2
}

// BenchmarkResultsProjection measures, in one run, the results projection
// (JetStream RESULTS → durable consumer → batched transactions with
// checkpoint, acks after commit) next to the raw ceiling of the same
// machine: the same rows inserted into the same kind of database
// (storage.Open, same schema and indexes) with the fastest plain method
// measured (500-row multi-row INSERTs with driver arguments, one
// transaction per statement). KANADE_BENCH_DIALECT=postgres runs both on
// PostgreSQL (benchStore).
//
// Raw runs and projection runs alternate (raw, projection, raw, ...,
// raw) and the best run of each counts: on a machine shared with other
// work, a slice of load hits whichever run it lands in, and comparing best
// with best compares the two under the same (least loaded) conditions.
// Both also report process CPU per row, which load disturbs much less.
//
//	go test -run '^$' -bench ResultsProjection -benchtime 1x ./actors/projector/
//	KANADE_BENCH_DIALECT=postgres go test -run '^$' -bench ResultsProjection -benchtime 1x ./actors/projector/
func BenchmarkResultsProjection(b *testing.B) {
	n := benchResults()
	payloads, rows := benchPayloads(n)
	for b.Loop() {
		var raws, projs []float64
		raw, rawCPU := rawInsertRate(b, rows)
		raws = append(raws, raw)
		proj, projCPU, batches := 0.0, 0.0, 0.0
		for range benchRounds() {
			p, cpu, nb := projectionRate(b, payloads)
			projs = append(projs, p)
			if p > proj {
				proj, projCPU, batches = p, cpu, nb
			}
			r, cpu := rawInsertRate(b, rows)
			raws = append(raws, r)
			if r > raw {
				raw, rawCPU = r, cpu
			}
		}
		b.ReportMetric(proj, "projected_rows/s")
		b.ReportMetric(raw, "raw_rows/s")
		b.ReportMetric(proj/raw*100, "%_of_raw")
		b.ReportMetric(float64(n)/batches, "rows/batch")
		b.ReportMetric(projCPU, "projected_cpu_µs/row")
		b.ReportMetric(rawCPU, "raw_cpu_µs/row")
		b.Logf("%d results: projection runs %.0f rows/s (best: %.1f µs CPU/row for the whole process: NATS server, pump, actor; %.0f batches); "+
			"raw insert runs %.0f rows/s (best: %.1f µs CPU/row); best projection = %.0f %% of best raw",
			n, projs, projCPU, batches, raws, rawCPU, proj/raw*100)
		if proj < raw/2 {
			b.Errorf("projection %.0f rows/s is below 50 %% of the raw insert %.0f rows/s", proj, raw)
		}
	}
}

// projectionRate publishes payloads into a fresh RESULTS stream, starts
// the projectors on a fresh database and returns rows per second from
// Start until the last row is committed, process CPU microseconds per row,
// and the number of batches.
func projectionRate(b *testing.B, payloads []pubMsg) (float64, float64, float64) {
	return projectionRateWith(b, payloads, nil, nil)
}

// projectionRateWith is projectionRate with hooks: seed writes into the
// database before the projectors start, settled runs once the last row is
// committed (before the projectors stop) with the start time.
func projectionRateWith(b *testing.B, payloads []pubMsg, seed func(*storage.Store), settled func(*harness, time.Time)) (float64, float64, float64) {
	n := len(payloads)
	br := brokertest.Start(b)
	publishJS(b, br.JS, payloads)
	h := newHarness(b, harnessOpts{broker: br, store: benchStore(b)})
	if seed != nil {
		seed(h.store)
	}
	stopProfile := func() {}
	if f := os.Getenv("KANADE_BENCH_PROFILE"); f != "" {
		stopProfile = testsupport.CPUProfile(b, f)
	}
	start, cpu0 := time.Now(), testsupport.ProcessCPU()
	h.start()
	// Gathering the registry costs CPU that would be charged to the
	// projection; every 5 ms it is negligible and adds at most 5 ms.
	for h.metric("kanade_projection_messages_total", "projection", ProjResults) < float64(n) {
		time.Sleep(5 * time.Millisecond)
	}
	rate := float64(n) / time.Since(start).Seconds()
	cpu := (testsupport.ProcessCPU() - cpu0).Seconds() * 1e6 / float64(n)
	stopProfile()
	batches := h.metric("kanade_projection_batch_size", "projection", ProjResults)
	if settled != nil {
		settled(h, start)
	}
	h.stop()
	if got := h.count("execution_results"); got != n {
		b.Fatalf("%d rows projected, want %d", got, n)
	}
	return rate, cpu, batches
}

// benchPayloads returns n results as agents publish them (a third are
// broadcast answers sharing a request id; stdout of a typical short
// script) and the rows they become.
func benchPayloads(n int) ([]pubMsg, []storage.ExecutionResult) {
	return resultPayloads(n, func(i int) (string, string, int) {
		req := fmt.Sprintf("3f1c9a52-7d4e-4b8a-9c1d-%012d", i/3*3)
		if i%3 != 0 {
			req = fmt.Sprintf("3f1c9a52-7d4e-4b8a-9c1d-%012d", i)
		}
		return req, fmt.Sprintf("PC-%05d", i%10000), i % 7 / 6
	})
}

// resultPayloads returns n results, the i-th from PC pc answering request
// req with exit code exit as answer(i) says, as agents publish them (the
// stdout of a typical short script), and the rows they become.
func resultPayloads(n int, answer func(i int) (req, pc string, exit int)) ([]pubMsg, []storage.ExecutionResult) {
	msgs := make([]pubMsg, n)
	rows := make([]storage.ExecutionResult, n)
	job := "disk-check"
	stdout := strings.Repeat("C: 120.4 GB free of 476.3 GB\n", 8)
	now := time.Now().UTC()
	for i := range n {
		req, pc, exit := answer(i)
		r := messages.ExecResult{RequestID: req, PcID: pc, ExitCode: exit,
			Stdout: stdout, Stderr: "", StartedAt: now.Add(-2 * time.Second), FinishedAt: now, ManifestID: &job}
		data, _ := json.Marshal(r)
		msgs[i] = pubMsg{subject: messages.ResultsSubject(req), data: data}
		rows[i] = storage.ExecutionResult{RequestID: req, PcID: pc, JobID: &job, ExitCode: exit,
			Stdout: stdout, StartedAt: storage.T(r.StartedAt), FinishedAt: storage.T(now), RecordedAt: storage.T(now), StreamSeq: uint64(i + 1)}
	}
	return msgs, rows
}

// rawInsertRate inserts rows into a fresh database in 500-row statements,
// one transaction each, and returns rows per second and process CPU
// microseconds per row.
func rawInsertRate(b *testing.B, rows []storage.ExecutionResult) (float64, float64) {
	b.Helper()
	st := benchStore(b)
	ctx := context.Background()
	start, cpu0 := time.Now(), testsupport.ProcessCPU()
	err := chunks(rows, chunkRows, func(part []storage.ExecutionResult) error {
		return st.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
			q := storage.NewDriverSQL(tx, len(part)*11)
			q.WriteString("INSERT INTO execution_results (" + resultColumns + ") VALUES ")
			for i, r := range part {
				if i > 0 {
					q.WriteByte(',')
				}
				q.Tuple(r.RequestID, r.PcID, nil, r.JobID, r.ExitCode, r.Stdout, r.Stderr,
					r.StartedAt, r.FinishedAt, r.RecordedAt, int64(r.StreamSeq))
			}
			_, err := tx.Tx.ExecContext(ctx, q.String(), q.Args...)
			return err
		})
	})
	if err != nil {
		b.Fatal(err)
	}
	return float64(len(rows)) / time.Since(start).Seconds(), (testsupport.ProcessCPU() - cpu0).Seconds() * 1e6 / float64(len(rows))
}
