//go:build race

package firebench_test

// perSchedule is the time allowed to write and load one schedule before
// the instant: -race builds run SQLite and the actors several times slower.
const perSchedule = 3e6 // ns

// stopBurst is the burst a stop interrupts: smaller under -race, where
// storing what the stop must store takes several times longer.
const stopBurst = 500
