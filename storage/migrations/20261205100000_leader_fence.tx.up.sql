-- The leader's fencing token (issue 13, scaleout.md §0.3). One row: the
-- lease revision of the newest leader that took over. A scheduled fire's
-- transaction reads it (FOR SHARE on PostgreSQL) and refuses to record
-- the fire when it is above the token the fire was issued under, so that
-- a paused or partitioned former leader never fires once a newer one took
-- over. A new leader raises it before it seeds any schedule state; on
-- PostgreSQL that UPDATE waits for the former leader's in-flight fires.
CREATE TABLE leader_fence (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    token BIGINT NOT NULL
);
--bun:split
INSERT INTO leader_fence (id, token) VALUES (1, 0);
