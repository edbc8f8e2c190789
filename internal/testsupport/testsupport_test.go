package testsupport

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestEventuallyReturnsOnceTheConditionHolds(t *testing.T) {
	calls := 0
	start := time.Now()
	Eventually(t, time.Minute, func() error {
		calls++
		if calls < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if calls != 3 || time.Since(start) > 5*time.Second {
		t.Fatalf("%d calls in %v", calls, time.Since(start))
	}
}

// fatalRecorder is a testing.TB whose Fatalf records the message and ends
// the goroutine, as testing's does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Helper() {}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// A condition that never holds fails the test with its last error.
func TestEventuallyFailsWithTheLastError(t *testing.T) {
	r := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Eventually(r, 50*time.Millisecond, func() error { return errors.New("still no") })
	}()
	<-done
	if !strings.Contains(r.msg, "still no") {
		t.Fatalf("failure %q, want the last error", r.msg)
	}
}

// The yes/no form returns once the condition holds and fails with its
// message when it never does.
func TestEventuallyTrue(t *testing.T) {
	calls := 0
	EventuallyTrue(t, time.Minute, func() bool { calls++; return calls == 2 }, "never")
	if calls != 2 {
		t.Fatalf("%d calls", calls)
	}
	r := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		EventuallyTrue(r, 50*time.Millisecond, func() bool { return false }, "pc %s still up", "pc-1")
	}()
	<-done
	if !strings.Contains(r.msg, "pc pc-1 still up") {
		t.Fatalf("failure %q, want the formatted message", r.msg)
	}
}
