// Package storagetest opens real SQLite stores in a test's temporary
// directory; there is no fake database in this project.
package storagetest

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

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
