-- Target "all" reads the pc_ids of the alive agents in pc_id order
-- (storage.ResolveTargetPCs). SQLite scans the primary key's index for the
-- order and looked each row up in the table for last_heartbeat: at
-- 100 000 agents a random page read per agent, 0.5 s of CPU of an exec to
-- everyone (the budget of the whole exec API is 1 s). This index holds
-- both columns, so the read never leaves it; the agents list's online
-- filter (same condition, same order) reads it the same way.
CREATE INDEX agents_alive_by_pc ON agents (pc_id, last_heartbeat);
