package storage

import (
	"context"
	"fmt"

	"github.com/uptrace/bun"
)

// CountUpTo counts the rows q selects but stops after limit+1 of them, so
// the cost is bounded by limit whatever the table size; capped reports that
// there are more than limit (n is then limit). q should select a constant
// ("1") with the same WHERE and ORDER BY as the page it counts for: the
// ORDER BY steers SQLite to the index the page itself walks, which holds
// every filter column, instead of another covering index that would have
// to be scanned far longer to find the same rows.
func CountUpTo(ctx context.Context, db bun.IDB, q *bun.SelectQuery, limit int) (n int, capped bool, err error) {
	err = db.NewSelect().ColumnExpr("count(*)").TableExpr("(?) AS upto", q.Limit(int64(limit+1))).Scan(ctx, &n)
	if err != nil {
		return 0, false, fmt.Errorf("count rows: %w", err)
	}
	if n > limit {
		return limit, true, nil
	}
	return n, false, nil
}
