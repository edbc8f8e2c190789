package messages

import (
	"encoding/json"
	"errors"
	"time"
)

// Command is what the backend publishes on commands.* for agents to run
// (wire.md §4).
type Command struct {
	// ID is the job (manifest) id, also the key into script_current and
	// script_status.
	ID string `json:"id"`
	// Version is the job version; an agent drops the command when
	// script_current[ID] differs.
	Version string `json:"version"`
	// RequestID is fresh for every published message; results come back
	// on results.<RequestID>.
	RequestID string `json:"request_id"`
	// JobID is the exec id (same for every Command of one exec), null when
	// none. Agents listen on kill.<JobID> while running.
	JobID       *string `json:"job_id"`
	Shell       Shell   `json:"shell"`
	Script      string  `json:"script"`
	TimeoutSecs uint64  `json:"timeout_secs"`
	// JitterSecs makes the agent sleep a random whole number of seconds in
	// [0, JitterSecs) first; null when none.
	JitterSecs *uint64 `json:"jitter_secs"`
	// RunAs is always emitted; an unset value is sent as "system" so that
	// agents never have to guess.
	RunAs RunAs  `json:"run_as"`
	Cwd   string `json:"cwd,omitempty"`
}

// MarshalJSON emits run_as explicitly even when unset.
func (c Command) MarshalJSON() ([]byte, error) {
	type alias Command
	a := alias(c)
	a.RunAs = a.RunAs.orDefault()
	return json.Marshal(a)
}

// UnmarshalJSON fills run_as = system for older senders that omit it.
func (c *Command) UnmarshalJSON(b []byte) error {
	type alias Command
	var a alias
	if err := json.Unmarshal(b, &a); err != nil {
		return err
	}
	a.RunAs = a.RunAs.orDefault()
	*c = Command(a)
	return nil
}

// ExecResult is what an agent publishes on results.<request_id> after each
// run. A broadcast Command is answered by many PCs with the same
// RequestID, so a result's identity is (RequestID, PcID).
type ExecResult struct {
	RequestID string `json:"request_id"`
	PcID      string `json:"pc_id"`
	// ExitCode is -1 when the script was killed or timed out.
	ExitCode   int       `json:"exit_code"`
	Stdout     string    `json:"stdout"`
	Stderr     string    `json:"stderr"`
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at"`
	// ManifestID is the job id; omitted for ad-hoc runs.
	ManifestID *string `json:"manifest_id,omitempty"`
}

// MarshalJSON emits timestamps in UTC (RFC 3339, nanoseconds when
// non-zero), whatever zone the caller's time.Time carries.
func (r ExecResult) MarshalJSON() ([]byte, error) {
	type alias ExecResult
	a := alias(r)
	a.StartedAt = a.StartedAt.UTC()
	a.FinishedAt = a.FinishedAt.UTC()
	return json.Marshal(a)
}

// UnmarshalJSON accepts any RFC 3339 offset and normalises to UTC, so
// that stored and compared times are in one canonical form.
func (r *ExecResult) UnmarshalJSON(b []byte) error {
	type alias ExecResult
	var a alias
	if err := json.Unmarshal(b, &a); err != nil {
		return err
	}
	a.StartedAt = a.StartedAt.UTC()
	a.FinishedAt = a.FinishedAt.UTC()
	*r = ExecResult(a)
	return nil
}

// Succeeded reports whether the run exited with code 0.
func (r *ExecResult) Succeeded() bool { return r.ExitCode == 0 }

// Heartbeat is what an agent publishes on heartbeat.<pc_id> every
// heartbeat_interval.
type Heartbeat struct {
	PcID string `json:"pc_id"`
	// At is the agent's clock, not the backend's.
	At           time.Time `json:"at"`
	AgentVersion string    `json:"agent_version"`
	// Hostname and OsFamily are omitted by older agents.
	Hostname *string `json:"hostname,omitempty"`
	OsFamily *string `json:"os_family,omitempty"`
}

// MarshalJSON emits At in UTC.
func (h Heartbeat) MarshalJSON() ([]byte, error) {
	type alias Heartbeat
	a := alias(h)
	a.At = a.At.UTC()
	return json.Marshal(a)
}

// UnmarshalJSON normalises At to UTC.
func (h *Heartbeat) UnmarshalJSON(b []byte) error {
	type alias Heartbeat
	var a alias
	if err := json.Unmarshal(b, &a); err != nil {
		return err
	}
	a.At = a.At.UTC()
	*h = Heartbeat(a)
	return nil
}

// LogsFetchRequest is the body of a request on logs.fetch.<pc_id>; the
// agent answers with raw text.
type LogsFetchRequest struct {
	TailLines int `json:"tail_lines"`
}

// Ad-hoc runs (POST /api/run) carry no catalog job; upstream sends them
// under this id and version (see testdata vector command-adhoc.json).
const (
	AdhocJobID   = "adhoc-run"
	AdhocVersion = "0.0.0"
)

// Validate checks what an agent needs to run c: a job id that is a valid
// token, a request id, a known shell and account mode.
func (c *Command) Validate() error {
	if err := ValidateToken("job id", c.ID); err != nil {
		return err
	}
	if c.RequestID == "" {
		return errors.New("request_id is required")
	}
	if err := validateShell(c.Shell); err != nil {
		return err
	}
	return validateRunAs(c.RunAs)
}
