package projector

import (
	"context"
	"database/sql"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/uptrace/bun"

	"kanade-backend/messages"
	"kanade-backend/storage"
	"kanade-backend/storage/storagetest"
)

// explain returns the plan of query (with driver arguments) on st's
// database, one line per plan row.
func explain(t *testing.T, st *storage.Store, query string, args ...any) string {
	t.Helper()
	rows, err := st.R.DB.QueryContext(context.Background(), "EXPLAIN "+map[bool]string{true: "", false: "QUERY PLAN "}[st.IsPostgres()]+query, args...)
	if err != nil {
		t.Fatalf("explain %.200s: %v", query, err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var lines []string
	for rows.Next() {
		vals := make([]any, len(cols))
		for i := range vals {
			vals[i] = new(sql.RawBytes)
		}
		if err := rows.Scan(vals...); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, string(*vals[len(vals)-1].(*sql.RawBytes))) // the detail column
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(lines, "\n")
}

// fullScan matches a plan line that reads the whole of exec_expected
// (SQLite "SCAN", PostgreSQL "Seq Scan on"); the other tables of the test
// hold a few rows, where PostgreSQL rightly prefers a sequential scan.
var fullScan = regexp.MustCompile(`(?m)(^|\s)(SCAN|Seq Scan on) exec_expected\b`)

// wavesByState matches SQLite reading exec_waves through its (state,
// due_at) index: every pending wave of every exec, not the exec's own.
var wavesByState = regexp.MustCompile(`SEARCH w USING INDEX exec_waves_due`)

// The statements a batch of results runs find their rows by key when the
// exec expects 100 000 PCs: no plan reads a whole table (PostgreSQL with
// the statistics of that size, SQLite without statistics, as it runs).
// The one read over an exec's expected PCs, countExpected, reads that
// exec's rows only, through the primary key, and runs once per exec.
func TestProgressQueryPlansAt100kExpected(t *testing.T) {
	storagetest.ForEachDialect(t, func(t *testing.T, st *storage.Store) {
		ctx := context.Background()
		insertExec(t, st, execFixture{id: "big", requests: map[string]string{"req": messages.SubjectCommandsAll}})
		insertExec(t, st, execFixture{id: "other", requests: map[string]string{"req-o": messages.SubjectCommandsAll}})
		const n = 100_000
		err := st.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
			for _, id := range []string{"big", "other"} {
				if _, err := tx.NewRaw(`INSERT INTO exec_expected (exec_id, pc_id)
					WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < ?)
					SELECT ?, 'pc-' || CAST(i AS TEXT) FROM s`, n, id).Exec(ctx); err != nil {
					return err
				}
			}
			_, err := tx.NewUpdate().Model((*storage.Execution)(nil)).Set("expected_pcs = ?", n).Where("TRUE").Exec(ctx)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if st.IsPostgres() {
			if err := st.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
				_, err := tx.ExecContext(ctx, "ANALYZE")
				return err
			}); err != nil {
				t.Fatal(err)
			}
		}

		var part []answerRow
		var batch []envelope[resultItem]
		for i := range answerChunk {
			r := resultItem{RequestID: "req", PcID: fmt.Sprintf("pc-%d", i*97+1), StartedAt: t0, FinishedAt: t0}
			part = append(part, answerRow{execID: "big", r: r})
			batch = append(batch, envelope[resultItem]{seq: uint64(i + 1), item: r})
		}
		err = st.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
			plans := map[string]string{}
			q := answersSQL(tx, "big", part)
			plans["record answers"] = explain(t, st, q.String(), q.Args...)
			ids := storage.NewDriverSQL(tx, 1)
			ids.WriteString("SELECT request_id, exec_id, subject FROM exec_requests WHERE request_id IN (")
			ids.List([]string{"req", "req-o"})
			ids.WriteByte(')')
			plans["attribute"] = explain(t, st, ids.String(), ids.Args...)
			plans["settle"] = explain(t, st, settleQuery(tx, new(execState), "big").String())
			for what, plan := range plans {
				t.Logf("%s:\n%s", what, plan)
				if fullScan.MatchString(plan) || wavesByState.MatchString(plan) {
					t.Errorf("%s reads more than its rows at %d expected PCs:\n%s", what, n, plan)
				}
			}
			// countExpected reads the exec's own rows (half the table here:
			// PostgreSQL may scan it all) once per exec, when its counters
			// say it may be done; on SQLite it must use the primary key.
			plan := explain(t, st, countExpectedQuery(tx, "big").String())
			t.Logf("count expected:\n%s", plan)
			if !st.IsPostgres() && fullScan.MatchString(plan) {
				t.Errorf("count expected reads every exec's expected PCs:\n%s", plan)
			}
			// The real statements, on the real sizes: the batch is stored and
			// counted, and the exec is still running.
			var out outcome
			if err := (resultsCodec{}).apply(ctx, tx, t0, batch, &out); err != nil {
				return err
			}
			var ex storage.Execution
			if err := tx.NewSelect().Model(&ex).Where("exec_id = ?", "big").Scan(ctx); err != nil {
				return err
			}
			if ex.SuccessCount != answerChunk || ex.Status != storage.ExecRunning {
				return fmt.Errorf("exec after one batch: %s, %d successes; want running, %d", ex.Status, ex.SuccessCount, answerChunk)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}
