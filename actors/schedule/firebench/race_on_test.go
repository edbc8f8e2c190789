//go:build race

package firebench_test

// The tests' scale and margins: -race builds run SQLite and the actors
// several times slower, and the suite shares the machine with itself.
const (
	// perSchedule is the time allowed to write and load one schedule
	// before the instant.
	perSchedule = 10e6 // ns
	// burstSchedules and stopBurst are the tests' bursts.
	burstSchedules = 100
	stopBurst      = 500
)
