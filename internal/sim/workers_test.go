package sim

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"kanade-backend/internal/testsupport"
)

// TestWorkersRunEverythingOnAFixedSetOfGoroutines: a burst of scheduled
// mailboxes (a broadcast) runs entirely, never more than n at a time, in
// arrival order per worker, without a goroutine each.
func TestWorkersRunEverythingOnAFixedSetOfGoroutines(t *testing.T) {
	const n, burst = 2, 50_000
	w := newWorkers(n)
	var running, peak, ran atomic.Int64
	release := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(burst)
	before := runtime.NumGoroutine()
	for range burst {
		w.Schedule(func() {
			defer wg.Done()
			now := running.Add(1)
			for {
				p := peak.Load()
				if now <= p || peak.CompareAndSwap(p, now) {
					break
				}
			}
			<-release
			running.Add(-1)
			ran.Add(1)
		})
	}
	// Both workers hold a function; the rest of the burst waits in the
	// queue, not as goroutines.
	testsupport.EventuallyTrue(t, 5*time.Second, func() bool { return running.Load() == n }, "the %d workers never all took a mailbox", n)
	if g := runtime.NumGoroutine(); g > before+10 {
		t.Fatalf("%d goroutines after scheduling %d mailboxes (%d before): the burst got goroutines", g, burst, before)
	}
	close(release)
	wg.Wait()
	if ran.Load() != burst {
		t.Fatalf("ran %d of %d", ran.Load(), burst)
	}
	if peak.Load() > n {
		t.Fatalf("%d ran at once, want at most %d", peak.Load(), n)
	}
	w.stop()
}

// TestWorkersKeepOrder: one worker runs mailboxes in the order they were
// scheduled, including across the queue's compaction.
func TestWorkersKeepOrder(t *testing.T) {
	w := newWorkers(1)
	block := make(chan struct{})
	w.Schedule(func() { <-block })
	var got []int
	var wg sync.WaitGroup
	const count = 5000
	wg.Add(count)
	for i := range count {
		w.Schedule(func() { got = append(got, i); wg.Done() })
	}
	close(block)
	wg.Wait()
	w.stop()
	for i, v := range got {
		if v != i {
			t.Fatalf("position %d ran %d: order lost", i, v)
		}
	}
}

// TestWorkersStopDrainsAndLaterSchedulesStillRun: stop runs what was
// queued before it returns, and a mailbox scheduled after it (a timer that
// fires late) still runs.
func TestWorkersStopDrainsAndLaterSchedulesStillRun(t *testing.T) {
	w := newWorkers(1)
	var ran atomic.Int64
	for range 100 {
		w.Schedule(func() { ran.Add(1) })
	}
	w.stop()
	if ran.Load() != 100 {
		t.Fatalf("stop returned with %d of 100 run", ran.Load())
	}
	done := make(chan struct{})
	w.Schedule(func() { close(done) })
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a mailbox scheduled after stop never ran")
	}
}
