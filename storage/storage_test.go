package storage_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"kanade-backend/storage"
	"kanade-backend/storage/storagetest"
)

func TestOpenVerifiesPragmasAndMigrates(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sub", "backend.db")
	s := storagetest.OpenAt(t, path)

	var mode string
	if err := s.R.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" {
		t.Fatalf("journal_mode = %q, want wal", mode)
	}
	for _, table := range []string{"agents", "execution_results", "executions", "exec_requests",
		"exec_expected", "exec_waves", "inventory_facts", "audit_log", "projection_errors",
		"projection_checkpoints", "agent_group_members", "jobs", "schedules"} {
		var n int
		err := s.R.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_master WHERE type='table' AND name=?", table).Scan(&n)
		if err != nil || n != 1 {
			t.Errorf("table %s: n=%d err=%v", table, n, err)
		}
	}
}

func TestReopenIsIdempotent(t *testing.T) {
	storagetest.RunDialects(t, func(t *testing.T, d storagetest.Dialect) {
		opts := storage.Options{URL: d.URL(t), Path: filepath.Join(t.TempDir(), "backend.db")}
		testReopen(t, opts, func() *storage.Store {
			if opts.URL != "" {
				return storagetest.OpenURL(t, opts.URL)
			}
			return storagetest.OpenAt(t, opts.Path)
		})
	})
}

func testReopen(t *testing.T, opts storage.Options, reopen func() *storage.Store) {
	ctx := context.Background()
	s1, err := storage.Open(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s1.W.NewInsert().Model(&storage.Agent{PcID: "pc1", AgentVersion: "1",
		LastHeartbeat: storage.T(time.Now()), UpdatedAt: storage.T(time.Now())}).Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := reopen()
	n, err := s2.R.NewSelect().Model((*storage.Agent)(nil)).Count(ctx)
	if err != nil || n != 1 {
		t.Fatalf("after reopen: n=%d err=%v", n, err)
	}
}

func TestReadPoolRejectsWrites(t *testing.T) {
	storagetest.ForEachDialect(t, func(t *testing.T, s *storage.Store) {
		_, err := s.R.ExecContext(context.Background(), "DELETE FROM agents")
		if err == nil {
			t.Fatal("write through the read pool succeeded; want a read-only error")
		}
		err = s.R.RunInTx(context.Background(), nil, func(ctx context.Context, tx bun.Tx) error {
			_, err := tx.NewInsert().Model(&storage.Agent{PcID: "x", AgentVersion: "1",
				LastHeartbeat: storage.T(time.Now()), UpdatedAt: storage.T(time.Now())}).Exec(ctx)
			return err
		})
		if err == nil {
			t.Fatal("insert in a read-pool transaction succeeded; want a read-only error")
		}
	})
}

// A DSN whose parameters are not applied must not slip through: the store
// refuses to start instead of running without WAL or a busy timeout.
func TestOpenRefusesWhenPragmasAreNotInEffect(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.db")
	db, err := sql.Open("sqlite", "file:"+path+"?_journal_mode=DELETE")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = storage.VerifyPragmasForTest(context.Background(), db)
	if err == nil || !strings.Contains(err.Error(), "refusing to start") {
		t.Fatalf("err = %v, want refusal", err)
	}
}

func TestTimeColumnsSortAndRoundTrip(t *testing.T) {
	storagetest.ForEachDialect(t, testTimeColumns)
}

func testTimeColumns(t *testing.T, s *storage.Store) {
	ctx := context.Background()
	base := time.Date(2026, 5, 20, 3, 0, 0, 0, time.UTC)
	// Fractions of different lengths are where variable-width text sorts
	// wrongly; the fixed-width layout must order them correctly.
	times := []time.Time{
		base.Add(120 * time.Millisecond),
		base.Add(9 * time.Second),
		base.Add(1),
		base.In(time.FixedZone("JST", 9*3600)).Add(10 * time.Second),
	}
	for i, tm := range times {
		a := &storage.Agent{PcID: string(rune('a' + i)), AgentVersion: "1",
			LastHeartbeat: storage.T(tm), UpdatedAt: storage.T(tm)}
		if _, err := s.W.NewInsert().Model(a).Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var got []storage.Agent
	if err := s.R.NewSelect().Model(&got).Order("last_heartbeat").Scan(ctx); err != nil {
		t.Fatal(err)
	}
	wantOrder := "cabd"
	var order strings.Builder
	for _, a := range got {
		order.WriteString(a.PcID)
	}
	if order.String() != wantOrder {
		t.Fatalf("order = %s, want %s", order.String(), wantOrder)
	}
	if !got[3].LastHeartbeat.Equal(times[3]) || got[3].LastHeartbeat.Location() != time.UTC {
		t.Fatalf("round trip: got %v want %v in UTC", got[3].LastHeartbeat, times[3])
	}
	var n int
	err := s.R.NewSelect().Model((*storage.Agent)(nil)).ColumnExpr("count(*)").
		Where("last_heartbeat > ?", storage.T(base.Add(time.Second))).Scan(ctx, &n)
	if err != nil || n != 2 {
		t.Fatalf("range filter n=%d err=%v, want 2", n, err)
	}
}

func TestInTxRollsBackOnError(t *testing.T) {
	storagetest.ForEachDialect(t, testInTxRollsBack)
}

func testInTxRollsBack(t *testing.T, s *storage.Store) {
	ctx := context.Background()
	boom := errors.New("boom")
	err := s.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.NewInsert().Model(&storage.Agent{PcID: "x", AgentVersion: "1",
			LastHeartbeat: storage.T(time.Now()), UpdatedAt: storage.T(time.Now())}).Exec(ctx); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	n, _ := s.R.NewSelect().Model((*storage.Agent)(nil)).Count(ctx)
	if n != 0 {
		t.Fatalf("rolled back insert is visible: n=%d", n)
	}
}

func TestZeroTimeIsNull(t *testing.T) {
	storagetest.ForEachDialect(t, func(t *testing.T, s *storage.Store) {
		_, err := s.W.NewInsert().Model(&storage.Agent{PcID: "x", AgentVersion: "1"}).Exec(context.Background())
		// SQLite: "NOT NULL constraint failed"; PostgreSQL: "violates
		// not-null constraint".
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), "not") ||
			!strings.Contains(strings.ToLower(err.Error()), "null constraint") {
			t.Fatalf("err = %v, want a NOT NULL constraint error", err)
		}
	})
}

// A database on a read-only mount is refused at open with one error that
// names the file and says why, instead of opening for reads and failing
// every write afterwards.
func TestOpenRefusesReadOnlyDatabase(t *testing.T) {
	dir := storagetest.SmallDisk(t, 8<<20)
	path := filepath.Join(dir, "backend.db")
	s, err := storage.Open(context.Background(), storage.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	storagetest.ReadOnly(t, dir)
	_, err = storage.Open(context.Background(), storage.Options{Path: path})
	if err == nil {
		t.Fatal("opened a database on a read-only mount")
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "read-only file system") ||
		!errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("error = %v, want the path and the cause", err)
	}
	t.Logf("refused: %v", err)
}

// A full disk under the database: writes fail marked ErrUnavailable with
// the cause, reads go on, and once space is freed writes succeed again on
// the same store.
func TestFullDiskIsUnavailableNotFatal(t *testing.T) {
	ctx := context.Background()
	dir := storagetest.SmallDisk(t, 8<<20)
	s := storagetest.OpenAt(t, filepath.Join(dir, "backend.db"))
	free := storagetest.Fill(t, dir)
	insert := func(i int) error { return insertBigResult(s, i) }
	var err error
	for i := 0; i < 200 && err == nil; i++ {
		err = insert(i)
	}
	if err == nil {
		t.Fatal("200 inserts of 64 KiB fit on a full 8 MiB disk")
	}
	if !errors.Is(err, storage.ErrUnavailable) || storage.Cause(err) != storage.CauseDiskFull ||
		err.Error() != "storage unavailable: database or disk is full" {
		t.Fatalf("err = %v (cause %q), want storage unavailable: database or disk is full", err, storage.Cause(err))
	}
	if _, err := s.R.NewSelect().TableExpr("execution_results").Count(ctx); err != nil {
		t.Fatalf("reads fail on a full disk: %v", err)
	}
	free()
	if err := insert(1000); err != nil {
		t.Fatalf("after freeing space: %v", err)
	}
}

func TestCauseIgnoresTheStatementsOwnErrors(t *testing.T) {
	ctx := context.Background()
	s := storagetest.Open(t)
	err := s.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO agents (pc_id) VALUES (NULL)`)
		return err
	})
	if err == nil || storage.Cause(err) != "" || errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("a constraint error was classified as unavailable: %v", err)
	}
	err = s.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.ExecContext(ctx, `SELECT * FROM no_such_table`)
		return err
	})
	if err == nil || storage.Cause(err) != "" {
		t.Fatalf("a SQL error was classified as unavailable: %v", err)
	}
}

// insertBigResult writes result i with 64 KiB of output, in a transaction
// of its own: what fills a small disk quickly.
func insertBigResult(s *storage.Store, i int) error {
	big := strings.Repeat("x", 64<<10)
	return s.InTx(context.Background(), func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO execution_results (request_id, pc_id, exit_code, stdout, stderr,
			started_at, finished_at, recorded_at, stream_seq) VALUES (?, 'pc', 0, ?, '', ?, ?, ?, ?)`,
			fmt.Sprintf("req-%d", i), big, storage.T(time.Now()), storage.T(time.Now()), storage.T(time.Now()), i+1)
		return err
	})
}
