package sim_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test stops what it starts: agents, timers, watches and
// connections leave no goroutine behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
