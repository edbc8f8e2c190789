// Package listbench holds the benchmark of the paged list endpoints
// (/api/results under each filter, /api/audit, /api/agents when present) at
// the size of the performance budget: 10 000 agents and 1 000 000 results
// (architecture.md §6, p99 ≤ 20 ms). It has no code of its own; see
// bench_test.go and docs/benchmarks.md.
package listbench
