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

// expectedChunk bounds the rows of one exec_expected INSERT: two arguments
// a row, far below SQLite's 32 766 and PostgreSQL's 65 535.
const expectedChunk = 2000

// InsertExpected writes the exec_expected rows of execs being recorded
// (unanswered: only exec_id and pc_id). An exec to every agent writes one
// row per agent, and bun's insert, which renders every value into the SQL
// text, took 0.41 CPU-s for 100 000 of them out of the exec API's 1 s
// budget; here the values go to the driver as arguments, with the
// dialect's own placeholders ("?" on SQLite, "$n" on PostgreSQL).
func InsertExpected(ctx context.Context, tx bun.Tx, rows []ExecExpected) error {
	for i := 0; i < len(rows); i += expectedChunk {
		chunk := rows[i:min(i+expectedChunk, len(rows))]
		q := NewDriverSQL(tx, 2*len(chunk))
		q.WriteString("INSERT INTO exec_expected (exec_id, pc_id) VALUES ")
		for j, r := range chunk {
			if j > 0 {
				q.WriteByte(',')
			}
			q.Tuple(r.ExecID, r.PcID)
		}
		if _, err := tx.Tx.ExecContext(ctx, q.String(), q.Args...); err != nil {
			return fmt.Errorf("insert %d expected PCs: %w", len(chunk), err)
		}
	}
	return nil
}
