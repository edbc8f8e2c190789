package listbench_test

import (
	"testing"

	"kanade-backend/storage/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }
