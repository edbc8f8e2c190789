package targets_test

import (
	"context"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"kanade-backend/http/targets"
	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/storagetest"
)

// BenchmarkResolve prices, at the budget's fleet size (10 000 agents, half
// of them in one group), what an operator exec now pays before the engine
// fires (Matches: does the target reach anyone?) and the full preview of
// the dashboard's forms (Resolve), next to the engine's own resolution of
// the same target (storage.ResolveTargetPCs) in the same run: the exec's
// check must stay a small fraction of what the engine does anyway.
//
//	go test ./http/targets -run '^$' -bench Resolve -benchtime 200x
func BenchmarkResolve(b *testing.B) {
	st := storagetest.Open(b)
	ctx := context.Background()
	now := time.Now()
	if err := storagetest.Seed(ctx, st, storagetest.Fleet{Agents: 10_000, End: now}); err != nil {
		b.Fatal(err)
	}
	var pcs []string
	members := make([]storage.GroupMember, 0, 5_000)
	for i := range 10_000 {
		pcs = append(pcs, storagetest.PcID(i))
		if i%2 == 0 {
			members = append(members, storage.GroupMember{PcID: storagetest.PcID(i), GroupName: "canary"})
		}
	}
	err := st.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		for start := 0; start < len(members); start += 500 {
			batch := members[start:min(start+500, len(members))]
			if _, err := tx.NewInsert().Model(&batch).Exec(ctx); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		target messages.Target
	}{
		{"all", messages.Target{All: true}},
		{"group of 5000", messages.Target{Groups: []string{"canary"}}},
		{"10000 listed PCs", messages.Target{Pcs: pcs}},
	} {
		b.Run(c.name, func(b *testing.B) {
			var check, preview, engine time.Duration
			for b.Loop() {
				t0 := time.Now()
				if ok, err := targets.Matches(ctx, st.R, c.target); err != nil || !ok {
					b.Fatalf("matches %v: %v", ok, err)
				}
				check += time.Since(t0)
				t0 = time.Now()
				p, err := targets.Resolve(ctx, st.R, c.target, now)
				preview += time.Since(t0)
				if err != nil || p.PCs == 0 {
					b.Fatalf("preview %+v: %v", p, err)
				}
				t0 = time.Now()
				if _, err := storage.ResolveTargetPCs(ctx, st.R, c.target, now); err != nil {
					b.Fatal(err)
				}
				engine += time.Since(t0)
			}
			n := float64(b.N)
			b.ReportMetric(float64(check.Microseconds())/n/1000, "exec-check-ms/op")
			b.ReportMetric(float64(preview.Microseconds())/n/1000, "preview-ms/op")
			b.ReportMetric(float64(engine.Microseconds())/n/1000, "engine-resolve-ms/op")
			b.ReportMetric(float64(check)/float64(engine), "check/engine")
		})
	}
}
