package sim

import (
	"sync"
	"time"

	"kanade-backend/actors/clock"
)

// heartbeatWheel drives every agent's heartbeat from one timer instead of
// one per agent. The interval is cut into slots; each agent sits in a
// random slot (its phase) and beats when the wheel passes it, so the
// fleet's heartbeats are spread over the interval as real agents' are.
// One timer chain also keeps phases exact: tick times are computed from
// the start, never from when a previous beat happened to be handled, so
// they do not drift and a fake clock reproduces them to the nanosecond.
type heartbeatWheel struct {
	clk      clock.Clock
	interval time.Duration
	slots    int
	start    time.Time
	// tick is called for every slot the wheel passes, with the tick time.
	tick func(slot int, at time.Time)

	mu      sync.Mutex
	next    uint64 // number of the next tick
	timer   clock.Timer
	stopped bool
}

// wheelSlot is the finest heartbeat phase: 10 000 agents at 30 s put
// about 33 agents in each of 300 slots.
const (
	wheelSlot     = 100 * time.Millisecond
	maxWheelSlots = 3000
)

func wheelSlots(interval time.Duration) int {
	return min(max(int(interval/wheelSlot), 1), maxWheelSlots)
}

func startWheel(clk clock.Clock, interval time.Duration, tick func(slot int, at time.Time)) *heartbeatWheel {
	w := &heartbeatWheel{clk: clk, interval: interval, slots: wheelSlots(interval), start: clk.Now(), tick: tick, next: 1}
	w.mu.Lock()
	w.arm()
	w.mu.Unlock()
	return w
}

// due is the time of tick k: slot k mod slots of round k / slots.
func (w *heartbeatWheel) due(k uint64) time.Time {
	round, slot := k/uint64(w.slots), k%uint64(w.slots)
	return w.start.Add(time.Duration(round)*w.interval + time.Duration(slot)*w.interval/time.Duration(w.slots))
}

// arm schedules the next tick; w.mu is held.
func (w *heartbeatWheel) arm() {
	w.timer = w.clk.AfterFunc(w.due(w.next).Sub(w.clk.Now()), w.fire)
}

func (w *heartbeatWheel) fire() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	now := w.clk.Now()
	// After a stall (a suspended laptop) pass each missed slot at most
	// once: every agent beats once now, as real agents waking up do.
	for n := 0; !w.due(w.next).After(now); n++ {
		if n < w.slots {
			w.tick(int(w.next%uint64(w.slots)), now)
		}
		w.next++
	}
	w.arm()
}

func (w *heartbeatWheel) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	if w.timer != nil {
		w.timer.Stop()
	}
}
