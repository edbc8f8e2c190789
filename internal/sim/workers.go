package sim

import (
	"sync"

	"github.com/asynkron/protoactor-go/actor"
)

// workers is the dispatcher of the agents' mailboxes: a fixed set of
// goroutines that take scheduled mailboxes in arrival order.
//
// protoactor's default dispatcher starts a goroutine each time a mailbox
// gets work. A Command to commands.all gives 100 000 mailboxes work at
// once, so it started 100 000 goroutines: their stacks grew on the actor
// call chain (runtime.newstack and copystack were a fifth of the fleet's
// CPU in a 100 000-agent broadcast) and they flooded the Go run queue, in
// which every other goroutine of the process (the fleet's NATS reader and
// writer, and in a test the backend sharing the process) then waited its
// turn. A worker per core keeps the fleet as parallel as the machine while
// the queue of waiting mailboxes is a slice, not runnable goroutines.
type workers struct {
	mu      sync.Mutex
	wake    *sync.Cond
	queue   []func()
	head    int // queue[head:] is still to run
	stopped bool
	done    sync.WaitGroup
}

var _ actor.Dispatcher = (*workers)(nil)

// throughput is how many messages a mailbox processes before it yields
// its worker to the next mailbox (protoactor's default).
const throughput = 300

// newWorkers starts n workers.
func newWorkers(n int) *workers {
	w := &workers{}
	w.wake = sync.NewCond(&w.mu)
	w.done.Add(n)
	for range n {
		go w.run()
	}
	return w
}

// Schedule queues fn for the next free worker. It never blocks, since the
// sender may be a NATS callback. After stop, fn gets a goroutine of its
// own (the default dispatcher's way), so a mailbox scheduled late still
// runs rather than being lost.
func (w *workers) Schedule(fn func()) {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		go fn()
		return
	}
	w.queue = append(w.queue, fn)
	w.mu.Unlock()
	w.wake.Signal()
}

// Throughput implements actor.Dispatcher.
func (w *workers) Throughput() int { return throughput }

func (w *workers) run() {
	defer w.done.Done()
	for {
		fn, ok := w.next()
		if !ok {
			return
		}
		fn()
	}
}

// next waits for the oldest queued mailbox; false once stopped and the
// queue is empty.
func (w *workers) next() (func(), bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.head == len(w.queue) && !w.stopped {
		w.wake.Wait()
	}
	if w.head == len(w.queue) {
		return nil, false
	}
	fn := w.queue[w.head]
	w.queue[w.head] = nil
	w.head++
	switch {
	case w.head == len(w.queue):
		// Empty: reuse the array from its start.
		w.queue, w.head = w.queue[:0], 0
	case w.head >= 1024 && w.head*2 >= len(w.queue):
		// A long burst: drop the consumed half rather than keep growing.
		n := copy(w.queue, w.queue[w.head:])
		clear(w.queue[n:])
		w.queue, w.head = w.queue[:n], 0
	}
	return fn, true
}

// stop lets the workers finish what is queued and waits for them.
func (w *workers) stop() {
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
	w.wake.Broadcast()
	w.done.Wait()
}
