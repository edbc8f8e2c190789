package storage

import (
	"context"
	"database/sql"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/sqlitedialect"
)

// VerifyPragmasForTest exposes the pragma check to the external tests.
func VerifyPragmasForTest(ctx context.Context, db *sql.DB) error {
	return verifyPragmas(ctx, bun.NewDB(db, sqlitedialect.New()), false)
}
