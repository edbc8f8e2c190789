package actorsys

import (
	"sync"

	"github.com/asynkron/protoactor-go/actor"
)

// WorkerPool is a dispatcher for many actors that get work at once. The
// library's default dispatcher starts a goroutine for every mailbox
// activation: when thousands of schedules share a cron instant, or a
// Command to commands.all reaches 100 000 simulated agents, each
// activation pays for a new goroutine and for growing its stack again
// (runtime.newstack and copystack were a fifth of the simulator's CPU in
// such a broadcast), and the burst of runnable goroutines queues every
// other goroutine of the process behind it (architecture.md §6, fire
// lateness). A few long-lived workers run the activations instead, in the
// order they were scheduled, on stacks already grown.
//
// Schedule never blocks the sender: the queue is unbounded, as a mailbox
// is. Workers start on demand, up to size, and park while the queue is
// empty; Close ends them once the queue has drained, and any activation
// scheduled after Close runs on its own goroutine as with the default
// dispatcher, so a message racing a stop is still handled.
type WorkerPool struct {
	throughput int
	size       int

	mu      sync.Mutex
	wake    *sync.Cond
	queue   fnQueue
	workers int
	idle    int
	closed  bool
	done    sync.WaitGroup // one per started worker
}

var _ actor.Dispatcher = (*WorkerPool)(nil)

// NewWorkerPool returns a pool of up to size workers whose actors handle
// throughput messages before yielding their worker (the library's default
// is 300).
func NewWorkerPool(size, throughput int) *WorkerPool {
	p := &WorkerPool{size: max(size, 1), throughput: throughput}
	p.wake = sync.NewCond(&p.mu)
	return p
}

// Schedule queues one mailbox activation.
func (p *WorkerPool) Schedule(fn func()) {
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
		p.done.Add(1)
		go p.work()
	}
	p.mu.Unlock()
}

// Throughput is how many messages an actor handles before its worker
// yields (the library's Gosched point).
func (p *WorkerPool) Throughput() int { return p.throughput }

func (p *WorkerPool) work() {
	defer p.done.Done()
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

// Close lets the workers finish what is queued and end. It does not wait
// for them, since the caller may be an actor, which must not block; Wait
// does.
func (p *WorkerPool) Close() {
	p.mu.Lock()
	p.closed = true
	p.wake.Broadcast()
	p.mu.Unlock()
}

// Wait returns once every worker has ended, after Close.
func (p *WorkerPool) Wait() { p.done.Wait() }

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
