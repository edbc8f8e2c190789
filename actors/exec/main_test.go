package exec_test

import (
	"testing"

	"kanade-backend/storage/pgtest"
)

// The store-touching tests run on SQLite and on a throwaway PostgreSQL.
func TestMain(m *testing.M) { pgtest.Main(m) }
