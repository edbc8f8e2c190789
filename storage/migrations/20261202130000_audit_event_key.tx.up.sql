-- The identity of an audit event's content (actor, action, target,
-- payload, occurred_at), a SHA-256 the audit projector computes. An event
-- published twice (a publisher that retried after a lost ack) is two
-- stream messages with the same content: the unique index makes the
-- second insert do nothing, which stays true with several writers (the
-- projector used to look for the content first and then insert, which two
-- writers both pass). Rows projected before this migration have no key;
-- --rebuild fills it in.
ALTER TABLE audit_log ADD COLUMN event_key TEXT;
--bun:split
CREATE UNIQUE INDEX audit_log_dedup ON audit_log (event_key) WHERE event_key IS NOT NULL;
