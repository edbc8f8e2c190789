//go:build !race

package firebench_test

const (
	perSchedule    = 2e6 // ns
	burstSchedules = 300
	stopBurst      = 2000
)
