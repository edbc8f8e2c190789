// Package migrations holds the versioned schema of the read model, for
// SQLite and PostgreSQL from one source of truth. Files are named
// <UTC timestamp>_<what>.tx.up.sql so that changes made on different
// branches order themselves; each runs in its own transaction at start.
//
// The files in this directory are portable and run on both dialects. Where
// the SQL must differ (an identity column instead of AUTOINCREMENT, BIGINT
// and BOOLEAN where SQLite's INTEGER was written, BYTEA for BLOB), a file of
// the same name in the dialect's directory (postgres/) replaces the shared
// one on that dialect only. Both dialects therefore apply the same list of
// migration names, and an override can never add a migration of its own:
// a schema change that only one dialect needs is still a shared file (which
// may hold nothing but a comment) plus its override.
package migrations

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/uptrace/bun/dialect"
	"github.com/uptrace/bun/migrate"
)

// The dialect directories must be listed here to be embedded; a directory
// that is not embedded would be silently ignored.
//
//go:embed *.sql postgres/*.sql
var files embed.FS

// overrideDirs names the directory of per-dialect replacements.
var overrideDirs = map[dialect.Name]string{
	dialect.PG: "postgres",
}

// Migrations returns every migration of the schema for dialect d.
func Migrations(d dialect.Name) (*migrate.Migrations, error) {
	return migrationsOf(files, d)
}

func migrationsOf(files fs.FS, d dialect.Name) (*migrate.Migrations, error) {
	fsys, err := forFS(files, d)
	if err != nil {
		return nil, err
	}
	m := migrate.NewMigrations()
	if err := m.Discover(fsys); err != nil {
		return nil, fmt.Errorf("discover migrations: %w", err)
	}
	return m, nil
}

// For returns the migration files of dialect d as one flat directory: the
// shared files, each replaced by the dialect's override where there is one.
// An override without a shared file of the same name is an error.
func For(d dialect.Name) (fs.FS, error) { return forFS(files, d) }

func forFS(files fs.FS, d dialect.Name) (fs.FS, error) {
	shared, err := sqlNames(files, ".")
	if err != nil {
		return nil, err
	}
	dir, ok := overrideDirs[d]
	if !ok {
		if d != dialect.SQLite {
			return nil, fmt.Errorf("migrations: no schema for dialect %s", d)
		}
		return overlay{base: files}, nil
	}
	over, err := fs.Sub(files, dir)
	if err != nil {
		return nil, fmt.Errorf("migrations: %s overrides: %w", dir, err)
	}
	names, err := sqlNames(over, ".")
	if err != nil {
		return nil, err
	}
	var errs []error
	for name := range names {
		if !shared[name] {
			errs = append(errs, fmt.Errorf("migrations: %s/%s overrides no shared migration: add the portable file (a comment is enough) under the same name", dir, name))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return overlay{base: files, over: over, names: names}, nil
}

// sqlNames lists the .sql files directly in dir.
func sqlNames(fsys fs.FS, dir string) (map[string]bool, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("migrations: list %s: %w", dir, err)
	}
	out := map[string]bool{}
	for _, e := range entries {
		if !e.IsDir() && strings.HasSuffix(e.Name(), ".sql") {
			out[e.Name()] = true
		}
	}
	return out, nil
}

// overlay is the shared directory with some files' contents replaced. Its
// listing is the shared one without subdirectories (bun's Discover walks
// recursively and would otherwise see every dialect's files).
type overlay struct {
	base  fs.FS
	over  fs.FS
	names map[string]bool
}

func (o overlay) Open(name string) (fs.File, error) {
	if o.names[name] {
		return o.over.Open(name)
	}
	return o.base.Open(name)
}

// ReadDir lists the root's .sql files; the overlay has no subdirectories.
func (o overlay) ReadDir(name string) ([]fs.DirEntry, error) {
	entries, err := fs.ReadDir(o.base, name)
	if err != nil {
		return nil, err
	}
	out := entries[:0:0]
	for _, e := range entries {
		if !e.IsDir() {
			out = append(out, e)
		}
	}
	return out, nil
}
