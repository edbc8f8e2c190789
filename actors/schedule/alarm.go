package schedule

import (
	"sync"
	"time"

	"kanade-backend/actors/clock"
)

// alarms gives all the schedule actors due at the same instant one shared
// clock timer. Cron schedules cluster on the same instants (every minute,
// every hour); with a timer per actor, the runtime starts a goroutine per
// timer when 10 000 of them expire together, and the last tick of the
// burst is handed to its actor only after all of them have been scheduled.
// One timer per instant sends the ticks from a single goroutine, in the
// order the actors armed.
//
// Each actor still owns its alarm: it arms it for its next instant and
// stops it on disarm exactly as it would a clock.Timer.
type alarms struct {
	clock clock.Clock

	mu  sync.Mutex
	due map[int64]*alarmBucket // by instant, Unix nanoseconds (zone-free)
}

// alarmBucket is the callbacks due at one instant.
type alarmBucket struct {
	key   int64
	timer clock.Timer
	// fns are in arming order; a stopped alarm leaves a nil behind so
	// that the others keep their index.
	fns   []*alarm
	live  int
	fired bool
}

// alarm is one actor's callback in a bucket.
type alarm struct {
	set *alarms
	b   *alarmBucket
	idx int
	fn  func()
}

var _ clock.Timer = (*alarm)(nil)

func newAlarms(c clock.Clock) *alarms {
	return &alarms{clock: c, due: map[int64]*alarmBucket{}}
}

// at calls fn at when (now is the caller's reading of the clock); the
// callbacks of one instant run one after another on the goroutine of the
// instant's timer, so fn must not block (a schedule actor's only sends a
// message).
func (s *alarms) at(now, when time.Time, fn func()) clock.Timer {
	key := when.UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.due[key]
	if b == nil {
		b = &alarmBucket{key: key}
		s.due[key] = b
		b.timer = s.clock.AfterFunc(when.Sub(now), func() { s.ring(b) })
	}
	a := &alarm{set: s, b: b, idx: len(b.fns), fn: fn}
	b.fns = append(b.fns, a)
	b.live++
	return a
}

func (s *alarms) ring(b *alarmBucket) {
	s.mu.Lock()
	if s.due[b.key] == b {
		delete(s.due, b.key)
	}
	b.fired = true
	fns := b.fns
	b.fns = nil
	s.mu.Unlock()
	for _, a := range fns {
		if a != nil {
			a.fn()
		}
	}
}

// Stop prevents the callback if its instant has not rung; it reports
// whether it stopped it. The instant's timer stops with its last alarm.
func (a *alarm) Stop() bool {
	s, b := a.set, a.b
	s.mu.Lock()
	defer s.mu.Unlock()
	if b.fired || b.fns[a.idx] != a {
		return false
	}
	b.fns[a.idx] = nil
	b.live--
	if b.live == 0 {
		// Should the timer have expired already, ring finds nothing left
		// to call.
		b.timer.Stop()
		if s.due[b.key] == b {
			delete(s.due, b.key)
		}
	}
	return true
}
