package messages

// The backend's own JetStream resources for running several replicas
// (spec scaleout.md §3.8). Agents never see them: their permissions
// (storage/agentauth) allow neither subject.
const (
	// StreamLive holds every replica's post-commit live events, already
	// coalesced into the frames of /api/events; each replica's live hub
	// follows it, and its sequence is the SSE event id. Not under
	// "events.>", which the EVENTS stream captures.
	StreamLive = "KANADE_LIVE"
	// SubjectLivePrefix + the event name ("result", "agent", ...) is the
	// subject of one live event; SubjectLiveAll matches them all.
	SubjectLivePrefix = "kanade.live."
	SubjectLiveAll    = "kanade.live.>"
	// BucketReplicas is the replica registry: one key per running backend
	// (its replica id), refreshed every few seconds and expiring with the
	// bucket's TTL when a replica dies.
	BucketReplicas = "kanade_replicas"
	// BucketLeases holds the leader lease (cmd/internal/lease): whoever
	// writes its key runs the scheduler and the projectors, so only the
	// backends may write it.
	BucketLeases = "kanade_leases"
)
