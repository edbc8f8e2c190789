-- The audit list is ordered by (occurred_at, id) (newest first). SQLite's
-- indexes end in the rowid, which is id; PostgreSQL's do not, so it
-- sorted every filtered page (EXPLAIN: "Sort Key: occurred_at DESC, id
-- DESC"). The same indexes, ending in id.
DROP INDEX audit_log_occurred;
--bun:split
CREATE INDEX audit_log_occurred ON audit_log (occurred_at, id);
--bun:split
DROP INDEX audit_log_actor;
--bun:split
CREATE INDEX audit_log_actor ON audit_log (actor, occurred_at, id);
--bun:split
DROP INDEX audit_log_action;
--bun:split
CREATE INDEX audit_log_action ON audit_log (action, occurred_at, id);
