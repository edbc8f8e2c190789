package projector

import (
	"context"
	"errors"
	"sort"
	"sync"
	"time"

	"kanade-backend/storage"
)

// Status is what the projectors tell fleet health about themselves: which
// projection is stalled, since when and why. A stalled projection keeps
// retrying by itself (a database error is never a reason to drop a
// message); the status is there so that an operator learns that the read
// model has stopped moving, and why, before anyone notices missing rows.
type Status struct {
	mu     sync.Mutex
	stalls map[string]Stall
}

// Stall is one projection that cannot write.
type Stall struct {
	Projection string
	// Cause is storage.Cause of the failure (disk_full, read_only,
	// io_error, busy, out_of_memory), or "other".
	Cause string
	// Reason is the latest error, for the operator.
	Reason string
	// Since is when the projection last made progress (its first failure
	// in the current run of failures).
	Since time.Time
}

// NewStatus returns an empty Status, to share between Start (Deps.Status)
// and the fleet health route.
func NewStatus() *Status { return &Status{stalls: map[string]Stall{}} }

// Stalls lists the stalled projections, sorted by name.
func (s *Status) Stalls() []Stall {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Stall, 0, len(s.stalls))
	for _, st := range s.stalls {
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Projection < out[j].Projection })
	return out
}

// causeOf is the cause label of a failure.
func causeOf(err error) string {
	if c := storage.Cause(err); c != "" {
		return c
	}
	return "other"
}

// stalled records that projection failed to write with err; Since keeps
// the start of the current run of failures. It reports whether the
// projection was making progress until now (callers log the first failure
// of a run loudly, the retries quietly).
//
// A write the stop cancelled (the base context ends before the actors
// stop) is no failure: the database did nothing wrong, and what the write
// held is kept (heartbeats, for the stop's last flush) or redelivered (a
// batch). It neither counts in kanade_projection_write_failures_total,
// which operators alert on, nor stalls the projection.
func (e *env) stalled(projection string, err error) (first bool) {
	if e.base.Err() != nil && errors.Is(err, context.Canceled) {
		return false
	}
	cause := causeOf(err)
	e.metrics.failures.WithLabelValues(projection, cause).Inc()
	return e.setStall(projection, cause, err.Error())
}

// setStall marks projection stalled with reason, without counting a new
// failure; it reports whether the projection was not stalled before.
func (e *env) setStall(projection, cause, reason string) (first bool) {
	e.metrics.stalled.WithLabelValues(projection).Set(1)
	s := e.status
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.stalls[projection]
	if !ok {
		st = Stall{Projection: projection, Since: e.clock.Now().UTC()}
	}
	st.Cause, st.Reason = cause, reason
	s.stalls[projection] = st
	return !ok
}

// progressed records that projection wrote successfully.
func (e *env) progressed(projection string) {
	s := e.status
	s.mu.Lock()
	_, was := s.stalls[projection]
	delete(s.stalls, projection)
	s.mu.Unlock()
	if was {
		e.metrics.stalled.WithLabelValues(projection).Set(0)
		e.log.Info("projection writing again", "projection", projection)
	}
}
