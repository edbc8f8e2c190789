package exec_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"

	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/execrecord"
)

// BenchmarkExecFanout10k measures an exec to 10 000 listed PCs through the
// engine, from request to reply: catalog read, version pin, the executions
// row with 10 000 exec_requests and 10 000 exec_expected rows, 10 000
// publishes, one flush, the published_at stamps and the audit event.
//
// In the same run, on the same connection and database, it measures the
// raw ceilings of this machine:
//   - raw_publish_ms: 10 000 nc.Publish of a Command of the same size and
//     one flush;
//   - raw_db_ms: one transaction inserting the same 10 000 exec_requests
//     and 10 000 exec_expected rows with bun, 1 000 rows per statement.
//
// record_ms is the share of exec_ms spent on the record, measured by doing
// the same again (execrecord.Load and Publish) after each exec, and
// record_kib its size on the stream.
//
// Budget (architecture.md §6): exec_ms ≤ 1000. The database grows by
// 20 000 rows per iteration, as it would in production.
//
//	go test -run '^$' -bench ExecFanout10k -benchtime 10x ./actors/exec/
func BenchmarkExecFanout10k(b *testing.B) {
	e := newEnv(b)
	e.start()
	ctx := context.Background()
	plan := tenThousandPCsPlan()
	m := e.putJob("job1", "1.0.0", "Get-CimInstance Win32_ComputerSystem | Select-Object Name | ConvertTo-Json -Compress")
	execID := uuid.NewString()
	cmd, err := m.NewCommand(uuid.NewString(), &execID, nil)
	if err != nil {
		b.Fatal(err)
	}
	payload, err := json.Marshal(cmd)
	if err != nil {
		b.Fatal(err)
	}

	pub := &execrecord.Publisher{JS: e.br.JS}
	var execTotal, rawPub, rawDB, recTotal time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		for _, pc := range plan.Target.Pcs {
			if err := e.br.Conn.Publish(messages.CommandsPCSubject(pc), payload); err != nil {
				b.Fatal(err)
			}
		}
		if err := e.br.Conn.FlushTimeout(10 * time.Second); err != nil {
			b.Fatal(err)
		}
		rawPub += time.Since(t0)

		t1 := time.Now()
		rawInsert(b, e.store, plan.Target.Pcs)
		rawDB += time.Since(t1)

		t2 := time.Now()
		r, err := e.client.Exec(ctx, &messages.ExecRequest{JobID: "job1", Plan: plan, Actor: "operator"})
		if err != nil {
			b.Fatal(err)
		}
		execTotal += time.Since(t2)
		if r.TargetCount != 10000 {
			b.Fatalf("target_count %d", r.TargetCount)
		}

		t3 := time.Now()
		rec, err := execrecord.Load(ctx, e.store.R, r.ExecID)
		if err != nil {
			b.Fatal(err)
		}
		if err := pub.Publish(ctx, rec); err != nil {
			b.Fatal(err)
		}
		recTotal += time.Since(t3)
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(float64(execTotal.Milliseconds())/n, "exec_ms/op")
	b.ReportMetric(float64(rawPub.Milliseconds())/n, "raw_publish_ms/op")
	b.ReportMetric(float64(rawDB.Milliseconds())/n, "raw_db_ms/op")
	b.ReportMetric(float64(recTotal.Milliseconds())/n, "record_ms/op")
	b.ReportMetric(float64(execTotal)/float64(rawPub+rawDB), "exec/raw")
	st, err := e.br.JS.Stream(ctx, messages.StreamExec)
	if err != nil {
		b.Fatal(err)
	}
	if info, err := st.Info(ctx); err == nil && info.State.Msgs > 0 {
		// One record per exec is left on the stream (older ones purged).
		b.ReportMetric(float64(info.State.Bytes)/float64(b.N)/1024, "record_kib")
	}
}

// rawInsert writes the rows of a 10 000-PC exec the plainest way bun can:
// 1 000-row statements (storage.InsertChunked, as the engine does).
func rawInsert(b *testing.B, st *storage.Store, pcs []string) {
	ctx := context.Background()
	execID := uuid.NewString()
	now := storage.T(time.Now())
	reqs := make([]storage.PublishedRequest, len(pcs))
	exp := make([]storage.ExecExpected, len(pcs))
	for i, pc := range pcs {
		reqs[i] = storage.PublishedRequest{RequestID: uuid.NewString(), ExecID: execID, Subject: messages.CommandsPCSubject(pc)}
		exp[i] = storage.ExecExpected{ExecID: execID, PcID: pc}
	}
	err := st.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		row := &storage.Execution{ExecID: execID, JobID: "raw", Version: "1", InitiatedBy: "bench", Plan: []byte("{}"),
			Subjects: []byte("[]"), Status: "pending", CreatedAt: now, DeadlineAt: now, UpdatedAt: now}
		if _, err := tx.NewInsert().Model(row).Exec(ctx); err != nil {
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
}
