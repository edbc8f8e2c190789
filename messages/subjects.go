package messages

// NATS subjects (wire.md §2). Functions that build a subject from user
// data do not validate it: validate ids with ValidateToken at the edge so
// that a malformed subject is rejected with a 400 instead of published.
const (
	// SubjectCommandsAll reaches every agent.
	SubjectCommandsAll = "commands.all"

	SubjectHeartbeatAll = "heartbeat.>"
	SubjectResultsAll   = "results.>"
	SubjectAuditAll     = "audit.>"
	SubjectInventoryAll = "inventory.>"
	SubjectEventsAll    = "events.>"
	// SubjectCommandsExecAll is what the EXEC stream captures: the exec
	// engine's records (storage/execrecord), which no agent subscribes to,
	// not Commands. It is not commands.> on purpose: agents of this
	// generation do not replay Commands, so capturing them would only grow
	// storage.
	SubjectCommandsExecAll = "commands.exec.>"
)

// CommandsGroupSubject reaches the agents whose agent_groups contain group.
func CommandsGroupSubject(group string) string { return "commands.group." + group }

// CommandsPCSubject reaches one agent.
func CommandsPCSubject(pcID string) string { return "commands.pc." + pcID }

// ResultsSubject is where agents publish the results of one request. It is
// captured by the RESULTS stream, so never use request/reply on it:
// subscribe and flush before publishing the Command.
func ResultsSubject(requestID string) string { return "results." + requestID }

// HeartbeatSubject is where one agent publishes its heartbeats.
func HeartbeatSubject(pcID string) string { return "heartbeat." + pcID }

// KillSubject stops every running Command whose job_id is execID (the exec
// id, not the catalog job id). The message body is empty.
func KillSubject(execID string) string { return "kill." + execID }

// LogsFetchSubject asks one agent for its log tail (request/reply).
func LogsFetchSubject(pcID string) string { return "logs.fetch." + pcID }

// JetStream streams (wire.md §3).
const (
	StreamInventory = "INVENTORY"
	StreamResults   = "RESULTS"
	StreamExec      = "EXEC"
	StreamEvents    = "EVENTS"
	StreamAudit     = "AUDIT"
)

// KV buckets and the object store (wire.md §3).
const (
	BucketScriptCurrent = "script_current"
	BucketScriptStatus  = "script_status"
	BucketAgentsState   = "agents_state"
	BucketAgentConfig   = "agent_config"
	BucketAgentGroups   = "agent_groups"
	BucketSchedules     = "schedules"
	BucketJobs          = "jobs"

	ObjectStoreAgentReleases = "agent_releases"
)

// Raw values of the script_status bucket. A missing key means active.
const (
	ScriptStatusActive  = "ACTIVE"
	ScriptStatusRevoked = "REVOKED"
)

// Keys of the agent_config bucket.
const ConfigKeyGlobal = "global"

// ConfigKeyGroup is the agent_config key of a group's scope.
func ConfigKeyGroup(group string) string { return "groups." + group }

// ConfigKeyPC is the agent_config key of one PC's scope.
func ConfigKeyPC(pcID string) string { return "pcs." + pcID }
