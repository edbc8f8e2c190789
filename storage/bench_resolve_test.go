package storage_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/storagetest"
)

// BenchmarkResolveAll resolves target all over N alive agents
// (KANADE_BENCH_AGENTS, default 100 000), the read an exec to every PC
// makes before it records its expected PCs. raw_ms is the ceiling of the
// same run: the same pc_ids read in pc_id order from the agents table by a
// plain query, no filter.
//
//	go test -run '^$' -bench ResolveAll -benchtime 10x ./storage/
func BenchmarkResolveAll(b *testing.B) {
	n := 100_000
	if v, err := strconv.Atoi(os.Getenv("KANADE_BENCH_AGENTS")); err == nil && v > 0 {
		n = v
	}
	st := storagetest.Open(b)
	ctx := context.Background()
	now := time.Now().UTC()
	err := st.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		rows := make([]storage.Agent, n)
		for i := range rows {
			rows[i] = storage.Agent{PcID: fmt.Sprintf("SIM-%06d", (i*7919)%n), AgentVersion: "0.21.2",
				LastHeartbeat: storage.T(now.Add(-time.Duration(i%30) * time.Second)), UpdatedAt: storage.T(now)}
		}
		return storage.InsertChunked(ctx, tx, rows, false)
	})
	if err != nil {
		b.Fatal(err)
	}
	if ddl := os.Getenv("KANADE_BENCH_DDL"); ddl != "" { // an index to try
		if err := st.InTx(ctx, func(ctx context.Context, tx bun.Tx) error { _, err := tx.ExecContext(ctx, ddl); return err }); err != nil {
			b.Fatal(err)
		}
	}
	b.Log(storagetest.QueryPlan(b, st.R, st.R.NewSelect().Model((*storage.Agent)(nil)).Column("pc_id").
		Where("last_heartbeat >= ?", storage.T(now)).Order("pc_id")))
	var raw time.Duration
	for b.Loop() {
		ids, err := storage.ResolveTargetPCs(ctx, st.R, messages.Target{All: true}, now)
		if err != nil || len(ids) != n {
			b.Fatalf("%d ids, %v", len(ids), err)
		}
		b.StopTimer()
		t0 := time.Now()
		r, err := st.R.QueryContext(ctx, "SELECT pc_id FROM agents ORDER BY pc_id")
		if err != nil {
			b.Fatal(err)
		}
		got := 0
		for r.Next() {
			var id string
			if err := r.Scan(&id); err != nil {
				b.Fatal(err)
			}
			got++
		}
		r.Close()
		raw += time.Since(t0)
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "resolve_ms")
	b.ReportMetric(float64(raw.Milliseconds())/float64(b.N), "raw_ms")
	b.ReportMetric(0, "ns/op")
}
