-- dbos-migration: 0001 initial
-- compatible-from: 0001
-- transaction: yes
--
-- The logical schema of 07 §3.2 (without queue_lanes). Every table and index is prefixed `dbos_`.
-- A `seq` column is SQLite's INTEGER PRIMARY KEY AUTOINCREMENT, so the logical primary key of a table that also
-- has `seq` (workflows, messages) is declared NOT NULL UNIQUE.

CREATE TABLE dbos_workflows (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow_id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL CHECK (status IN ('PENDING', 'ENQUEUED', 'DELAYED', 'SUCCESS', 'ERROR', 'CANCELLED',
                                           'MAX_RECOVERY_ATTEMPTS_EXCEEDED')),
    name TEXT NOT NULL,
    class_name TEXT,
    config_name TEXT,
    inputs TEXT NOT NULL,
    receiver TEXT,
    inputs_serializer TEXT NOT NULL,
    output TEXT,
    error TEXT,
    outcome_serializer TEXT,
    cancel_reason TEXT CHECK (cancel_reason IN ('user', 'deadline')),
    application_name TEXT,
    application_version TEXT,
    app_id TEXT,
    authenticated_user TEXT,
    authenticated_roles TEXT,
    assumed_role TEXT,
    queue_name TEXT,
    dedup_queue TEXT,
    deduplication_id TEXT,
    priority INTEGER NOT NULL DEFAULT 0,
    partition_key TEXT,
    delay_until INTEGER,
    timeout_ms INTEGER,
    deadline_ms INTEGER,
    executor_id TEXT,
    incarnation INTEGER,
    claim_token TEXT,
    claim_batch TEXT,
    recovery_attempts INTEGER NOT NULL DEFAULT 0,
    max_recovery_attempts INTEGER,
    parent_workflow_id TEXT,
    forked_from TEXT,
    was_forked_from INTEGER NOT NULL DEFAULT 0 CHECK (was_forked_from IN (0, 1)),
    steps_seeded INTEGER NOT NULL DEFAULT 0 CHECK (steps_seeded IN (0, 1)),
    schedule_name TEXT,
    debounce_digest TEXT,
    debounce_deadline_ms INTEGER,
    attributes TEXT,
    creator_token TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    dequeued_at INTEGER,
    completed_at INTEGER,
    CHECK (status <> 'PENDING' OR claim_token IS NOT NULL),
    CHECK (status NOT IN ('ENQUEUED', 'DELAYED') OR claim_token IS NULL),
    CHECK (status <> 'DELAYED' OR delay_until IS NOT NULL),
    CHECK (NOT (output IS NOT NULL AND error IS NOT NULL))
);

CREATE INDEX dbos_workflows_created ON dbos_workflows (created_at, workflow_id);
CREATE INDEX dbos_workflows_status_created ON dbos_workflows (status, created_at);
CREATE INDEX dbos_workflows_claim ON dbos_workflows (queue_name, priority DESC, seq)
    WHERE status = 'ENQUEUED';
CREATE INDEX dbos_workflows_lane ON dbos_workflows (queue_name, partition_key, priority DESC, seq)
    WHERE status = 'ENQUEUED';
-- Queue counts only: directly started workflows (no queue) skip this index on insert and outcome.
CREATE INDEX dbos_workflows_active ON dbos_workflows (queue_name, status, partition_key)
    WHERE status IN ('ENQUEUED', 'DELAYED', 'PENDING') AND queue_name IS NOT NULL;
CREATE INDEX dbos_workflows_owner ON dbos_workflows (executor_id, incarnation)
    WHERE status = 'PENDING';
CREATE INDEX dbos_workflows_delayed ON dbos_workflows (delay_until)
    WHERE status = 'DELAYED';
CREATE INDEX dbos_workflows_deadline ON dbos_workflows (deadline_ms)
    WHERE deadline_ms IS NOT NULL AND status IN ('PENDING', 'ENQUEUED', 'DELAYED');
CREATE UNIQUE INDEX dbos_workflows_dedup ON dbos_workflows (dedup_queue, deduplication_id)
    WHERE deduplication_id IS NOT NULL;
CREATE UNIQUE INDEX dbos_workflows_debounce ON dbos_workflows (debounce_digest)
    WHERE status = 'DELAYED' AND debounce_digest IS NOT NULL;
CREATE INDEX dbos_workflows_parent ON dbos_workflows (parent_workflow_id)
    WHERE parent_workflow_id IS NOT NULL;
CREATE INDEX dbos_workflows_forked ON dbos_workflows (forked_from)
    WHERE forked_from IS NOT NULL;
CREATE INDEX dbos_workflows_schedule ON dbos_workflows (schedule_name, created_at)
    WHERE schedule_name IS NOT NULL;
CREATE INDEX dbos_workflows_completed ON dbos_workflows (completed_at)
    WHERE completed_at IS NOT NULL;

CREATE TABLE dbos_steps (
    workflow_id TEXT NOT NULL REFERENCES dbos_workflows (workflow_id) ON DELETE CASCADE,
    step_id INTEGER NOT NULL CHECK (step_id >= 1),
    name TEXT NOT NULL,
    output TEXT,
    error TEXT,
    serializer TEXT,
    child_workflow_id TEXT,
    started_at INTEGER,
    completed_at INTEGER,
    write_token TEXT NOT NULL,
    PRIMARY KEY (workflow_id, step_id)
);

CREATE TABLE dbos_messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL UNIQUE,
    destination_id TEXT NOT NULL REFERENCES dbos_workflows (workflow_id) ON DELETE CASCADE,
    topic TEXT,
    topic_digest TEXT NOT NULL,
    payload TEXT NOT NULL,
    serializer TEXT NOT NULL,
    consumed INTEGER NOT NULL DEFAULT 0 CHECK (consumed IN (0, 1)),
    consumed_at INTEGER,
    created_at INTEGER NOT NULL
);

CREATE INDEX dbos_messages_inbox ON dbos_messages (destination_id, topic_digest, seq) WHERE consumed = 0;
CREATE INDEX dbos_messages_by_dest ON dbos_messages (destination_id, seq);

CREATE TABLE dbos_events (
    workflow_id TEXT NOT NULL REFERENCES dbos_workflows (workflow_id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    key_digest TEXT NOT NULL,
    value TEXT NOT NULL,
    serializer TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (workflow_id, key_digest)
);

CREATE TABLE dbos_event_history (
    workflow_id TEXT NOT NULL REFERENCES dbos_workflows (workflow_id) ON DELETE CASCADE,
    step_id INTEGER NOT NULL,
    key TEXT NOT NULL,
    key_digest TEXT NOT NULL,
    value TEXT NOT NULL,
    serializer TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (workflow_id, step_id, key_digest)
);

CREATE TABLE dbos_streams (
    workflow_id TEXT NOT NULL REFERENCES dbos_workflows (workflow_id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    key_digest TEXT NOT NULL,
    stream_offset INTEGER NOT NULL,
    value TEXT,
    serializer TEXT,
    is_end INTEGER NOT NULL CHECK (is_end IN (0, 1)),
    writer_step_id INTEGER NOT NULL,
    step_seq INTEGER,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (workflow_id, key_digest, stream_offset)
);

CREATE UNIQUE INDEX dbos_streams_end ON dbos_streams (workflow_id, key_digest) WHERE is_end = 1;
CREATE UNIQUE INDEX dbos_streams_step_seq ON dbos_streams (workflow_id, writer_step_id, key_digest, step_seq)
    WHERE step_seq IS NOT NULL;

CREATE TABLE dbos_queue_claims (
    queue_name TEXT NOT NULL,
    partition_key TEXT,
    claimed_at INTEGER NOT NULL,
    workflow_id TEXT NOT NULL
);

CREATE INDEX dbos_queue_claims_queue ON dbos_queue_claims (queue_name, claimed_at);
CREATE INDEX dbos_queue_claims_lane ON dbos_queue_claims (queue_name, partition_key, claimed_at);

CREATE TABLE dbos_queue_defs (
    name TEXT NOT NULL PRIMARY KEY,
    config TEXT NOT NULL,
    revision INTEGER NOT NULL,
    application_name TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE dbos_queue_pauses (
    queue_name TEXT NOT NULL PRIMARY KEY,
    paused_at INTEGER NOT NULL
);

CREATE TABLE dbos_schedules (
    name TEXT NOT NULL PRIMARY KEY,
    schedule_id TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL CHECK (source IN ('api', 'decorator')),
    workflow_name TEXT NOT NULL,
    workflow_class_name TEXT,
    cron TEXT NOT NULL,
    cron_timezone TEXT,
    status TEXT NOT NULL CHECK (status IN ('ACTIVE', 'PAUSED')),
    context TEXT,
    context_serializer TEXT,
    automatic_backfill INTEGER NOT NULL CHECK (automatic_backfill IN (0, 1)),
    queue_name TEXT,
    cursor_ms INTEGER,
    cursor_iso TEXT,
    start_ms INTEGER NOT NULL,
    resumed_at INTEGER,
    application_name TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE dbos_executors (
    executor_id TEXT NOT NULL,
    incarnation INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('ALIVE', 'STOPPED', 'DEAD')),
    application_name TEXT,
    application_version TEXT,
    hostname TEXT NOT NULL,
    host_identity TEXT NOT NULL,
    pid INTEGER NOT NULL,
    process_start TEXT,
    started_at INTEGER NOT NULL,
    last_heartbeat_at INTEGER NOT NULL,
    lease_expires_at INTEGER NOT NULL,
    heartbeat_interval_ms INTEGER NOT NULL,
    lease_ms INTEGER NOT NULL,
    queues TEXT NOT NULL,
    liveness_key INTEGER,
    stopped_at INTEGER,
    PRIMARY KEY (executor_id, incarnation)
);

CREATE INDEX dbos_executors_app_state ON dbos_executors (application_name, state, lease_expires_at);

CREATE TABLE dbos_app_versions (
    application_name TEXT NOT NULL,
    version_name TEXT NOT NULL,
    version_id TEXT NOT NULL UNIQUE,
    version_timestamp INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (application_name, version_name)
);

CREATE TABLE dbos_maintenance_leases (
    name TEXT NOT NULL PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);

-- SQLite only: the cross-process change feed (07 §5 rule 9).
CREATE TABLE dbos_change_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    key1 TEXT,
    key2 TEXT,
    origin TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE INDEX dbos_change_log_created ON dbos_change_log (created_at);
