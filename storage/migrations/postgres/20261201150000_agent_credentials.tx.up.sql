-- PostgreSQL version of the agent_credentials table: token_hash is BYTEA
-- (PostgreSQL has no BLOB type). Everything else is the shared file's.
-- Agent credentials (storage/agentauth): one row per NATS token an agent
-- may present. Kind 'pc' is minted for a known pc_id. Kind 'enrollment' is
-- minted for a PC not yet known: its pc_id comes from the first heartbeat
-- of the agent presenting it (bound_at), and from then on it is that PC's
-- credential like any other. Only the SHA-256 of a token is kept; the
-- token is shown once, when it is made. Revoking keeps the row (who had
-- access, when). Not a projection: --rebuild leaves it alone, and with the
-- database deleted every agent credential stops working.
CREATE TABLE agent_credentials (
    id           TEXT PRIMARY KEY,
    kind         TEXT NOT NULL CHECK (kind IN ('pc', 'enrollment')),
    pc_id        TEXT,
    token_hash   BYTEA NOT NULL,
    groups       TEXT NOT NULL DEFAULT '[]',
    created_at   TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    expires_at   TEXT,
    bound_at     TEXT,
    last_used_at TEXT,
    revoked_at   TEXT,
    revoked_by   TEXT
);
--bun:split
-- Every agent connection looks its token's hash up.
CREATE UNIQUE INDEX agent_credentials_token_hash ON agent_credentials (token_hash);
--bun:split
-- A PC's credentials, newest first (the agent page, revoke-all).
CREATE INDEX agent_credentials_pc ON agent_credentials (pc_id, created_at);
