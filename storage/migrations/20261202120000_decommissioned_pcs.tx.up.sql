-- Decommissioned PCs (DELETE /api/agents/{pc_id}): the PC's agents row and
-- groups are removed, its history (results, executions, inventory, audit)
-- stays. The row keeps what the PC was and the last heartbeat it had, so
-- that the scheduler leaves it out of every target and of the "done"
-- judgement of once_per_pc / once_per_target, while a heartbeat newer
-- than last_heartbeat (the PC really runs again) makes it known again.
-- Not a projection: --rebuild leaves it alone.
CREATE TABLE decommissioned_pcs (
    pc_id             TEXT PRIMARY KEY,
    hostname          TEXT,
    last_heartbeat    TEXT,
    decommissioned_at TEXT NOT NULL,
    decommissioned_by TEXT NOT NULL
);
