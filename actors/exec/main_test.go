package exec_test

import (
	"testing"

	"kanade-backend/storage/pgtest"
)

// The gate tests run on PostgreSQL too: one throwaway server for the
// package, stopped when its tests end.
func TestMain(m *testing.M) { pgtest.Main(m) }
