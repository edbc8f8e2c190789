package projector

import (
	"testing"

	"kanade-backend/storage/pgtest"
)

// The write-path tests run on SQLite and on a throwaway PostgreSQL.
func TestMain(m *testing.M) { pgtest.Main(m) }
