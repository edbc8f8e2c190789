package storage_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"kanade-backend/storage"
	"kanade-backend/storage/storagetest"
)

// InsertExpected writes an exec's expected PCs with driver arguments, in
// chunks (the last one partial), on either database: every PC gets an
// unanswered row, and a second write of the same keys fails rather than
// going unnoticed.
func TestInsertExpected(t *testing.T) {
	storagetest.ForEachDialect(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		now := storage.T(time.Date(2026, 5, 20, 12, 0, 0, 0, time.UTC))
		ex := storage.Execution{ExecID: "ex-1", JobID: "job", Version: "1", InitiatedBy: "operator:test",
			Plan: json.RawMessage(`{}`), Subjects: json.RawMessage(`["commands.all"]`), TargetCount: 1,
			ExpectedPcs: 4500, Status: storage.ExecPending, TimeoutSecs: 60, CreatedAt: now, DeadlineAt: now, UpdatedAt: now}
		rows := make([]storage.ExecExpected, 4500)
		for i := range rows {
			rows[i] = storage.ExecExpected{ExecID: ex.ExecID, PcID: fmt.Sprintf("pc-%05d", i)}
		}
		err := s.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
			if _, err := tx.NewInsert().Model(&ex).Exec(ctx); err != nil {
				return err
			}
			return storage.InsertExpected(ctx, tx, rows)
		})
		if err != nil {
			t.Fatal(err)
		}
		var got []storage.ExecExpected
		if err := s.R.NewSelect().Model(&got).Where("exec_id = ?", ex.ExecID).Order("pc_id").Scan(ctx); err != nil {
			t.Fatal(err)
		}
		if len(got) != len(rows) {
			t.Fatalf("%d rows, want %d", len(got), len(rows))
		}
		for i, r := range got {
			if r.PcID != rows[i].PcID || r.RequestID != nil || r.ExitCode != nil || !r.AnsweredAt.IsZero() {
				t.Fatalf("row %d: %+v, want %s unanswered", i, r, rows[i].PcID)
			}
		}
		err = s.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
			return storage.InsertExpected(ctx, tx, rows[4400:])
		})
		if err == nil || !storage.IsConstraint(err) {
			t.Fatalf("second write of the same keys: %v, want a constraint error", err)
		}
	})
}
