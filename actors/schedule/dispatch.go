package schedule

import (
	"sync"

	"github.com/asynkron/protoactor-go/actor"
)

// workerPool is the dispatcher of the schedule actors. The library's
// default dispatcher starts a goroutine for every mailbox activation; when
// thousands of schedules share a cron instant, every tick then pays for a
// new goroutine and for growing its stack again to the depth of a tick,
// and the fires queue up behind that work (architecture.md §6, fire
// lateness). A few long-lived workers run the activations instead, in the
// order they were scheduled, on stacks already grown.
//
// Schedule never blocks the sender: the queue is unbounded, as a mailbox
// is. Workers start on demand, up to size, and park while the queue is
// empty; close ends them once the queue has drained, and any activation
// scheduled after close runs on its own goroutine as with the default
// dispatcher, so a message racing the scheduler's stop is still handled.
type workerPool struct {
	throughput int
	size       int

	mu      sync.Mutex
	wake    *sync.Cond
	queue   fnQueue
	workers int
	idle    int
	closed  bool
}

var _ actor.Dispatcher = (*workerPool)(nil)

func newWorkerPool(size, throughput int) *workerPool {
	p := &workerPool{size: max(size, 1), throughput: throughput}
	p.wake = sync.NewCond(&p.mu)
	return p
}

// Schedule queues one mailbox activation.
func (p *workerPool) Schedule(fn func()) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		go fn()
		return
	}
	p.queue.push(fn)
	switch {
	case p.idle > 0:
		p.wake.Signal()
	case p.workers < p.size:
		p.workers++
		go p.work()
	}
	p.mu.Unlock()
}

// Throughput is how many messages an actor handles before its worker
// yields (the library's Gosched point).
func (p *workerPool) Throughput() int { return p.throughput }

func (p *workerPool) work() {
	p.mu.Lock()
	for {
		for p.queue.len() == 0 && !p.closed {
			p.idle++
			p.wake.Wait()
			p.idle--
		}
		fn, ok := p.queue.pop()
		if !ok {
			// Closed and drained.
			p.workers--
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		fn()
		p.mu.Lock()
	}
}

// close lets the workers finish what is queued and end. It does not wait
// for them: the caller is an actor, which must not block, and the
// activations do no I/O, so they end soon on their own.
func (p *workerPool) close() {
	p.mu.Lock()
	p.closed = true
	p.wake.Broadcast()
	p.mu.Unlock()
}

// fnQueue is a FIFO ring of activations that grows as needed and keeps
// its buffer, so that a burst of ticks every second allocates nothing
// once the first one has sized it.
type fnQueue struct {
	buf        []func()
	head, size int
}

func (q *fnQueue) len() int { return q.size }

func (q *fnQueue) push(fn func()) {
	if q.size == len(q.buf) {
		grown := make([]func(), max(64, 2*len(q.buf)))
		n := copy(grown, q.buf[q.head:])
		copy(grown[n:], q.buf[:q.head])
		q.buf, q.head = grown, 0
	}
	q.buf[(q.head+q.size)%len(q.buf)] = fn
	q.size++
}

func (q *fnQueue) pop() (func(), bool) {
	if q.size == 0 {
		return nil, false
	}
	fn := q.buf[q.head]
	q.buf[q.head] = nil
	q.head = (q.head + 1) % len(q.buf)
	q.size--
	return fn, true
}
