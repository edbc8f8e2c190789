// Package storagetest opens real stores for tests: SQLite files in the
// test's temporary directory, and PostgreSQL databases on the package's
// throwaway server (storage/pgtest). There is no fake database in this
// project.
//
// Code that touches SQL is tested on both dialects: ForEachDialect runs a
// test body once per dialect (subtests "sqlite" and "postgres") against a
// fresh, migrated store; RunDialects hands out the Dialect itself, for
// tests that start a whole backend from a database URL.
package storagetest

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"

	"kanade-backend/storage"
	"kanade-backend/storage/pgtest"
)

// Dialect is a database the store runs on, as tests open it.
type Dialect struct {
	// Name is the subtest name: "sqlite" or "postgres".
	Name string
	// Open returns a new, empty, migrated store, closed at cleanup.
	Open func(t testing.TB) *storage.Store
	// URL returns the database URL of a new, empty database for a backend's
	// configuration ([db] url), or "" for SQLite, whose file the backend
	// creates in its data directory.
	URL func(t testing.TB) string
}

// Dialects are every database the store supports.
var Dialects = []Dialect{
	{Name: "sqlite", Open: Open, URL: func(testing.TB) string { return "" }},
	{Name: "postgres", Open: OpenPostgres, URL: pgtest.URL},
}

// ForEachDialect runs fn once per dialect, as subtests, each with a new
// migrated store. Without PostgreSQL installed the "postgres" subtest is
// skipped (and fails under KANADE_REQUIRE_PG=1).
func ForEachDialect(t *testing.T, fn func(t *testing.T, s *storage.Store)) {
	t.Helper()
	RunDialects(t, func(t *testing.T, d Dialect) { fn(t, d.Open(t)) })
}

// RunDialects runs fn once per dialect, as subtests.
func RunDialects(t *testing.T, fn func(t *testing.T, d Dialect)) {
	t.Helper()
	for _, d := range Dialects {
		t.Run(d.Name, func(t *testing.T) { fn(t, d) })
	}
}

// OpenPostgres returns a migrated store on a new database of the package's
// PostgreSQL server, closed (and the database dropped) at cleanup.
func OpenPostgres(t testing.TB) *storage.Store {
	t.Helper()
	return OpenURL(t, pgtest.URL(t))
}

// OpenURL opens (or reopens) the PostgreSQL store at url, closed at
// cleanup.
func OpenURL(t testing.TB, url string) *storage.Store {
	t.Helper()
	return open(t, storage.Options{URL: url})
}

// Open returns a migrated store in t.TempDir(), closed at cleanup.
func Open(t testing.TB) *storage.Store {
	t.Helper()
	return OpenAt(t, filepath.Join(t.TempDir(), "backend.db"))
}

// OpenAt opens (or reopens) the store at path, closed at cleanup.
func OpenAt(t testing.TB, path string) *storage.Store {
	t.Helper()
	return open(t, storage.Options{Path: path})
}

func open(t testing.TB, o storage.Options) *storage.Store {
	t.Helper()
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := storage.Open(context.Background(), o)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return s
}

// QueryPlan returns the database's plan for q as one line: SQLite's
// EXPLAIN QUERY PLAN steps joined by "; ", so that a test can require an
// index ("USING COVERING INDEX …") or forbid a sort ("TEMP B-TREE"); on
// PostgreSQL the lines of EXPLAIN joined the same way ("Index Scan using
// …", "Sort"). A test database holds a few rows and no statistics, on
// which PostgreSQL rightly prefers reading the whole table and sorting,
// so there the plan is asked with table scans, bitmap scans and sorts
// priced out (for that transaction only): what it shows is whether an
// index serves the query in its order, which is what a database of fleet
// size needs; a missing index still shows as "Seq Scan" or "Sort".
func QueryPlan(t testing.TB, db *bun.DB, q *bun.SelectQuery) string {
	t.Helper()
	if db.Dialect().Name() == dialect.PG {
		return postgresPlan(t, db, q)
	}
	rows, err := db.QueryContext(context.Background(), "EXPLAIN QUERY PLAN "+q.String())
	if err != nil {
		t.Fatalf("explain %s: %v", q.String(), err)
	}
	defer rows.Close()
	var parts []string
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			t.Fatal(err)
		}
		parts = append(parts, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(parts, "; ")
}

func postgresPlan(t testing.TB, db *bun.DB, q *bun.SelectQuery) string {
	t.Helper()
	var parts []string
	err := db.RunInTx(context.Background(), nil, func(ctx context.Context, tx bun.Tx) error {
		for _, set := range []string{"enable_seqscan", "enable_bitmapscan", "enable_sort"} {
			if _, err := tx.ExecContext(ctx, "SET LOCAL "+set+" = off"); err != nil {
				return err
			}
		}
		rows, err := tx.QueryContext(ctx, "EXPLAIN (COSTS OFF) "+q.String())
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				return err
			}
			parts = append(parts, strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "->")))
		}
		return rows.Err()
	})
	if err != nil {
		t.Fatalf("explain %s: %v", q.String(), err)
	}
	return strings.Join(parts, "; ")
}
