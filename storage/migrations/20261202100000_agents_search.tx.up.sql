-- Agent search (GET /api/agents?q=): a case-insensitive substring of pc_id
-- or hostname. A LIKE '%q%' reads every agents row, 270-500 ms at 100 000
-- agents; a trigram index answers it from the rows that hold every trigram
-- of q. SQLite: an FTS5 trigram table over agents (external content, kept
-- by the triggers below; case folded, so it finds a superset of what LIKE
-- finds and the query applies the LIKE on top). PostgreSQL: pg_trgm GIN
-- indexes (the file of the same name in postgres/).
--
-- The index refers to agents rows by rowid. The application never deletes
-- agents nor runs VACUUM (which may renumber the rowids of a table without
-- an INTEGER PRIMARY KEY); after a manual VACUUM run
-- INSERT INTO agents_search(agents_search) VALUES ('rebuild').
CREATE VIRTUAL TABLE agents_search USING fts5(
    pc_id, hostname, content = 'agents', content_rowid = 'rowid', tokenize = 'trigram'
);
--bun:split
INSERT INTO agents_search (agents_search) VALUES ('rebuild');
--bun:split
CREATE TRIGGER agents_search_insert AFTER INSERT ON agents BEGIN
    INSERT INTO agents_search (rowid, pc_id, hostname) VALUES (new.rowid, new.pc_id, new.hostname);
END;
--bun:split
CREATE TRIGGER agents_search_delete AFTER DELETE ON agents BEGIN
    INSERT INTO agents_search (agents_search, rowid, pc_id, hostname) VALUES ('delete', old.rowid, old.pc_id, old.hostname);
END;
--bun:split
-- Every heartbeat updates its agents row; only a change of pc_id or
-- hostname (the first non-null hostname) touches the index.
CREATE TRIGGER agents_search_update AFTER UPDATE OF pc_id, hostname ON agents
WHEN old.pc_id IS NOT new.pc_id OR old.hostname IS NOT new.hostname BEGIN
    INSERT INTO agents_search (agents_search, rowid, pc_id, hostname) VALUES ('delete', old.rowid, old.pc_id, old.hostname);
    INSERT INTO agents_search (rowid, pc_id, hostname) VALUES (new.rowid, new.pc_id, new.hostname);
END;
