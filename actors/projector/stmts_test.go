//go:build unix

package projector

import (
	"context"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"kanade-backend/storage"
	"kanade-backend/storage/storagetest"
)

// The results statements are prepared when the projector starts, with the
// very text a full chunk runs: a broadcast's first full batch finds every
// chunk prepared, compiles none and leaves nothing to prepare after it.
func TestFirstFullResultsBatchRunsPrepared(t *testing.T) {
	ctx := context.Background()
	st := storagetest.Open(t)
	c := newStmtCache(st.W)
	t.Cleanup(c.close)
	if err := c.warm(ctx, hotResultsSQL(st.W)...); err != nil {
		t.Fatal(err)
	}
	if len(c.ready) != 2 {
		t.Fatalf("%d statements prepared at start, want the results insert and the answers update", len(c.ready))
	}

	const n = 4 * chunkRows
	seedBroadcast(t, st, "exec-1", "req-1", n)
	now := time.Now().UTC()
	batch := make([]envelope[resultItem], n)
	for i := range batch {
		batch[i] = envelope[resultItem]{seq: uint64(i + 1), subject: "results.req-1",
			item: resultItem{RequestID: "req-1", PcID: benchPC(i), Stdout: "ok\n", StartedAt: now, FinishedAt: now}}
	}
	err := st.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		var out outcome
		return resultsCodec{stmts: c}.apply(ctx, tx, now, batch, &out)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.want) != 0 {
		t.Fatalf("the batch ran %d full-chunk statement(s) that were not prepared at start", len(c.want))
	}
	if ex := execRow(t, st, "exec-1"); ex.SuccessCount != n || ex.Status != storage.ExecCompleted {
		t.Fatalf("exec %s with %d successes, want completed with %d", ex.Status, ex.SuccessCount, n)
	}
}
