package schedule

import (
	"time"

	"kanade-backend/messages/cron"
)

// latestInstant returns the latest fire time of e in (after, upTo], if any.
//
// cron.Expr only searches forwards, and walking forwards from after could
// take millions of steps (an every-second schedule after a day of
// downtime), so this bisects on t instead: Next(t) <= upTo holds exactly
// for t before the answer L, because L is the latest fire time not after
// upTo. Some 60 calls of Next settle L to the nanosecond whatever the gap.
func latestInstant(e *cron.Expr, after, upTo time.Time) (time.Time, bool) {
	first := e.Next(after)
	if first.IsZero() || first.After(upTo) {
		return time.Time{}, false
	}
	// Invariant: Next(lo) <= upTo < Next(hi) (or hi is upTo itself, whose
	// Next is after upTo by definition).
	lo, hi := after, upTo
	for hi.Sub(lo) > time.Nanosecond {
		mid := lo.Add(hi.Sub(lo) / 2)
		if n := e.Next(mid); !n.IsZero() && !n.After(upTo) {
			lo = mid
		} else {
			hi = mid
		}
	}
	return e.Next(lo), true
}

// FireTime is one upcoming fire time, in UTC and in the schedule's zone.
type FireTime struct {
	UTC   time.Time `json:"utc"`
	Local string    `json:"local"`
}

// NextFireTimes lists the next n fire times of e after from.
func NextFireTimes(e *cron.Expr, from time.Time, n int) []FireTime {
	out := []FireTime{}
	for _, t := range e.NextN(from, n) {
		out = append(out, FireTime{UTC: t.UTC(), Local: t.In(e.Location()).Format(time.RFC3339)})
	}
	return out
}
