package schedule

import (
	"context"
	"time"

	"kanade-backend/messages"
	"kanade-backend/messages/cron"
)

// The small interfaces below are everything a schedule actor touches
// outside itself, declared here by their consumer (the Nomad
// JobEvalDispatcher shape): the policy and the timer logic are tested
// against an in-process NATS and a real SQLite file through Backend, and
// nothing in this package knows about the application that wires it.

// Reader is what a schedule reads: the job and the target at fire time,
// and the dedup state it rebuilds when it (re)starts.
type Reader interface {
	// Job returns the catalog entry at fire time; an error wrapping
	// messages.ErrNotFound when the job is not in the catalog.
	Job(ctx context.Context, jobID string) (messages.Manifest, error)
	// ResolveTargets returns the PCs a target means at now
	// (storage.ResolveTargetPCs).
	ResolveTargets(ctx context.Context, t messages.Target, now time.Time) ([]string, error)
	// LatestSuccesses returns, for one job, the newest finished_at of a
	// successful result per PC.
	LatestSuccesses(ctx context.Context, jobID string) (map[string]time.Time, error)
	// InFlight returns the PCs that fires of this schedule for this job
	// still wait for: expected by such an exec, with no result from that
	// PC yet.
	InFlight(ctx context.Context, scheduleID, jobID string, now time.Time) ([]InFlightPC, error)
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

// Writer changes a schedule in KV on the scheduler's own behalf.
type Writer interface {
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
