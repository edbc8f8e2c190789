-- PostgreSQL version of the initial read model (the shared file is the
-- SQLite one, already applied on existing databases and never edited).
-- Differences, and why:
--   * stream sequences and KV revisions are BIGINT: INTEGER is 32-bit here
--     (Go uint64 in the models); timeout_secs and jitter_secs too;
--   * the flags has_inventory and enabled are BOOLEAN: Go bool is sent as
--     TRUE/FALSE, which an INTEGER column refuses (42804);
--   * audit_log.id and projection_errors.id are identity columns instead of
--     AUTOINCREMENT (a syntax error here); both never reuse an id;
--   * projection_errors.payload is BYTEA instead of BLOB.
-- Every time column is TEXT in the canonical form of storage.TimeLayout,
-- as in SQLite, so both sort and compare times the same way.
-- Text columns take the database collation, which storage.Open requires to
-- be C, so that ORDER BY matches SQLite's byte order.

-- Agents, projected from heartbeat.<pc_id>.
CREATE TABLE agents (
    pc_id          TEXT PRIMARY KEY,
    hostname       TEXT,
    os_family      TEXT,
    agent_version  TEXT NOT NULL,
    last_heartbeat TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
--bun:split
CREATE INDEX agents_last_heartbeat ON agents (last_heartbeat);

--bun:split
-- One row per (request_id, pc_id): a broadcast Command is answered by many
-- PCs with the same request_id (upstream collapsed them, defect 1).
CREATE TABLE execution_results (
    request_id  TEXT NOT NULL,
    pc_id       TEXT NOT NULL,
    exec_id     TEXT,
    job_id      TEXT,
    exit_code   INTEGER NOT NULL,
    stdout      TEXT NOT NULL,
    stderr      TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    stream_seq  BIGINT NOT NULL,
    PRIMARY KEY (request_id, pc_id)
);
--bun:split
CREATE INDEX execution_results_finished ON execution_results (finished_at);
--bun:split
CREATE INDEX execution_results_pc ON execution_results (pc_id, finished_at);
--bun:split
CREATE INDEX execution_results_job ON execution_results (job_id, finished_at);
--bun:split
CREATE INDEX execution_results_exec ON execution_results (exec_id, pc_id);
--bun:split
-- Serves the once_per_pc seed: latest success per PC for one job.
CREATE INDEX execution_results_success ON execution_results (job_id, exit_code, pc_id, finished_at);

--bun:split
-- One firing of a job at a target (behaviour.md §2).
CREATE TABLE executions (
    exec_id       TEXT PRIMARY KEY,
    job_id        TEXT NOT NULL,
    version       TEXT NOT NULL,
    initiated_by  TEXT NOT NULL,
    schedule_id   TEXT,
    plan          TEXT NOT NULL,
    subjects      TEXT NOT NULL,
    target_count  INTEGER NOT NULL,
    expected_pcs  INTEGER NOT NULL,
    success_count INTEGER NOT NULL DEFAULT 0,
    failure_count INTEGER NOT NULL DEFAULT 0,
    status        TEXT NOT NULL,
    error         TEXT,
    timeout_secs  BIGINT NOT NULL,
    jitter_secs   BIGINT,
    created_at    TEXT NOT NULL,
    deadline_at   TEXT NOT NULL,
    finished_at   TEXT,
    updated_at    TEXT NOT NULL
);
--bun:split
CREATE INDEX executions_created ON executions (created_at);
--bun:split
CREATE INDEX executions_job ON executions (job_id, created_at);
--bun:split
CREATE INDEX executions_status ON executions (status, deadline_at);

--bun:split
-- Every request_id an exec published: how a result finds its exec, since the
-- ExecResult does not carry the exec_id (wire.md §4).
CREATE TABLE exec_requests (
    request_id   TEXT PRIMARY KEY,
    exec_id      TEXT NOT NULL REFERENCES executions (exec_id) ON DELETE CASCADE,
    subject      TEXT NOT NULL,
    published_at TEXT
);
--bun:split
CREATE INDEX exec_requests_exec ON exec_requests (exec_id);

--bun:split
-- PCs an exec expects an answer from, resolved at fire time.
CREATE TABLE exec_expected (
    exec_id TEXT NOT NULL REFERENCES executions (exec_id) ON DELETE CASCADE,
    pc_id   TEXT NOT NULL,
    PRIMARY KEY (exec_id, pc_id)
);

--bun:split
-- Rollout waves, persisted so that a restart does not lose them (defect 12).
CREATE TABLE exec_waves (
    exec_id      TEXT NOT NULL REFERENCES executions (exec_id) ON DELETE CASCADE,
    wave_index   INTEGER NOT NULL,
    group_name   TEXT NOT NULL,
    due_at       TEXT NOT NULL,
    state        TEXT NOT NULL,
    request_id   TEXT,
    published_at TEXT,
    PRIMARY KEY (exec_id, wave_index)
);
--bun:split
CREATE INDEX exec_waves_due ON exec_waves (state, due_at);

--bun:split
-- Latest inventory facts per (pc, job) for jobs with an inventory hint.
CREATE TABLE inventory_facts (
    pc_id        TEXT NOT NULL,
    job_id       TEXT NOT NULL,
    facts        TEXT NOT NULL,
    display      TEXT NOT NULL,
    summary      TEXT,
    collected_at TEXT NOT NULL,
    recorded_at  TEXT NOT NULL,
    PRIMARY KEY (pc_id, job_id)
);
--bun:split
CREATE INDEX inventory_facts_job ON inventory_facts (job_id, pc_id);

--bun:split
-- Audit events; stream_seq is unique so a redelivery changes nothing
-- (defect 3).
CREATE TABLE audit_log (
    id          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    stream_seq  BIGINT NOT NULL UNIQUE,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT,
    payload     TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);
--bun:split
CREATE INDEX audit_log_occurred ON audit_log (occurred_at);
--bun:split
CREATE INDEX audit_log_actor ON audit_log (actor, occurred_at);
--bun:split
CREATE INDEX audit_log_action ON audit_log (action, occurred_at);

--bun:split
-- Messages a projector could not decode ("poison"), kept for inspection.
CREATE TABLE projection_errors (
    id          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    projection  TEXT NOT NULL,
    stream      TEXT NOT NULL,
    stream_seq  BIGINT NOT NULL,
    subject     TEXT NOT NULL,
    error       TEXT NOT NULL,
    payload     BYTEA,
    recorded_at TEXT NOT NULL
);
--bun:split
CREATE INDEX projection_errors_recorded ON projection_errors (recorded_at);

--bun:split
-- Stream sequence of the last message each projection applied, written in
-- the same transaction as the rows it produced.
CREATE TABLE projection_checkpoints (
    projection TEXT PRIMARY KEY,
    stream     TEXT NOT NULL,
    last_seq   BIGINT NOT NULL,
    updated_at TEXT NOT NULL
);

--bun:split
-- Mirror of KV agent_groups: one row per membership.
CREATE TABLE agent_group_members (
    pc_id      TEXT NOT NULL,
    group_name TEXT NOT NULL,
    PRIMARY KEY (pc_id, group_name)
);
--bun:split
CREATE INDEX agent_group_members_group ON agent_group_members (group_name, pc_id);

--bun:split
-- Mirror of KV jobs (the catalog).
CREATE TABLE jobs (
    id            TEXT PRIMARY KEY,
    version       TEXT NOT NULL,
    description   TEXT,
    has_inventory BOOLEAN NOT NULL,
    manifest      TEXT NOT NULL,
    kv_revision   BIGINT NOT NULL,
    updated_at    TEXT NOT NULL
);

--bun:split
-- Mirror of KV schedules, for listing and for the job-delete reference check.
CREATE TABLE schedules (
    id          TEXT PRIMARY KEY,
    job_id      TEXT NOT NULL,
    enabled     BOOLEAN NOT NULL,
    definition  TEXT NOT NULL,
    kv_revision BIGINT NOT NULL,
    updated_at  TEXT NOT NULL
);
--bun:split
CREATE INDEX schedules_job ON schedules (job_id);
