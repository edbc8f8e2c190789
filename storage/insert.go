package storage

import (
	"context"
	"fmt"

	"github.com/uptrace/bun"
)

// insertChunk bounds the rows of one INSERT statement, so that a 10 000-row
// write is a handful of statements in one transaction rather than one
// statement of several megabytes.
const insertChunk = 1000

// InsertChunked inserts rows (models of one table) in statements of at most
// a thousand rows. With ignoreConflicts a row whose key exists is skipped.
func InsertChunked[T any](ctx context.Context, db bun.IDB, rows []T, ignoreConflicts bool) error {
	for i := 0; i < len(rows); i += insertChunk {
		chunk := rows[i:min(i+insertChunk, len(rows))]
		// Returning("NULL") drops the RETURNING clause bun adds for nil
		// pointer columns (to read back defaults none of them have): it
		// turned each insert into a query whose rows were scanned back
		// into the models, a third of the cost of a 10 000-row insert.
		q := db.NewInsert().Model(&chunk).Returning("NULL")
		if ignoreConflicts {
			q = q.On("CONFLICT DO NOTHING")
		}
		if _, err := q.Exec(ctx); err != nil {
			return fmt.Errorf("insert %d rows: %w", len(chunk), err)
		}
	}
	return nil
}
