package schedule

import (
	"testing"

	"kanade-backend/storage/pgtest"
)

// The tests that touch the store run on SQLite and on a throwaway
// PostgreSQL (onBothDialects).
func TestMain(m *testing.M) { pgtest.Main(m) }
