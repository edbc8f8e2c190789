// Package testsupport holds the helpers that tests of every layer share,
// so that each pattern is written once: polling for a condition instead
// of sleeping (Eventually, EventuallyTrue), recording a client's NATS permission
// violations (Violations), running a stock nats-server (RunNATSServer),
// a benchmark's CPU time and profile (ProcessCPU, CPUProfile), reading a
// Prometheus registry's series (Metric, RequireMetric).
// It imports nothing of the project, so any package's tests may use it.
package testsupport

import (
	"fmt"
	"testing"
	"time"
)

// PollInterval is how often Eventually tries again.
const PollInterval = 10 * time.Millisecond

// Eventually polls f until it returns nil or timeout passes, then fails the
// test with f's last error. A passing test returns as soon as f does, so a
// generous timeout costs nothing on a quiet machine and spares a loaded
// one a false failure.
func Eventually(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %v", timeout, err)
		}
		time.Sleep(PollInterval)
	}
}

// EventuallyTrue is Eventually for a yes/no condition: it polls ok until
// it reports true or timeout passes, then fails the test with the message
// format and args describe.
func EventuallyTrue(t testing.TB, timeout time.Duration, ok func() bool, format string, args ...any) {
	t.Helper()
	Eventually(t, timeout, func() error {
		if ok() {
			return nil
		}
		return fmt.Errorf(format, args...)
	})
}
