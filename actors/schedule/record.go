package schedule

import (
	"sync"
	"time"
)

// MaxTicks is how many tick outcomes a schedule keeps for the status API.
const MaxTicks = 20

// Restart policy of schedule actors (architecture.md §2): more than
// MaxRestarts failures within RestartWindow and the actor is stopped for
// good, its schedule shown as faulted.
const (
	MaxRestarts   = 5
	RestartWindow = 30 * time.Second
)

// Tick is the outcome of one tick, as kept for the status API and returned
// by a manual run.
type Tick struct {
	// Outcome is messages.TickFired, TickSkipped, TickMissed or TickFailed.
	Outcome string `json:"outcome"`
	Reason  string `json:"reason,omitempty"`
	ExecID  string `json:"exec_id,omitempty"`
	// Pcs is the number of PCs fired at (FirePcs) or expected (whole
	// target); 0 when unknown or when nothing was fired.
	Pcs int `json:"pcs"`
	// Trigger is cron, catch-up or manual.
	Trigger string `json:"trigger"`
	// Instant is the cron instant (the request time for a manual run); At
	// is when the outcome was known.
	Instant time.Time `json:"instant"`
	At      time.Time `json:"at"`
}

// Tick triggers.
const (
	TriggerCron    = "cron"
	TriggerCatchUp = "catch-up"
	TriggerManual  = "manual"
)

// record is one schedule's status board. The supervisor owns it and lends
// it to each incarnation of the schedule's actor, so that the tick history
// and the restart count survive a restart and stay readable once the actor
// is faulted. The actor writes it, the supervisor reads it to answer the
// status API; both hold mu for a few field copies only.
type record struct {
	mu sync.Mutex
	// ticks is a ring of the last MaxTicks outcomes; next is where the
	// next one goes once the ring is full.
	ticks []Tick
	next  int

	restarts  int
	failures  []time.Time // within RestartWindow, for the restarting state
	lastError string

	// Filled by the actor for the status API.
	nextTick    time.Time
	seeded      bool
	completions int
	inFlight    int
	// progress is the last computed progress (once_per_pc and
	// once_per_target); nil before the first tick or result.
	progress *Progress
}

func (r *record) addTick(t Tick) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.ticks) < MaxTicks {
		r.ticks = append(r.ticks, t)
		return
	}
	r.ticks[r.next] = t
	r.next = (r.next + 1) % MaxTicks
}

// lastTicks returns the kept ticks, newest first.
func (r *record) lastTicks() []Tick {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Tick, 0, len(r.ticks))
	n := len(r.ticks)
	for i := range n {
		// Newest is just before next (or at the end while filling).
		idx := (r.next - 1 - i + 2*n) % n
		if n < MaxTicks {
			idx = n - 1 - i
		}
		out = append(out, r.ticks[idx])
	}
	return out
}

// failed records a failure of the actor (called by the supervisor while it
// handles the failure, before the restart).
func (r *record) failed(now time.Time, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lastError = reason
	r.failures = append(r.failures, now)
	r.trimFailures(now)
}

// resetFailures forgets the failures of an earlier revision, so that an
// edited faulted schedule starts with a clean slate.
func (r *record) resetFailures() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failures, r.lastError, r.restarts = nil, "", 0
}

func (r *record) restarted() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.restarts++
}

func (r *record) trimFailures(now time.Time) {
	i := 0
	for i < len(r.failures) && now.Sub(r.failures[i]) >= RestartWindow {
		i++
	}
	r.failures = r.failures[i:]
}

func (r *record) setNextTick(t time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.nextTick = t
}

func (r *record) setDedup(seeded bool, completions, inFlight int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seeded, r.completions, r.inFlight = seeded, completions, inFlight
}

func (r *record) setProgress(p *Progress) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.progress = p
}

// recordView is a copy of a record for the status API.
type recordView struct {
	restarts       int
	recentFailures int
	lastError      string
	nextTick       time.Time
	seeded         bool
	completions    int
	inFlight       int
	progress       *Progress
}

func (r *record) view(now time.Time) recordView {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.trimFailures(now)
	return recordView{restarts: r.restarts, recentFailures: len(r.failures), lastError: r.lastError, nextTick: r.nextTick,
		seeded: r.seeded, completions: r.completions, inFlight: r.inFlight, progress: r.progress}
}
