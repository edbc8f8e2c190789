package storage

import (
	"encoding/json"

	"github.com/uptrace/bun"
)

// The row types below mirror the tables of the migrations one to one. JSON
// columns are json.RawMessage so that the projector stores exactly what it
// decoded and the API returns it without a second round of decoding.

// Agent is a row of agents.
type Agent struct {
	bun.BaseModel `bun:"table:agents"`

	PcID          string  `bun:"pc_id,pk" json:"pc_id"`
	Hostname      *string `bun:"hostname" json:"hostname"`
	OsFamily      *string `bun:"os_family" json:"os_family"`
	AgentVersion  string  `bun:"agent_version,notnull" json:"agent_version"`
	LastHeartbeat Time    `bun:"last_heartbeat,notnull" json:"last_heartbeat"`
	UpdatedAt     Time    `bun:"updated_at,notnull" json:"updated_at"`
}

// ExecutionResult is a row of execution_results, keyed by (request_id, pc_id).
type ExecutionResult struct {
	bun.BaseModel `bun:"table:execution_results"`

	RequestID  string  `bun:"request_id,pk" json:"request_id"`
	PcID       string  `bun:"pc_id,pk" json:"pc_id"`
	ExecID     *string `bun:"exec_id" json:"exec_id"`
	JobID      *string `bun:"job_id" json:"job_id"`
	ExitCode   int     `bun:"exit_code,notnull" json:"exit_code"`
	Stdout     string  `bun:"stdout,notnull" json:"stdout"`
	Stderr     string  `bun:"stderr,notnull" json:"stderr"`
	StartedAt  Time    `bun:"started_at,notnull" json:"started_at"`
	FinishedAt Time    `bun:"finished_at,notnull" json:"finished_at"`
	RecordedAt Time    `bun:"recorded_at,notnull" json:"recorded_at"`
	StreamSeq  uint64  `bun:"stream_seq,notnull" json:"-"`
}

// Execution statuses (behaviour.md §1, exec progress).
const (
	ExecPending   = "pending"
	ExecRunning   = "running"
	ExecCompleted = "completed"
	ExecFailed    = "failed"
	ExecExpired   = "expired"
	ExecCancelled = "cancelled"
	// ExecHeld: a gated rollout wave was not published because the
	// earlier waves failed its gate; the exec engine sets it and takes it
	// back (resume, abort), and the projectors leave it alone.
	ExecHeld = "held"
)

// Execution is a row of executions: one firing of a job at a target.
type Execution struct {
	bun.BaseModel `bun:"table:executions"`

	ExecID       string          `bun:"exec_id,pk" json:"exec_id"`
	JobID        string          `bun:"job_id,notnull" json:"job_id"`
	Version      string          `bun:"version,notnull" json:"version"`
	InitiatedBy  string          `bun:"initiated_by,notnull" json:"initiated_by"`
	ScheduleID   *string         `bun:"schedule_id" json:"schedule_id"`
	Plan         json.RawMessage `bun:"plan,type:text,notnull" json:"plan"`
	Subjects     json.RawMessage `bun:"subjects,type:text,notnull" json:"subjects"`
	TargetCount  int             `bun:"target_count,notnull" json:"target_count"`
	ExpectedPcs  int             `bun:"expected_pcs,notnull" json:"expected_pcs"`
	SuccessCount int             `bun:"success_count,notnull" json:"success_count"`
	FailureCount int             `bun:"failure_count,notnull" json:"failure_count"`
	Status       string          `bun:"status,notnull" json:"status"`
	Error        *string         `bun:"error" json:"error,omitempty"`
	TimeoutSecs  uint64          `bun:"timeout_secs,notnull" json:"timeout_secs"`
	JitterSecs   *uint64         `bun:"jitter_secs" json:"jitter_secs"`
	CreatedAt    Time            `bun:"created_at,notnull" json:"created_at"`
	DeadlineAt   Time            `bun:"deadline_at,notnull" json:"deadline_at"`
	FinishedAt   Time            `bun:"finished_at" json:"finished_at"`
	UpdatedAt    Time            `bun:"updated_at,notnull" json:"updated_at"`

	// Manifest is the job as fired, a snapshot that delayed waves publish.
	Manifest json.RawMessage `bun:"manifest,type:text" json:"-"`
}

// PublishedRequest is a row of exec_requests: a request_id an exec
// published (messages.ExecRequest is the actor message that asks for an
// exec).
type PublishedRequest struct {
	bun.BaseModel `bun:"table:exec_requests"`

	RequestID   string `bun:"request_id,pk"`
	ExecID      string `bun:"exec_id,notnull"`
	Subject     string `bun:"subject,notnull"`
	PublishedAt Time   `bun:"published_at"`
}

// ExecExpected is a row of exec_expected: a PC an exec waits for. The
// answer columns are set by the results projector on the PC's first result
// (nil / zero until then).
type ExecExpected struct {
	bun.BaseModel `bun:"table:exec_expected"`

	ExecID     string  `bun:"exec_id,pk"`
	PcID       string  `bun:"pc_id,pk"`
	RequestID  *string `bun:"request_id"`
	ExitCode   *int    `bun:"exit_code"`
	AnsweredAt Time    `bun:"answered_at"`
}

// Wave states.
const (
	WavePending   = "pending"
	WavePublished = "published"
	WaveCancelled = "cancelled"
	WaveFailed    = "failed"
	// WaveHeld: not published, waiting for an operator (its gate was not
	// met, or an earlier wave of its exec is held).
	WaveHeld = "held"
)

// ExecWave is a row of exec_waves: one rollout wave of an exec.
type ExecWave struct {
	bun.BaseModel `bun:"table:exec_waves"`

	ExecID      string  `bun:"exec_id,pk" json:"exec_id"`
	WaveIndex   int     `bun:"wave_index,pk" json:"wave_index"`
	GroupName   string  `bun:"group_name,notnull" json:"group"`
	DueAt       Time    `bun:"due_at,notnull" json:"due_at"`
	State       string  `bun:"state,notnull" json:"state"`
	RequestID   *string `bun:"request_id" json:"request_id"`
	PublishedAt Time    `bun:"published_at" json:"published_at"`
	// Gate columns (rollout.gate): Gated says the wave is judged on the
	// earlier waves' answers before it goes out; JudgeAt is set while a
	// due wave waits for those answers; Reason says why it is held;
	// ResumedBy who published it past its gate. ExpectedPcs is how many
	// PCs the wave expected when it went out.
	Gated       bool    `bun:"gated,notnull" json:"gated,omitempty"`
	JudgeAt     Time    `bun:"judge_at" json:"judge_at,omitzero"`
	Reason      *string `bun:"reason" json:"reason,omitempty"`
	ResumedBy   *string `bun:"resumed_by" json:"resumed_by,omitempty"`
	ExpectedPcs *int    `bun:"expected_pcs" json:"expected_pcs,omitempty"`
}

// InventoryFact is a row of inventory_facts.
type InventoryFact struct {
	bun.BaseModel `bun:"table:inventory_facts"`

	PcID        string          `bun:"pc_id,pk" json:"pc_id"`
	JobID       string          `bun:"job_id,pk" json:"job_id"`
	Facts       json.RawMessage `bun:"facts,type:text,notnull" json:"facts"`
	Display     json.RawMessage `bun:"display,type:text,notnull" json:"display"`
	Summary     json.RawMessage `bun:"summary,type:text" json:"summary"`
	CollectedAt Time            `bun:"collected_at,notnull" json:"collected_at"`
	RecordedAt  Time            `bun:"recorded_at,notnull" json:"recorded_at"`
}

// AuditRow is a row of audit_log.
type AuditRow struct {
	bun.BaseModel `bun:"table:audit_log"`

	ID         int64           `bun:"id,pk,autoincrement" json:"id"`
	StreamSeq  uint64          `bun:"stream_seq,notnull,unique" json:"-"`
	Actor      string          `bun:"actor,notnull" json:"actor"`
	Action     string          `bun:"action,notnull" json:"action"`
	Target     *string         `bun:"target" json:"target"`
	Payload    json.RawMessage `bun:"payload,type:text,notnull" json:"payload"`
	OccurredAt Time            `bun:"occurred_at,notnull" json:"occurred_at"`
	RecordedAt Time            `bun:"recorded_at,notnull" json:"-"`
	// EventKey identifies the event's content (actor/projector's auditKey),
	// so that an event published twice is stored once; NULL on rows
	// projected before it existed.
	EventKey *string `bun:"event_key" json:"-"`
}

// ProjectionError is a row of projection_errors: a message a projector could
// not apply and terminated.
type ProjectionError struct {
	bun.BaseModel `bun:"table:projection_errors"`

	ID         int64  `bun:"id,pk,autoincrement" json:"id"`
	Projection string `bun:"projection,notnull" json:"projection"`
	Stream     string `bun:"stream,notnull" json:"stream"`
	StreamSeq  uint64 `bun:"stream_seq,notnull" json:"stream_seq"`
	Subject    string `bun:"subject,notnull" json:"subject"`
	Error      string `bun:"error,notnull" json:"error"`
	Payload    []byte `bun:"payload" json:"payload"`
	RecordedAt Time   `bun:"recorded_at,notnull" json:"recorded_at"`
}

// Checkpoint is a row of projection_checkpoints.
type Checkpoint struct {
	bun.BaseModel `bun:"table:projection_checkpoints"`

	Projection string `bun:"projection,pk"`
	Stream     string `bun:"stream,notnull"`
	LastSeq    uint64 `bun:"last_seq,notnull"`
	UpdatedAt  Time   `bun:"updated_at,notnull"`
}

// GroupMember is a row of agent_group_members (mirror of KV agent_groups).
type GroupMember struct {
	bun.BaseModel `bun:"table:agent_group_members"`

	PcID      string `bun:"pc_id,pk"`
	GroupName string `bun:"group_name,pk"`
}

// DecommissionedPC is a row of decommissioned_pcs: a PC an operator
// decommissioned, with its last heartbeat then (nil: it never sent one).
type DecommissionedPC struct {
	bun.BaseModel `bun:"table:decommissioned_pcs"`

	PcID             string  `bun:"pc_id,pk" json:"pc_id"`
	Hostname         *string `bun:"hostname" json:"hostname"`
	LastHeartbeat    *Time   `bun:"last_heartbeat" json:"last_heartbeat"`
	DecommissionedAt Time    `bun:"decommissioned_at,notnull" json:"decommissioned_at"`
	DecommissionedBy string  `bun:"decommissioned_by,notnull" json:"decommissioned_by"`
}

// GroupRevision is a row of agent_group_revisions: the KV revision of the
// agent_groups value mirrored for one PC.
type GroupRevision struct {
	bun.BaseModel `bun:"table:agent_group_revisions"`

	PcID       string `bun:"pc_id,pk"`
	KVRevision uint64 `bun:"kv_revision,notnull"`
	UpdatedAt  Time   `bun:"updated_at,notnull"`
}

// Job is a row of jobs (mirror of KV jobs).
type Job struct {
	bun.BaseModel `bun:"table:jobs"`

	ID           string          `bun:"id,pk"`
	Version      string          `bun:"version,notnull"`
	Description  *string         `bun:"description"`
	HasInventory bool            `bun:"has_inventory,notnull"`
	Manifest     json.RawMessage `bun:"manifest,type:text,notnull"`
	KVRevision   uint64          `bun:"kv_revision,notnull"`
	UpdatedAt    Time            `bun:"updated_at,notnull"`
}

// ScheduleRow is a row of schedules (mirror of KV schedules).
type ScheduleRow struct {
	bun.BaseModel `bun:"table:schedules"`

	ID         string          `bun:"id,pk"`
	JobID      string          `bun:"job_id,notnull"`
	Enabled    bool            `bun:"enabled,notnull"`
	Definition json.RawMessage `bun:"definition,type:text,notnull"`
	KVRevision uint64          `bun:"kv_revision,notnull"`
	UpdatedAt  Time            `bun:"updated_at,notnull"`
}
