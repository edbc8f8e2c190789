package exec_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"

	"kanade-backend/messages"
)

// BenchmarkExecFanout10k measures an exec to 10 000 listed PCs through the
// engine, from request to reply: catalog read, version pin, the executions
// row with 10 000 exec_requests and exec_expected rows, 10 000 publishes
// and the flush. In the same run it measures the raw ceiling of this
// machine: 10 000 nc.Publish calls of a Command of the same size and one
// flush, on the same in-process connection. Budget (architecture.md §6):
// exec_ms ≤ 1000.
//
//	go test -run '^$' -bench ExecFanout10k -benchtime 10x ./actors/exec/
func BenchmarkExecFanout10k(b *testing.B) {
	e := newEnv(b)
	e.start()
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

	var execTotal, rawTotal time.Duration
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
		rawTotal += time.Since(t0)

		t1 := time.Now()
		r, err := e.client.Exec(context.Background(), &messages.ExecRequest{JobID: "job1", Plan: plan, Actor: "operator"})
		if err != nil {
			b.Fatal(err)
		}
		execTotal += time.Since(t1)
		if r.TargetCount != 10000 {
			b.Fatalf("target_count %d", r.TargetCount)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(execTotal.Milliseconds())/float64(b.N), "exec_ms/op")
	b.ReportMetric(float64(rawTotal.Milliseconds())/float64(b.N), "raw_publish_ms/op")
	b.ReportMetric(float64(execTotal)/float64(rawTotal), "exec/raw")
}
