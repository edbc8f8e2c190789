//go:build race

package exec_test

// raceEnabled is true in -race builds, where SQLite (C translated to Go) runs
// an order of magnitude slower under instrumentation.
const raceEnabled = true
