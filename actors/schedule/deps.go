package schedule

import (
	"context"
	"time"

	"kanade-backend/actors/exec"
	"kanade-backend/messages"
	"kanade-backend/messages/cron"
)

// The small interfaces below are everything a schedule actor touches
// outside itself, declared here by their consumer (the Nomad
// JobEvalDispatcher shape): the policy and the timer logic are tested
// against an in-process NATS and a real SQLite file through Backend, and
// nothing in this package knows about the application that wires it.

// Reader is what the scheduler reads from the store, in bulk and never
// inside a schedule actor's Receive: the fleet view's initial state when
// the scheduler starts, and the dedup state of the schedules that ask for
// it, many at a time.
type Reader interface {
	// LoadFleet reads the jobs mirror, every agent's last heartbeat and
	// every PC's mirrored groups.
	LoadFleet(ctx context.Context) (*FleetSnapshot, error)
	// Seeds returns the dedup state of the given schedules: for each of
	// their jobs the newest finished_at of a successful result per PC,
	// and for each schedule the PCs its fires of its job still wait for
	// (expected by such an exec, with no result from that PC yet).
	Seeds(ctx context.Context, keys []SeedKey, now time.Time) (*Seeds, error)
}

// SeedKey names a schedule whose dedup state is wanted, and its job.
type SeedKey struct {
	ScheduleID string
	JobID      string
}

// Seeds is the dedup state of several schedules.
type Seeds struct {
	// Latest maps job → PC → newest success.
	Latest map[string]map[string]time.Time
	// InFlight maps schedule → the PCs its fires still wait for.
	InFlight map[string][]InFlightPC
}

// InFlightPC is one PC a fire of the schedule is still waiting for.
type InFlightPC struct {
	PC     string
	ExecID string
	// Since is when the exec was fired; Until is when the PC may be fired
	// again even without a result (fire time + timeout + jitter + 60 s).
	Since, Until time.Time
}

// InFlightMargin is added to a job's timeout and jitter to bound how long a
// PC fired by a schedule is left alone while its result is awaited
// (behaviour.md §3, step 4): long enough for a result that is slow to
// reach the backend, short enough that a PC whose result was lost is fired
// again.
const InFlightMargin = 60 * time.Second

// Writer changes a schedule in KV on the scheduler's own behalf, and
// settles a fire the exec engine did not answer.
type Writer interface {
	// Settle finds out what became of an exec request that got no answer
	// in time (exec.Settle): it claims the request's exec id with a failed
	// row when no exec holds it, or reports the exec recorded under it.
	Settle(ctx context.Context, req *messages.ExecRequest, reason string, now time.Time) (exec.Settlement, error)

	// Disable writes the schedule back with enabled=false if, and only if,
	// its KV revision is still rev (compare-and-set), and returns the new
	// revision. When the revision moved on it returns an error wrapping
	// messages.ErrConflict together with the current version, or a nil
	// current version when the schedule has been deleted since.
	Disable(ctx context.Context, s messages.Schedule, rev uint64) (newRev uint64, current *Versioned, err error)
}

// Versioned is a schedule as stored at one KV revision.
type Versioned struct {
	Def messages.Schedule
	Rev uint64
	// Err is the validation error of Def; such a schedule does not run.
	Err error
	// expr is Def's parsed expression when valid, handed to the actor so
	// that loading a schedule parses its cron once.
	expr *cron.Expr
}

// Auditor publishes audit events (actors/audit.Publisher).
type Auditor interface {
	Publish(ctx context.Context, ev messages.AuditEvent) error
}
