// Package storagetest opens real SQLite stores in a test's temporary
// directory; there is no fake database in this project.
package storagetest

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/uptrace/bun"

	"kanade-backend/storage"
)

// Open returns a migrated store in t.TempDir(), closed at cleanup.
func Open(t testing.TB) *storage.Store {
	t.Helper()
	return OpenAt(t, filepath.Join(t.TempDir(), "backend.db"))
}

// OpenAt opens (or reopens) the store at path, closed at cleanup.
func OpenAt(t testing.TB, path string) *storage.Store {
	t.Helper()
	s, err := storage.Open(context.Background(), storage.Options{
		Path:   path,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
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

// QueryPlan returns SQLite's EXPLAIN QUERY PLAN for q as one line, its
// steps joined by "; ", so that a test can require an index ("USING
// COVERING INDEX …") or forbid a sort ("TEMP B-TREE").
func QueryPlan(t testing.TB, db *bun.DB, q *bun.SelectQuery) string {
	t.Helper()
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
