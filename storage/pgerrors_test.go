package storage_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/uptrace/bun"

	"kanade-backend/storage"
	"kanade-backend/storage/pgtest"
	"kanade-backend/storage/storagetest"
)

// The PostgreSQL twin of TestFullDiskIsUnavailableNotFatal: a table on a
// real full filesystem (a tablespace on a small tmpfs) makes writes fail
// marked ErrUnavailable with the server's reason, reads go on, and the
// same store writes again once the table has room.
func TestPostgresFullDiskIsUnavailableNotFatal(t *testing.T) {
	ctx := context.Background()
	dir := storagetest.SmallDisk(t, 2<<20)
	ts := pgtest.Tablespace(t, dir)
	s := storagetest.OpenPostgres(t)
	// EXTERNAL: stored out of line but not compressed, so each row takes
	// its full size on the disk.
	for _, q := range []string{
		"ALTER TABLE execution_results ALTER COLUMN stdout SET STORAGE EXTERNAL",
		"ALTER TABLE execution_results SET TABLESPACE " + ts,
	} {
		if _, err := s.W.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	insert := func(i int) error { return insertBigResult(s, i) }
	var err error
	for i := 0; i < 200 && err == nil; i++ {
		err = insert(i)
	}
	if err == nil {
		t.Fatal("200 rows of 64 KiB fit in a 2 MiB tablespace")
	}
	if !errors.Is(err, storage.ErrUnavailable) || storage.Cause(err) != storage.CauseDiskFull ||
		!strings.Contains(err.Error(), "No space left on device") {
		t.Fatalf("err = %v (cause %q), want storage unavailable: … No space left on device", err, storage.Cause(err))
	}
	if _, err := s.R.NewSelect().TableExpr("execution_results").Count(ctx); err != nil {
		t.Fatalf("reads fail on a full disk: %v", err)
	}
	if _, err := s.W.ExecContext(ctx, "ALTER TABLE execution_results SET TABLESPACE pg_default"); err != nil {
		t.Fatal(err)
	}
	if err := insert(1000); err != nil {
		t.Fatalf("after making room: %v", err)
	}
}

// A database that turned read-only (a standby after a failover, or set
// read-only by its administrator) fails writes as unavailable, and a
// backend starting on it refuses with the cause.
func TestPostgresReadOnlyDatabaseIsUnavailable(t *testing.T) {
	ctx := context.Background()
	u := pgtest.URL(t)
	s := storagetest.OpenURL(t, u)
	db := dbName(t, u)
	if _, err := s.W.ExecContext(ctx, "ALTER DATABASE "+db+" SET default_transaction_read_only = on"); err != nil {
		t.Fatal(err)
	}
	// The setting reaches new sessions: end the store's current ones. Each
	// of those fails its next transaction as a lost connection (the pool
	// learns of the end only then) and is replaced by a new session.
	terminateOthers(t, s)
	var err error
	for i := 0; i < 20; i++ {
		err = s.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
			_, err := tx.NewInsert().Model(agent("pc1")).Exec(ctx)
			return err
		})
		if storage.Cause(err) != storage.CauseConnection {
			break
		}
	}
	if !errors.Is(err, storage.ErrUnavailable) || storage.Cause(err) != storage.CauseReadOnly ||
		!strings.Contains(err.Error(), "read-only transaction") {
		t.Fatalf("err = %v (cause %q), want storage unavailable: read-only", err, storage.Cause(err))
	}
	_, err = storage.Open(ctx, storage.Options{URL: u})
	if !errors.Is(err, storage.ErrUnavailable) || storage.Cause(err) != storage.CauseReadOnly || !strings.Contains(err.Error(), db) {
		t.Fatalf("open: err = %v (cause %q), want the database named and read-only", err, storage.Cause(err))
	}
}

// A session the server ends mid-statement (an administrator, a shutdown)
// fails that transaction as unavailable, not as the statement's fault; the
// pool opens a new session for the next one.
func TestPostgresLostConnectionIsUnavailable(t *testing.T) {
	ctx := context.Background()
	s := storagetest.OpenPostgres(t)
	done := make(chan error, 1)
	go func() {
		done <- s.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
			_, err := tx.ExecContext(ctx, "SELECT pg_sleep(30) /* victim */")
			return err
		})
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		err := s.W.QueryRowContext(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE query LIKE '%/* victim */%' AND pid <> pg_backend_pid()`).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the victim's statement never showed up")
		}
		time.Sleep(10 * time.Millisecond)
	}
	err := <-done
	if !errors.Is(err, storage.ErrUnavailable) || storage.Cause(err) != storage.CauseConnection {
		t.Fatalf("err = %v (cause %q), want storage unavailable: connection lost", err, storage.Cause(err))
	}
	t.Logf("terminated: %v", err)
	if err := s.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.NewInsert().Model(agent("pc1")).Exec(ctx)
		return err
	}); err != nil {
		t.Fatalf("the next transaction: %v", err)
	}
}

// No server at the URL: the backend refuses to start, and says it could
// not connect, marked unavailable (not a configuration error of the URL).
func TestPostgresUnreachableIsUnavailable(t *testing.T) {
	u := "postgres://kanade@/kanade?host=" + url.QueryEscape(t.TempDir()) + "&port=5432&sslmode=disable&connect_timeout=5"
	_, err := storage.Open(context.Background(), storage.Options{URL: u})
	if !errors.Is(err, storage.ErrUnavailable) || storage.Cause(err) != storage.CauseConnection ||
		!strings.Contains(err.Error(), "no connection to the database server") {
		t.Fatalf("err = %v (cause %q), want storage unavailable: no connection", err, storage.Cause(err))
	}
	t.Logf("refused: %v", err)
}

// The SQLSTATEs that the tests above cannot provoke on a test server
// (memory, a crash, corruption) map by their documented codes; the
// statement's own errors never do.
func TestPostgresCauseBySQLState(t *testing.T) {
	for code, want := range map[string]string{
		"53100": storage.CauseDiskFull,
		"25006": storage.CauseReadOnly,
		"53200": storage.CauseOutOfMemory,
		"57P01": storage.CauseConnection,
		"57P02": storage.CauseConnection,
		"08006": storage.CauseConnection,
		"08P01": storage.CauseConnection,
		"53300": storage.CauseBusy,
		"58030": storage.CauseIO,
		"XX001": storage.CauseIO,
		"23505": "", // unique_violation
		"42601": "", // syntax_error
		"22P02": "", // invalid_text_representation
		"40001": "", // serialization_failure: InTx reruns it
	} {
		err := fmt.Errorf("insert: %w", &pgconn.PgError{Severity: "ERROR", Code: code, Message: "m"})
		if got := storage.Cause(err); got != want {
			t.Errorf("Cause(SQLSTATE %s) = %q, want %q", code, got, want)
		}
		if want != "" && (storage.Reason(err) != "m" || !errors.Is(storage.Unavailable(err), storage.ErrUnavailable)) {
			t.Errorf("SQLSTATE %s: Reason = %q, Unavailable = %v", code, storage.Reason(err), storage.Unavailable(err))
		}
	}
	// A caller's cancellation is not the database's fault.
	if c := storage.Cause(fmt.Errorf("query: %w", context.Canceled)); c != "" {
		t.Errorf("Cause(context.Canceled) = %q", c)
	}
}

// The statement's own errors on PostgreSQL are not the environment's.
func TestPostgresCauseIgnoresTheStatementsOwnErrors(t *testing.T) {
	ctx := context.Background()
	s := storagetest.OpenPostgres(t)
	for _, q := range []string{"INSERT INTO agents (pc_id) VALUES (NULL)", "SELECT * FROM no_such_table"} {
		err := s.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
			_, err := tx.ExecContext(ctx, q)
			return err
		})
		if err == nil || storage.Cause(err) != "" || errors.Is(err, storage.ErrUnavailable) {
			t.Fatalf("%s: classified as unavailable: %v", q, err)
		}
	}
}

// dbName is the database of a pgtest URL.
func dbName(t *testing.T, u string) string {
	t.Helper()
	p, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(p.Path, "/")
}

// terminateOthers ends every other session of s's database.
func terminateOthers(t *testing.T, s *storage.Store) {
	t.Helper()
	if _, err := s.R.ExecContext(context.Background(), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid()`); err != nil {
		t.Fatal(err)
	}
}
