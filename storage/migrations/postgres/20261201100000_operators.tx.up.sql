-- PostgreSQL version of the operators table: token_hash is BYTEA (PostgreSQL
-- has no BLOB type). Everything else is the shared file's.
-- Operators: one row per person who uses the API with their own token
-- (http/operators). Only the SHA-256 of the token is kept; the token itself
-- is shown once, when it is made. Revoking keeps the row, so the names in
-- the audit trail keep meaning one person and a revoked token is refused
-- as revoked. This table is not a projection: --rebuild leaves it alone,
-- and with the database deleted every operator token stops working (the
-- generated admin token is entered again from <data-dir>/admin.token).
CREATE TABLE operators (
    name       TEXT PRIMARY KEY,
    role       TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    token_hash BYTEA NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    revoked_at TEXT,
    revoked_by TEXT
);
--bun:split
-- Every API request with an operator token looks its hash up.
CREATE UNIQUE INDEX operators_token_hash ON operators (token_hash);
