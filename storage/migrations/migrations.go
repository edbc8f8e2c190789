// Package migrations holds the versioned schema of the read model. Files are
// named <UTC timestamp>_<what>.tx.up.sql so that changes made on different
// branches order themselves; each runs in its own transaction at start.
package migrations

import (
	"embed"
	"fmt"

	"github.com/uptrace/bun/migrate"
)

//go:embed *.sql
var files embed.FS

// Migrations returns every migration of the schema.
func Migrations() (*migrate.Migrations, error) {
	m := migrate.NewMigrations()
	if err := m.Discover(files); err != nil {
		return nil, fmt.Errorf("discover migrations: %w", err)
	}
	return m, nil
}
