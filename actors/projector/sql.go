package projector

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/uptrace/bun"

	"kanade-backend/storage"
)

// The SQL below sticks to what SQLite and Postgres share (ON CONFLICT, row
// values, RETURNING, CASE instead of MAX/GREATEST). The hot multi-row
// inserts bypass bun's query formatter and hand their arguments to the
// driver: bun would render every value into the SQL text, which measured
// about 40 % slower for 500-row batches of results. Their placeholders
// are therefore the driver's own: "?" on SQLite, "$1, $2, …" on
// PostgreSQL (storage.DriverSQL).

// chunkRows bounds the rows of one multi-row statement: SQLite accepts
// 32 766 parameters, and 500 rows × 11 columns stays far below that
// (PostgreSQL accepts 65 535).
const chunkRows = 500

// saveCheckpoint records seq as the projection's last applied stream
// sequence, in the transaction of the rows it produced. It never moves
// backwards: a batch of redelivered (naked earlier) messages may carry
// lower sequences than one already applied.
func saveCheckpoint(ctx context.Context, tx bun.IDB, projection, stream string, seq uint64, now time.Time) error {
	cp := storage.Checkpoint{Projection: projection, Stream: stream, LastSeq: seq, UpdatedAt: storage.T(now)}
	_, err := tx.NewInsert().Model(&cp).
		On("CONFLICT (projection) DO UPDATE").
		Set("stream = EXCLUDED.stream").
		Set("last_seq = CASE WHEN EXCLUDED.last_seq > checkpoint.last_seq THEN EXCLUDED.last_seq ELSE checkpoint.last_seq END").
		Set("updated_at = EXCLUDED.updated_at").
		Exec(ctx)
	if err != nil {
		return fmt.Errorf("save checkpoint %s seq %d: %w", projection, seq, err)
	}
	return nil
}

// loadCheckpoint returns the projection's checkpoint, 0 when it has none.
func loadCheckpoint(ctx context.Context, db bun.IDB, projection string) (uint64, error) {
	var seq uint64
	err := db.NewSelect().Model((*storage.Checkpoint)(nil)).Column("last_seq").
		Where("projection = ?", projection).Scan(ctx, &seq)
	if err == sql.ErrNoRows {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("load checkpoint %s: %w", projection, err)
	}
	return seq, nil
}

// recordErrors inserts projection errors. A stream message already
// recorded (same projection, stream and sequence: a replay) is skipped.
func recordErrors(ctx context.Context, tx bun.IDB, errs []storage.ProjectionError) error {
	if len(errs) == 0 {
		return nil
	}
	_, err := tx.NewInsert().Model(&errs).
		On("CONFLICT (projection, stream, stream_seq) WHERE stream_seq > 0 DO NOTHING").
		Exec(ctx)
	if err != nil {
		return fmt.Errorf("record %d projection errors: %w", len(errs), err)
	}
	return nil
}

// tableEmpty reports whether table has no rows.
func tableEmpty(ctx context.Context, db bun.IDB, table string) (bool, error) {
	exists, err := db.NewSelect().TableExpr(table).ColumnExpr("1").Exists(ctx)
	if err != nil {
		return false, fmt.Errorf("probe %s: %w", table, err)
	}
	return !exists, nil
}

// chunks calls fn for consecutive slices of at most n elements of s.
func chunks[T any](s []T, n int, fn func([]T) error) error {
	for len(s) > 0 {
		k := min(n, len(s))
		if err := fn(s[:k]); err != nil {
			return err
		}
		s = s[k:]
	}
	return nil
}

// nullable returns nil for "" so that optional text columns hold NULL.
func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}
