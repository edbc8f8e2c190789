package messages

import "time"

// Actor messages. Everything below travels between actors inside the
// backend, never on the wire.
//
// Events (the *ed types) are published as pointers on the actor system's
// EventStream after the fact they describe is committed to the store, so a subscriber
// that reads the store on receipt sees it. EventStream calls subscribers
// synchronously on the publisher's goroutine: a subscriber must only
// forward the event (Root.Send to its actor) and never block. Events are
// batched where volume is high (results, heartbeats).

// ResultsProjected is published by the results projector after each
// committed batch.
type ResultsProjected struct {
	Results []ProjectedResult
}

// ProjectedResult is one ExecResult as stored.
type ProjectedResult struct {
	RequestID string
	PcID      string
	// ExecID is the exec the request_id belongs to; "" for ad-hoc runs.
	ExecID string
	// JobID is the result's manifest_id; "" when absent.
	JobID      string
	ExitCode   int
	FinishedAt time.Time
}

// AgentsSeen is published by the heartbeat projector after each flush,
// one entry per PC (coalesced: the newest heartbeat of the batch).
type AgentsSeen struct {
	Agents []AgentSeen
}

// AgentSeen is one PC's newest heartbeat in a flush.
type AgentSeen struct {
	PcID         string
	At           time.Time
	AgentVersion string
	// New is true when the PC had no row before this flush.
	New bool
}

// ExecProgressed is published whenever an exec's counters or status change
// (created, a result attributed, a wave published, expired, cancelled).
type ExecProgressed struct {
	ExecID   string
	JobID    string
	Status   string
	Expected int
	Success  int
	Failure  int
	At       time.Time
}

// ExecsRestored is published by the results projector after it wrote
// executions back from the EXEC stream into a wiped database; the exec
// engine reloads the rollout waves still due.
type ExecsRestored struct {
	Execs int
}

// Tick outcomes of a schedule (behaviour.md §3, step 5).
const (
	TickFired   = "fired"
	TickSkipped = "skipped"
	TickMissed  = "missed"
	TickFailed  = "failed"
)

// ScheduleTicked is published by a schedule actor after every tick.
type ScheduleTicked struct {
	ScheduleID string
	JobID      string
	Outcome    string // TickFired, TickSkipped, TickMissed, TickFailed
	Reason     string
	ExecID     string
	// Pcs is the number of PCs fired at (FirePcs) or expected (whole
	// target); 0 when skipped.
	Pcs int
	// Instant is the cron instant; At is when the tick ran.
	Instant time.Time
	At      time.Time
}

// AuditProjected is published by the audit projector for each new row.
type AuditProjected struct {
	ID    int64
	Event AuditEvent
}

// ExecRequest asks the exec engine to fire a job (POST /api/exec, a
// schedule tick, rerun-failed). The engine replies with *ExecReply to the
// sender (Request/RequestFuture).
type ExecRequest struct {
	JobID string
	Plan  FanoutPlan
	// Actor is ActorOperator or ActorScheduler (audit actor).
	Actor string
	// InitiatedBy is stored on the executions row: "operator:<sub>" or
	// "scheduler:<schedule id>".
	InitiatedBy string
	// ScheduleID is set for scheduler fires.
	ScheduleID string
	// AuditExtra is merged into the exec audit payload without overwriting
	// (sub, source).
	AuditExtra map[string]any
}

// ExecReply answers an ExecRequest. Err wraps one of the error kinds
// (ErrNotFound, ErrInvalid, ErrUnavailable) with an operator-facing text.
type ExecReply struct {
	Response ExecResponse
	Err      error
}
