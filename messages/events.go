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

// AgentDecommissioned is published by the fleet API after an operator
// decommissioned a PC (DELETE /api/agents/{pc_id}): its agents row and
// groups are gone, its history stays. LastHeartbeat is the newest
// heartbeat the store had for it (zero when it never sent one): a
// heartbeat newer than that means the PC is running again and known again.
type AgentDecommissioned struct {
	PcID          string
	LastHeartbeat time.Time
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
	// Waves is set by the exec engine when a rollout wave of the exec
	// changed (published, judged, held, resumed, cancelled): every wave
	// with its state and counts. Nil in the projectors' events.
	Waves []WaveProgress
}

// WaveProgress is one rollout wave of an exec as the live events and the
// execution page show it.
type WaveProgress struct {
	Index int    `json:"wave_index"`
	Group string `json:"group"`
	// State is pending, published, held, cancelled or failed.
	State string    `json:"state"`
	DueAt time.Time `json:"due_at"`
	// Gated waves are judged on the earlier waves' answers; JudgeAt is set
	// while a due one waits for them.
	Gated   bool       `json:"gated"`
	JudgeAt *time.Time `json:"judge_at"`
	Reason  *string    `json:"reason"`
	// ResumedBy names the operator who published it past its gate.
	ResumedBy *string `json:"resumed_by"`
	// Expected is null until the wave is published; Success and Failure
	// count the answers to its Command.
	Expected *int `json:"expected_pcs"`
	Success  int  `json:"success"`
	Failure  int  `json:"failure"`
}

// ExecsRestored is published by the results projector after it wrote
// executions back from the EXEC stream into a wiped database; the exec
// engine reloads the rollout waves still due.
type ExecsRestored struct {
	Execs int
}

// KVMirrored is published by a KV mirror projector after each committed
// batch of watch entries (jobs, schedules, agent_groups), in watch order.
// The scheduler's fleet view follows jobs and group memberships through
// it instead of reading the store at every tick.
type KVMirrored struct {
	Bucket  string
	Entries []KVMirroredEntry
}

// KVMirroredEntry is one applied KV entry. Value is nil for a delete or
// purge marker.
type KVMirroredEntry struct {
	Key     string
	Rev     uint64
	Value   []byte
	Deleted bool
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
// sender (Request/RequestFuture), carrying the request's CorrelationID.
type ExecRequest struct {
	// CorrelationID is echoed in the reply, so that a sender that makes
	// requests over time (a schedule actor) tells the answer it waits for
	// from a late answer to an earlier request. Zero for a sender that
	// waits on a future.
	CorrelationID uint64
	// ExecID, when set, is the exec's id: a scheduled fire's is derived
	// from its schedule and instant (ScheduledExecID), so a retried or
	// replayed tick names the same exec. The engine records at most one
	// exec per id; a request whose id is already recorded publishes
	// nothing and is answered with ExecReply.Existing. Empty: a new random
	// id.
	ExecID string
	JobID  string
	Plan   FanoutPlan
	// Manifest is the job as the caller read it at fire time (the
	// scheduler reads the jobs mirror); nil: the engine reads KV jobs.
	Manifest *Manifest
	// Resolved says Expected holds the PCs the caller resolved the plan's
	// target to at fire time (the scheduler's fleet view), so the engine
	// does not resolve them again. Ignored for a plan with rollout waves,
	// whose PCs are resolved wave by wave.
	Resolved bool
	Expected []string
	// Actor is ActorOperator or ActorScheduler (audit actor).
	Actor string
	// InitiatedBy is stored on the executions row: "operator:<sub>" or
	// "scheduler:<schedule id>".
	InitiatedBy string
	// ScheduleID is set for scheduler fires.
	ScheduleID string
	// Fence, when non-zero, is the fencing token of the leader term the
	// fire was issued in (the leader lease's revision): the engine records
	// the exec only if no newer leader has raised the stored token past it
	// (storage.CheckFence), and a refused fire writes and publishes
	// nothing. Zero: not fenced (operator requests).
	Fence uint64
	// AuditExtra is merged into the exec audit payload without overwriting
	// (sub, source).
	AuditExtra map[string]any
}

// ExecReply answers an ExecRequest. Err wraps one of the error kinds
// (ErrNotFound, ErrInvalid, ErrUnavailable) with an operator-facing text.
type ExecReply struct {
	// CorrelationID is the request's.
	CorrelationID uint64
	Response      ExecResponse
	// Existing is set when the request's ExecID was recorded before: this
	// request recorded and published nothing, and Response describes the
	// exec recorded under that id (whose Commands went out, or not, with
	// the request that recorded it).
	Existing bool
	Err      error
}
