// Package storage is the SQL read model that projectors write and HTTP
// handlers read: a Bun store over SQLite (pure-Go modernc driver, the
// zero-setup default) or PostgreSQL (pgx through database/sql, chosen by a
// postgres:// URL). JetStream is the source of truth; everything here can
// be rebuilt from the streams and KV buckets (behaviour.md §1).
//
// On SQLite the Store has one writer connection, because SQLite allows one
// writer at a time and a pool of writers would only queue on the file lock,
// and a separate read pool so that API queries never wait behind a
// projection batch (WAL lets readers run beside the writer). PostgreSQL has
// no single-writer rule: both are pools there, and the read pool's sessions
// are read-only as SQLite's are.
//
// The schema is one set of migrations for both (package migrations); code
// writes portable SQL through Bun, whose placeholders it formats for either
// dialect, and asks Store.Dialect only where the SQL must differ.
package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"
	"github.com/uptrace/bun/dialect/sqlitedialect"
	"github.com/uptrace/bun/migrate"
	sqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"kanade-backend/actors/clock"
	"kanade-backend/storage/migrations"
)

// BusyTimeout is how long SQLite waits for a lock before reporting
// SQLITE_BUSY.
const BusyTimeout = 5 * time.Second

// Options configure Open.
type Options struct {
	// Path of the SQLite database file; its directory is created if
	// missing. Ignored when URL is set.
	Path string
	// URL selects PostgreSQL (postgres://user:password@host:5432/db?…);
	// empty means SQLite at Path.
	URL string
	// ReadConns is the size of the read pool (default 4 on SQLite, 10 on
	// PostgreSQL).
	ReadConns int
	// WriteConns is the size of the write pool on PostgreSQL (default 10).
	// SQLite always has exactly one writer connection.
	WriteConns int
	// Logger receives migration and shutdown messages.
	Logger *slog.Logger
}

// Store is the shared Bun store.
type Store struct {
	// W is the write pool: a single connection on SQLite, a pool on
	// PostgreSQL. Use InTx for writes.
	W *bun.DB
	// R is the read pool; its connections are read-only (query_only on
	// SQLite, default_transaction_read_only on PostgreSQL), so a write sent
	// here by mistake fails loudly on both instead of contending with the
	// writer.
	R *bun.DB

	dialect  dialect.Name
	path     string
	location string
	logger   *slog.Logger
}

// Dialect is the database the store runs on (dialect.SQLite or
// dialect.PG). Use it only where the SQL must differ; queries written with
// Bun's builder and portable SQL need not ask.
func (s *Store) Dialect() dialect.Name { return s.dialect }

// IsPostgres reports whether the store runs on PostgreSQL.
func (s *Store) IsPostgres() bool { return s.dialect == dialect.PG }

// IsPostgresURL reports whether u names a PostgreSQL database, the one
// kind of database URL Open accepts.
func IsPostgresURL(u string) bool {
	return strings.HasPrefix(u, "postgres://") || strings.HasPrefix(u, "postgresql://")
}

// writerCacheKiB is the page cache of the writer connection.
const writerCacheKiB = 32 << 10

// DSN returns the data source name for path. The parameters are the
// mattn-compatible shorthands that modernc.org/sqlite understands; Open reads
// the pragmas back because a misspelt parameter would otherwise be ignored
// silently (architecture.md §3).
func DSN(path string, readOnly bool) string {
	q := url.Values{}
	q.Set("_busy_timeout", fmt.Sprint(BusyTimeout.Milliseconds()))
	q.Set("_journal_mode", "WAL")
	q.Set("_synchronous", "NORMAL")
	q.Set("_foreign_keys", "1")
	if readOnly {
		q.Set("_query_only", "1")
	} else {
		// BEGIN IMMEDIATE takes the write lock up front, so a transaction never
		// fails half-way with SQLITE_BUSY when it upgrades from read to write.
		q.Set("_txlock", "immediate")
		// A multi-row statement that changes existing rows inside a
		// transaction (the heartbeat upsert: 500 agents a statement) copies
		// every page it touches into a statement journal, which SQLite
		// spills to a temporary file past 64 KiB: two pwrite calls per
		// page, 4.6 CPU-s of a 100 000-agent broadcast's heartbeats. In
		// memory it is a copy. The readers keep temp files for their
		// sorts.
		q.Add("_pragma", "temp_store(MEMORY)")
		// The writer's page cache outlives its transactions (no other
		// connection writes), and the 2 MiB default holds a fraction of
		// what a heartbeat flush or a results batch touches at 100 000
		// agents (the agents table, its indexes, the results' indexes):
		// every miss was a pread. 32 MiB is the bound, not a reservation.
		q.Add("_pragma", fmt.Sprintf("cache_size(%d)", -writerCacheKiB))
	}
	return "file:" + path + "?" + q.Encode()
}

// Open opens the database (PostgreSQL when opts.URL is set, else the
// SQLite file at opts.Path, created if needed), verifies its settings and
// runs pending migrations.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.URL != "" {
		return openPostgres(ctx, opts)
	}
	return openSQLite(ctx, opts)
}

func openSQLite(ctx context.Context, opts Options) (*Store, error) {
	if opts.Path == "" {
		return nil, errors.New("storage: database path is empty")
	}
	if opts.ReadConns <= 0 {
		opts.ReadConns = 4
	}
	if err := os.MkdirAll(filepath.Dir(opts.Path), 0o700); err != nil {
		return nil, fmt.Errorf("create database directory: %w", err)
	}

	wsql, err := sql.Open("sqlite", DSN(opts.Path, false))
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", opts.Path, err)
	}
	wsql.SetMaxOpenConns(1)
	wsql.SetMaxIdleConns(1)
	wsql.SetConnMaxLifetime(0)
	wsql.SetConnMaxIdleTime(0)
	s := &Store{W: bun.NewDB(wsql, sqlitedialect.New()), dialect: dialect.SQLite,
		path: opts.Path, location: opts.Path, logger: opts.Logger}

	// The writer goes first: it creates the file and switches it to WAL,
	// which the read-only connections could not do.
	if err := verifyPragmas(ctx, s.W, false); err != nil {
		_ = s.W.Close()
		return nil, openError(opts.Path, err)
	}
	// A database the process cannot write (a read-only file or mount, a
	// full disk) opens and answers reads; without this probe the backend
	// would report itself ready and then fail every write forever.
	if err := s.probeWrite(ctx); err != nil {
		_ = s.W.Close()
		return nil, openError(opts.Path, err)
	}

	rsql, err := sql.Open("sqlite", DSN(opts.Path, true))
	if err != nil {
		_ = s.W.Close()
		return nil, fmt.Errorf("open read pool %s: %w", opts.Path, err)
	}
	rsql.SetMaxOpenConns(opts.ReadConns)
	rsql.SetMaxIdleConns(opts.ReadConns)
	s.R = bun.NewDB(rsql, sqlitedialect.New())
	if err := verifyPragmas(ctx, s.R, true); err != nil {
		_ = s.Close()
		return nil, openError(opts.Path, err)
	}

	if err := s.migrate(ctx); err != nil {
		_ = s.Close()
		return nil, openError(opts.Path, err)
	}
	return s, nil
}

// openError names the database in err and, when the file cannot be
// written, says so first: "database /data/backend.db is not writable
// (read-only file system): storage unavailable: unable to open database
// file".
func openError(path string, err error) error {
	err = Unavailable(err)
	if why := writeAccess(path); why != "" {
		return fmt.Errorf("database %s is not writable%s: %w", path, why, err)
	}
	if Cause(err) != "" {
		return fmt.Errorf("database %s is not writable: %w", path, err)
	}
	return fmt.Errorf("database %s: %w", path, err)
}

// writeAccess explains why the file (or, for a new database, its
// directory) cannot be written, as " (<reason>)", or "" when it can: SQLite
// itself only says "unable to open database file" when a read-only mount
// keeps it from creating the WAL index.
func writeAccess(path string) string {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err == nil {
		_ = f.Close()
		return ""
	}
	var pe *os.PathError
	if errors.Is(err, os.ErrNotExist) || !errors.As(err, &pe) {
		return ""
	}
	return " (" + pe.Err.Error() + ")"
}

// probeWrite commits one real write: it rewrites the header's user_version
// with its own value, which SQLite writes to the WAL like any change
// (schema and data untouched), so that a file that cannot take a commit is
// found before anything else runs.
func (s *Store) probeWrite(ctx context.Context) error {
	return s.InTx(ctx, func(ctx context.Context, tx bun.Tx) error {
		var v int64
		if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", v))
		return err
	})
}

// verifyPragmas refuses to run when the DSN's settings are not in effect.
func verifyPragmas(ctx context.Context, db *bun.DB, readOnly bool) error {
	want := []struct {
		pragma string
		value  string
	}{
		{"journal_mode", "wal"},
		{"busy_timeout", fmt.Sprint(BusyTimeout.Milliseconds())},
		{"foreign_keys", "1"},
		{"synchronous", "1"}, // NORMAL
	}
	if readOnly {
		want = append(want, struct{ pragma, value string }{"query_only", "1"})
	} else {
		want = append(want, struct{ pragma, value string }{"temp_store", "2"}, // MEMORY
			struct{ pragma, value string }{"cache_size", fmt.Sprint(-writerCacheKiB)})
	}
	for _, w := range want {
		var got string
		if err := db.QueryRowContext(ctx, "PRAGMA "+w.pragma).Scan(&got); err != nil {
			return fmt.Errorf("read pragma %s: %w", w.pragma, err)
		}
		if !strings.EqualFold(got, w.value) {
			return fmt.Errorf("storage: pragma %s is %q, want %q: the SQLite DSN parameters were not applied; refusing to start", w.pragma, got, w.value)
		}
	}
	return nil
}

func (s *Store) migrate(ctx context.Context) error {
	ms, err := migrations.Migrations(s.dialect)
	if err != nil {
		return err
	}
	m := migrate.NewMigrator(s.W, ms, migrate.WithMarkAppliedOnSuccess(true))
	if err := m.Init(ctx); err != nil {
		return fmt.Errorf("init migrations table: %w", err)
	}
	group, err := m.Migrate(ctx)
	if err != nil {
		return fmt.Errorf("run migrations: %w", err)
	}
	if !group.IsZero() {
		s.logger.Info("database migrated", "database", s.location, "applied", group.Migrations.String())
	}
	return nil
}

// Path is the SQLite database file ("" on PostgreSQL).
func (s *Store) Path() string { return s.path }

// Location names the database for logs: the SQLite file, or the
// PostgreSQL URL without its password.
func (s *Store) Location() string { return s.location }

// Close closes both pools. On SQLite it first checkpoints the WAL into the
// main file, so the file left behind opens cleanly without a WAL replay.
func (s *Store) Close() error {
	var errs []error
	if s.R != nil {
		errs = append(errs, s.R.Close())
	}
	if s.W != nil {
		if s.dialect == dialect.SQLite {
			if _, err := s.W.Exec("PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
				errs = append(errs, fmt.Errorf("checkpoint WAL: %w", err))
			}
		}
		errs = append(errs, s.W.Close())
	}
	return errors.Join(errs...)
}

// InTx runs fn in one write transaction on the writer connection. The
// transaction is retried (up to 5 times, with a short backoff) when SQLite
// reports the database busy or locked, which can only happen when another
// process holds the file. A failure of the database's environment (full
// disk, read-only file, I/O error) comes back marked ErrUnavailable (see
// Unavailable); any other error is returned unchanged.
func (s *Store) InTx(ctx context.Context, fn func(ctx context.Context, tx bun.Tx) error) error {
	const attempts = 5
	backoff := clock.Backoff{Min: 20 * time.Millisecond, Max: time.Second}
	var err error
	for i := 0; i < attempts; i++ {
		err = s.W.RunInTx(ctx, nil, fn)
		if err == nil || !IsBusy(err) {
			return Unavailable(err)
		}
		if !backoff.Wait(ctx, clock.Real{}) {
			return errors.Join(Unavailable(err), ctx.Err())
		}
	}
	return fmt.Errorf("database still busy after %d attempts: %w", attempts, Unavailable(err))
}

// IsConstraint reports whether err is a constraint violation (a primary
// key or unique index refusing a row, a NOT NULL or foreign key failing):
// SQLITE_CONSTRAINT on SQLite, SQLSTATE class 23 on PostgreSQL.
func IsConstraint(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code()&0xff == sqlite3.SQLITE_CONSTRAINT
	}
	var pe *pgconn.PgError
	return errors.As(err, &pe) && strings.HasPrefix(pe.Code, "23")
}

// IsBusy reports whether err is SQLite's SQLITE_BUSY or SQLITE_LOCKED, or
// one of PostgreSQL's transient conflicts between concurrent writers
// (serialization_failure 40001, deadlock_detected 40P01): the errors that
// rerunning the whole transaction cures, which is what InTx does with them.
func IsBusy(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		code := se.Code() & 0xff
		return code == sqlite3.SQLITE_BUSY || code == sqlite3.SQLITE_LOCKED
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "40001" || pe.Code == "40P01"
	}
	return false
}
