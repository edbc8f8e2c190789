// Package firebench holds the end-to-end benchmark of scheduled fires
// (architecture.md §6, "fire lateness, end to end"): N schedules due at the
// same cron instant in a whole in-process backend (embedded NATS, SQLite,
// the real scheduler and exec engine), timed from the instant to each
// Command at a plain NATS subscriber on commands.pc.>, next to the raw
// ceiling of the same rows and publishes measured in the same run. It has
// no code of its own; see bench_test.go and docs/benchmarks.md.
package firebench
