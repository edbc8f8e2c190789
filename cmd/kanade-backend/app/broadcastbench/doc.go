// Package broadcastbench holds the end-to-end broadcast benchmark: a whole
// backend (embedded NATS, SQLite, every actor) in the benchmark's process,
// N simulated agents in a kanade-fleet process beside it, an operator's
// POST /api/exec to all of them, and the time until the last result row is
// committed, next to the raw ceiling of the same run. The package has no
// code of its own; see bench_test.go.
package broadcastbench
