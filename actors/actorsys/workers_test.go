package actorsys

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"kanade-backend/internal/testsupport"
)

// The pool runs every activation once, in the order scheduled when it has
// one worker, never blocks the sender, and leaves no goroutine behind once
// closed; an activation scheduled after close still runs.
func TestWorkerPool(t *testing.T) {
	opts := goleak.IgnoreCurrent()
	p := NewWorkerPool(1, 10)
	const n = 1000
	var mu sync.Mutex
	var got []int
	var wg sync.WaitGroup
	release := make(chan struct{})
	wg.Add(n + 1)
	// The first activation holds the only worker, so the rest queue up
	// behind it: Schedule must return regardless.
	p.Schedule(func() { <-release; wg.Done() })
	for i := range n {
		p.Schedule(func() {
			mu.Lock()
			got = append(got, i)
			mu.Unlock()
			wg.Done()
		})
	}
	close(release)
	wg.Wait()
	for i, v := range got {
		if v != i {
			t.Fatalf("activation %d ran in position %d", v, i)
		}
	}
	p.Close()
	done := make(chan struct{})
	p.Schedule(func() { close(done) })
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("an activation scheduled after close did not run")
	}
	goleak.VerifyNone(t, opts)
}

// A burst of activations (a broadcast to every agent) runs entirely on at
// most size workers, without a goroutine each, and Wait returns once the
// workers have ended after Close.
func TestWorkerPoolBurstRunsOnItsWorkers(t *testing.T) {
	const size, burst = 2, 50_000
	p := NewWorkerPool(size, 300)
	var running, peak, ran atomic.Int64
	release := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(burst)
	before := runtime.NumGoroutine()
	for range burst {
		p.Schedule(func() {
			defer wg.Done()
			now := running.Add(1)
			for {
				old := peak.Load()
				if now <= old || peak.CompareAndSwap(old, now) {
					break
				}
			}
			<-release
			running.Add(-1)
			ran.Add(1)
		})
	}
	testsupport.EventuallyTrue(t, 5*time.Second, func() bool { return running.Load() == size },
		"the %d workers never all took an activation", size)
	if g := runtime.NumGoroutine(); g > before+size+8 {
		t.Fatalf("%d goroutines after scheduling %d activations (%d before): the burst got goroutines", g, burst, before)
	}
	close(release)
	wg.Wait()
	if ran.Load() != burst || peak.Load() > size {
		t.Fatalf("ran %d of %d, at most %d at once (want ≤ %d)", ran.Load(), burst, peak.Load(), size)
	}
	p.Close()
	waited := make(chan struct{})
	go func() { p.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return after Close")
	}
}
