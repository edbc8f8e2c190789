-- Projection bookkeeping (behaviour.md §1). PostgreSQL version: the KV
-- revision is BIGINT (INTEGER is 32-bit here).

-- Which expected PCs have answered an exec. The results projector sets these
-- columns on the first result of a PC and counts the PC only when the UPDATE
-- changed the row, so a redelivered or duplicate result, a second request_id
-- reaching the same PC, or a rebuild of execution_results never counts twice.
ALTER TABLE exec_expected ADD COLUMN request_id TEXT;
--bun:split
ALTER TABLE exec_expected ADD COLUMN exit_code INTEGER;
--bun:split
ALTER TABLE exec_expected ADD COLUMN answered_at TEXT;

--bun:split
-- KV revision of each PC's agent_groups value as mirrored into
-- agent_group_members, so a late or replayed watch event never overwrites a
-- newer membership (also the tombstone of a deleted key).
CREATE TABLE agent_group_revisions (
    pc_id       TEXT PRIMARY KEY,
    kv_revision BIGINT NOT NULL,
    updated_at  TEXT NOT NULL
);

--bun:split
-- One error row per stream message: a replay after a rebuild terminates the
-- same poison message again without recording it twice. Heartbeats come
-- from a core subscription (stream_seq 0) and are not deduplicated.
CREATE UNIQUE INDEX projection_errors_message ON projection_errors (projection, stream, stream_seq) WHERE stream_seq > 0;
