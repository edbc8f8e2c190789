//go:build !race

package firebench_test

const perSchedule = 7e5 // ns

const stopBurst = 2000
