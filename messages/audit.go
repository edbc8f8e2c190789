package messages

import (
	"bytes"
	"encoding/json"
	"strings"
	"time"
)

// Audit actors.
const (
	// ActorOperator is used for API calls.
	ActorOperator = "operator"
	// ActorScheduler is used for schedule fires and auto-disable.
	ActorScheduler = "scheduler"
	// ActorEnrollment is used when an enrollment token is bound to a PC.
	ActorEnrollment = "enrollment"
)

// Audit actions (wire.md §4).
const (
	ActionExec              = "exec"
	ActionJobUpsert         = "job_upsert"
	ActionJobDelete         = "job_delete"
	ActionScheduleUpsert    = "schedule_upsert"
	ActionScheduleDelete    = "schedule_delete"
	ActionScheduleCompleted = "schedule_completed"
	ActionConfigPut         = "config_put"
	ActionConfigDelete      = "config_delete"
	ActionGroupsPut         = "groups_put"
	ActionScriptRevoke      = "script_revoke"
	ActionScriptUnrevoke    = "script_unrevoke"
	ActionExecKill          = "exec_kill"
	ActionAgentPublish      = "agent_publish"
	ActionAgentRollout      = "agent_rollout"
	ActionReleaseDelete     = "release_delete"
)

// Audit actions of the operators API (beyond wire.md §4): an operator
// created, its role changed, its token revoked or replaced. Their target is
// the operator's name; no payload ever carries a token.
const (
	ActionOperatorCreate = "operator_create"
	ActionOperatorRole   = "operator_role"
	ActionOperatorRevoke = "operator_revoke"
	ActionOperatorToken  = "operator_token"
)

// Audit actions of agent credentials (beyond wire.md §4): per-PC NATS
// credentials minted and revoked, enrollment tokens created and revoked,
// and an enrollment token bound to the PC that presented it. Their target
// is the pc_id (or the enrollment id); no payload ever carries a token.
const (
	ActionCredentialCreate = "credential_create"
	ActionCredentialRevoke = "credential_revoke"
	ActionEnrollmentCreate = "enrollment_create"
	ActionEnrollmentRevoke = "enrollment_revoke"
	ActionAgentEnrolled    = "agent_enrolled"
)

// ActionAgentDecommission records DELETE /api/agents/{pc_id} (beyond
// wire.md §4): the PC's agents row and groups removed, its history kept.
// Target is the pc_id; the payload has its groups, hostname and last
// heartbeat.
const ActionAgentDecommission = "agent_decommission"

// AuditEvent records one state-changing action; it is published on
// Subject() and captured by the AUDIT stream.
type AuditEvent struct {
	Actor  string `json:"actor"`
	Action string `json:"action"`
	// Target is the object acted on; null when none, always emitted.
	Target *string `json:"target"`
	// Payload is a JSON object, {} when empty. Decoded numbers are
	// json.Number so that ids and sequence numbers keep every digit.
	Payload    map[string]any `json:"payload"`
	OccurredAt time.Time      `json:"occurred_at"`
}

// MarshalJSON emits {} for a nil payload and the time in UTC.
func (e AuditEvent) MarshalJSON() ([]byte, error) {
	type alias AuditEvent
	a := alias(e)
	if a.Payload == nil {
		a.Payload = map[string]any{}
	}
	a.OccurredAt = a.OccurredAt.UTC()
	return json.Marshal(a)
}

// UnmarshalJSON keeps payload numbers exact and normalises the time to
// UTC.
func (e *AuditEvent) UnmarshalJSON(b []byte) error {
	type alias AuditEvent
	var a alias
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&a); err != nil {
		return err
	}
	if a.Payload == nil {
		a.Payload = map[string]any{}
	}
	a.OccurredAt = a.OccurredAt.UTC()
	*e = AuditEvent(a)
	return nil
}

// SetPayloadDefault sets payload[key] unless the key is already present:
// the API adds sub and source to operator events without ever overwriting
// what the handler recorded.
func (e *AuditEvent) SetPayloadDefault(key string, value any) {
	if e.Payload == nil {
		e.Payload = map[string]any{}
	}
	if _, ok := e.Payload[key]; !ok {
		e.Payload[key] = value
	}
}

// Subject is audit.<actor>.<action>[.<target>]. Every token is sanitised
// (characters outside [A-Za-z0-9_=-] become '_') so that a target such as
// a version "1.2.0" or a file name cannot add subject levels or wildcards;
// an empty target is left out.
func (e AuditEvent) Subject() string {
	var b strings.Builder
	b.WriteString("audit.")
	b.WriteString(subjectToken(e.Actor))
	b.WriteByte('.')
	b.WriteString(subjectToken(e.Action))
	if e.Target != nil && *e.Target != "" {
		b.WriteByte('.')
		b.WriteString(sanitizeToken(*e.Target))
	}
	return b.String()
}

// subjectToken sanitises a required token; an empty one becomes "_" so
// that the subject never has an empty level.
func subjectToken(s string) string {
	if s == "" {
		return "_"
	}
	return sanitizeToken(s)
}
