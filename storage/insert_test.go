package storage_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"kanade-backend/storage"
	"kanade-backend/storage/storagetest"
)

// InsertChunked splits large writes into statements and, asked to, skips
// rows whose key exists; CountUpTo stops counting at its cap. Both are
// shared by the exec engine and every paged list, on either database.
func TestInsertChunkedAndCountUpTo(t *testing.T) {
	storagetest.ForEachDialect(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		now := storage.T(time.Date(2026, 5, 20, 12, 0, 0, 0, time.UTC))
		rows := make([]storage.Agent, 2500)
		for i := range rows {
			rows[i] = storage.Agent{PcID: fmt.Sprintf("pc-%04d", i), AgentVersion: "1", LastHeartbeat: now, UpdatedAt: now}
		}
		if err := storage.InsertChunked(ctx, s.W, rows[:1200], false); err != nil {
			t.Fatal(err)
		}
		if err := storage.InsertChunked(ctx, s.W, rows[:1200], false); err == nil {
			t.Fatal("duplicate keys inserted without ignoreConflicts")
		}
		if err := storage.InsertChunked(ctx, s.W, rows, true); err != nil {
			t.Fatal(err)
		}
		q := func() *bun.SelectQuery {
			return s.R.NewSelect().TableExpr("agents").ColumnExpr("1").Where("pc_id >= ?", "pc-1000").OrderExpr("pc_id")
		}
		for _, c := range []struct {
			limit  int
			n      int
			capped bool
		}{{100, 100, true}, {1499, 1499, true}, {1500, 1500, false}, {5000, 1500, false}} {
			n, capped, err := storage.CountUpTo(ctx, s.R, q(), c.limit)
			if err != nil || n != c.n || capped != c.capped {
				t.Errorf("CountUpTo(limit %d) = %d, %v, %v; want %d, %v", c.limit, n, capped, err, c.n, c.capped)
			}
		}
	})
}
