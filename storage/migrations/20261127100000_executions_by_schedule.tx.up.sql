-- The scheduler reads, at start, the last fire of every schedule (catch-up
-- after downtime) and, when a schedule actor (re)starts, the PCs its recent
-- fires still wait for (in-flight suppression). Both filter executions by
-- schedule_id; without this index each is a full scan of executions.
CREATE INDEX executions_schedule ON executions (schedule_id, created_at);
