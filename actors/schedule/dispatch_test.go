package schedule

import (
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// The pool runs every activation once, in the order scheduled when it has
// one worker, never blocks the sender, and leaves no goroutine behind once
// closed; an activation scheduled after close still runs.
func TestWorkerPool(t *testing.T) {
	opts := goleak.IgnoreCurrent()
	p := newWorkerPool(1, 10)
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
	p.close()
	done := make(chan struct{})
	p.Schedule(func() { close(done) })
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("an activation scheduled after close did not run")
	}
	goleak.VerifyNone(t, opts)
}
