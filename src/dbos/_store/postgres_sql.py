"""SQL text of the PostgreSQL backend, built once per store for its schema (07 §6.3 rule 1).

Every statement that stores a time starts with the `_t` CTE, so that all times written by one statement share one
server-clock value (07 §3.3 rule 2). Notifications are sent inside the writing statement (07 §6.6 rule 2).
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from .postgres_conn import NOW_MS, channels

NOTIFY_MAX_BYTES = 7000

WORKFLOW_COLUMNS = (
    "workflow_id",
    "seq",
    "status",
    "name",
    "class_name",
    "config_name",
    "inputs",
    "receiver",
    "inputs_serializer",
    "output",
    "error",
    "outcome_serializer",
    "cancel_reason",
    "application_name",
    "application_version",
    "app_id",
    "authenticated_user",
    "authenticated_roles",
    "assumed_role",
    "queue_name",
    "deduplication_id",
    "priority",
    "partition_key",
    "delay_until",
    "timeout_ms",
    "deadline_ms",
    "executor_id",
    "incarnation",
    "claim_token",
    "recovery_attempts",
    "max_recovery_attempts",
    "parent_workflow_id",
    "forked_from",
    "was_forked_from",
    "schedule_name",
    "created_at",
    "updated_at",
    "dequeued_at",
    "completed_at",
)
INPUT_COLUMNS = frozenset({"inputs", "receiver"})
OUTPUT_COLUMNS = frozenset({"output", "error"})
STEP_COLUMNS = (
    "workflow_id",
    "step_id",
    "name",
    "output",
    "error",
    "serializer",
    "child_workflow_id",
    "started_at",
    "completed_at",
    "write_token",
)
EXECUTOR_COLUMNS = (
    "executor_id",
    "incarnation",
    "state",
    "application_name",
    "application_version",
    "hostname",
    "host_identity",
    "pid",
    "process_start",
    "started_at",
    "last_heartbeat_at",
    "lease_expires_at",
    "heartbeat_interval_ms",
    "lease_ms",
    "stopped_at",
    "queues",
)
INSERT_RESULT_COLUMNS = (
    "workflow_id",
    "name",
    "class_name",
    "config_name",
    "status",
    "queue_name",
    "created_at",
)
STATE_COLUMNS = (
    "workflow_id",
    "status",
    "cancel_reason",
    "completed_at",
    "timeout_ms",
    "deadline_ms",
    "parent_workflow_id",
    "application_version",
)


def cols(names: tuple[str, ...], alias: str = "") -> str:
    prefix = f"{alias}." if alias else ""
    return ", ".join(prefix + n for n in names)


def workflow_select_list(*, load_input: bool, load_output: bool, alias: str = "") -> str:
    prefix = f"{alias}." if alias else ""
    out = []
    for n in WORKFLOW_COLUMNS:
        skipped = (n in INPUT_COLUMNS and not load_input) or (n in OUTPUT_COLUMNS and not load_output)
        out.append(f"NULL AS {n}" if skipped else prefix + n)
    return ", ".join(out)


def notify(channel: str, kind: str, *keys: str) -> str:
    """A pg_notify call whose payload is the JSON array [kind, key...], or [kind] when it would be too large."""
    arr = f"json_build_array('{kind}', {', '.join(keys)})::text"
    return (
        f"pg_notify('{channel}', CASE WHEN octet_length({arr}) > {NOTIFY_MAX_BYTES} "
        f"THEN '[\"{kind}\"]' ELSE {arr} END)::text"
    )


_T = f"_t AS (SELECT {NOW_MS} AS ms)"
_REQUEUE_SET = (
    "status = 'ENQUEUED', queue_name = COALESCE(w.queue_name, %(internal)s::text), executor_id = NULL, "
    "incarnation = NULL, claim_token = NULL, claim_batch = NULL, updated_at = _t.ms"
)

_WF_INSERT_COLUMNS = (
    "workflow_id, status, name, class_name, config_name, inputs, receiver, inputs_serializer, application_name, "
    "application_version, app_id, authenticated_user, authenticated_roles, assumed_role, queue_name, dedup_queue, "
    "deduplication_id, priority, partition_key, delay_until, timeout_ms, deadline_ms, executor_id, incarnation, "
    "claim_token, recovery_attempts, max_recovery_attempts, parent_workflow_id, forked_from, schedule_name, "
    "attributes, creator_token, created_at, updated_at"
)
_WF_INSERT_VALUES = (
    "%(workflow_id)s::text, %(status)s::text, %(name)s::text, %(class_name)s::text, %(config_name)s::text, "
    "%(inputs)s::text, %(receiver)s::text, %(inputs_serializer)s::text, %(application_name)s::text, "
    "%(application_version)s::text, %(app_id)s::text, %(authenticated_user)s::text, "
    "%(authenticated_roles)s::text, %(assumed_role)s::text, %(queue_name)s::text, %(dedup_queue)s::text, "
    "%(deduplication_id)s::text, %(priority)s::int, %(partition_key)s::text, %(delay_until)s::bigint, "
    "%(timeout_ms)s::bigint, "
    "CASE WHEN %(deadline_from_now)s::boolean AND %(timeout_ms)s::bigint IS NOT NULL "
    "THEN _t.ms + %(timeout_ms)s::bigint ELSE %(deadline_ms)s::bigint END, "
    "%(executor_id)s::text, %(incarnation)s::bigint, %(claim_token)s::text, %(recovery_attempts)s::int, "
    "%(max_recovery_attempts)s::int, %(parent_workflow_id)s::text, %(forked_from)s::text, "
    "%(schedule_name)s::text, %(attributes)s::text, %(creator_token)s::text, _t.ms, _t.ms"
)


@dataclass(frozen=True)
class Statements:
    insert_workflow: str
    insert_child: str
    existing_workflow: str
    parent_step: str
    record_step: str
    step_after_refusal: str
    record_outcome: str
    outcome_after_refusal: str
    get_workflow: dict[tuple[bool, bool], str]
    get_states: str
    load_checkpoints: str
    list_steps: str
    conflict_rows: str
    dedup_parent_step: str
    claim: str  # the claim of an unpartitioned queue without shared limits (postgres_queue_sql)
    release: str
    register_executor: str
    take_liveness_lock: str
    heartbeat: str
    find_dead: str
    take_over: str
    requeue_orphans: str
    mark_stopped: str
    list_executors: str
    list_all_executors: str


def _insert_sql(t: dict[str, str], *, parent: bool) -> str:
    guard = "WHERE EXISTS (SELECT 1 FROM p)" if parent else ""
    fence = (
        "p AS (SELECT workflow_id FROM {s}.workflows WHERE workflow_id = %(p_workflow_id)s "
        "AND claim_token = %(p_claim_token)s FOR KEY SHARE), "
        if parent
        else ""
    )
    step = (
        ", st AS (INSERT INTO {s}.steps (workflow_id, step_id, name, child_workflow_id, started_at, completed_at, "
        "write_token) SELECT p.workflow_id, %(p_step_id)s::int, %(p_step_name)s::text, %(workflow_id)s::text, "
        "_t.ms, _t.ms, %(p_write_token)s::text FROM p, _t "
        "ON CONFLICT (workflow_id, step_id) DO NOTHING RETURNING 1)"
        if parent
        else ""
    )
    counts = "(SELECT count(*) FROM p), (SELECT count(*) FROM st)" if parent else "1, 1"
    q = t["queue_notify"].replace("KEY", "COALESCE(ins.queue_name, %(internal)s::text)")
    return (
        f"WITH {_T}, {fence}"
        f"ins AS (INSERT INTO {{s}}.workflows ({_WF_INSERT_COLUMNS}) SELECT {_WF_INSERT_VALUES} FROM _t {guard} "
        f"ON CONFLICT DO NOTHING RETURNING {cols(INSERT_RESULT_COLUMNS)}, deadline_ms){step} "
        f"SELECT {counts}, {cols(INSERT_RESULT_COLUMNS, 'ins')}, ins.deadline_ms, "
        f"CASE WHEN ins.status IN ('ENQUEUED', 'DELAYED') THEN {q} END "
        "FROM (SELECT 1) AS one LEFT JOIN ins ON true"
    )


def _requeue_sql(where: str, t: dict[str, str], *, extra_set: str = "", from_extra: str = "") -> str:
    """Re-enqueue matching PENDING rows on their own queue (else the internal one), clearing the owner."""
    q = t["queue_notify"].replace("KEY", "r.queue_name")
    return (
        f"WITH {_T}, "
        f"r AS (UPDATE {{s}}.workflows w SET {_REQUEUE_SET}{extra_set} FROM _t{from_extra} WHERE {where} "
        "RETURNING w.workflow_id, w.queue_name) "
        f"SELECT r.workflow_id, r.queue_name, {q} FROM r ORDER BY r.workflow_id"
    )


# A new version gets a timestamp above every other version of its application, so that it is the latest even
# when registered within the same millisecond as another (05 §7 rule 4); a known version keeps its own.
_VERSION_APP = "COALESCE(%(application_name)s::text, '')"
_REGISTER_VERSION = (
    "ver AS (INSERT INTO {s}.app_versions (application_name, version_name, version_id, version_timestamp, "
    f"created_at) SELECT {_VERSION_APP}, %(application_version)s::text, %(version_id)s::text, "
    "GREATEST(_t.ms, COALESCE((SELECT max(x.version_timestamp) + 1 FROM {s}.app_versions x "
    f"WHERE x.application_name = {_VERSION_APP}), _t.ms)), _t.ms FROM _t "
    "WHERE %(application_version)s::text IS NOT NULL "
    "ON CONFLICT (application_name, version_name) DO NOTHING RETURNING version_name, version_timestamp)"
)
# The statement's snapshot does not see its own insert, so the new version (if any) is added to the candidates.
_LATEST_VERSION = (
    "SELECT c.version_name FROM (SELECT x.version_name, x.version_timestamp FROM {s}.app_versions x "
    f"WHERE x.application_name = {_VERSION_APP} AND %(application_version)s::text IS NOT NULL "
    "UNION ALL SELECT ver.version_name, ver.version_timestamp FROM ver) c "
    "ORDER BY c.version_timestamp DESC, c.version_name DESC LIMIT 1"
)


def _executor_sql(t: dict[str, str]) -> dict[str, str]:
    ctl = t["ctl_notify"].replace("KEY", "'executors'")
    ctl_versions = t["ctl_notify"].replace("KEY", "'versions'")
    q = t["queue_notify"].replace("KEY", "r.queue_name")
    lock_match = (
        "l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
        "AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()) "
        "AND l.classid = ((e.liveness_key >> 32) & 4294967295)::oid "
        "AND l.objid = (e.liveness_key & 4294967295)::oid"
    )
    return {
        "register_executor": (
            f"WITH {_T}, "
            "sup AS (UPDATE {s}.executors e SET state = 'DEAD' FROM _t WHERE e.executor_id = %(executor_id)s "
            "AND e.state = 'ALIVE' RETURNING e.incarnation, e.lease_expires_at > _t.ms AS valid), "
            "ins AS (INSERT INTO {s}.executors (executor_id, incarnation, state, application_name, "
            "application_version, hostname, host_identity, pid, process_start, started_at, last_heartbeat_at, "
            "lease_expires_at, heartbeat_interval_ms, lease_ms, queues) SELECT %(executor_id)s::text, "
            "COALESCE((SELECT max(incarnation) FROM {s}.executors WHERE executor_id = %(executor_id)s), 0) + 1, "
            "'ALIVE', %(application_name)s::text, %(application_version)s::text, %(hostname)s::text, "
            "%(host_identity)s::text, %(pid)s::bigint, %(process_start)s::text, _t.ms, _t.ms, "
            "_t.ms + %(lease_ms)s::bigint, %(heartbeat_interval_ms)s::bigint, %(lease_ms)s::bigint, "
            "%(queues)s::text FROM _t RETURNING incarnation), "
            f"{_REGISTER_VERSION} "
            "SELECT ins.incarnation, (SELECT array_agg(incarnation ORDER BY incarnation) FROM sup), "
            f"COALESCE((SELECT bool_or(valid) FROM sup), false), (SELECT ms FROM _t), {ctl}, "
            f"({_LATEST_VERSION}), CASE WHEN EXISTS (SELECT 1 FROM ver) THEN {ctl_versions} END FROM ins"
        ),
        "take_liveness_lock": (
            "WITH l AS (SELECT pg_try_advisory_lock(%(key)s) AS got), "
            "u AS (UPDATE {s}.executors SET liveness_key = %(key)s WHERE executor_id = %(executor_id)s "
            "AND incarnation = %(incarnation)s AND (SELECT got FROM l) RETURNING 1) "
            "SELECT (SELECT got FROM l), (SELECT count(*) FROM u)"
        ),
        "heartbeat": (
            f"WITH {_T}, "
            "u AS (UPDATE {s}.executors e SET last_heartbeat_at = _t.ms, lease_expires_at = _t.ms + e.lease_ms, "
            "queues = COALESCE(%(queues)s::text, e.queues) FROM _t WHERE e.executor_id = %(executor_id)s AND e.incarnation = %(incarnation)s "
            "AND e.state = 'ALIVE' RETURNING 1) "
            "SELECT EXISTS (SELECT 1 FROM u), EXISTS (SELECT 1 FROM {s}.executors "
            "WHERE executor_id = %(executor_id)s AND incarnation > %(incarnation)s AND state = 'ALIVE'), "
            "(SELECT ms FROM _t)"
        ),
        "find_dead": (
            f"WITH {_T} SELECT {cols(EXECUTOR_COLUMNS, 'e')}, (e.state <> 'ALIVE' OR e.lease_expires_at < _t.ms), "
            "(e.state = 'ALIVE' AND e.liveness_key IS NOT NULL "
            "AND e.last_heartbeat_at < _t.ms - 2 * e.heartbeat_interval_ms "
            "AND 3 * e.heartbeat_interval_ms <= %(uptime_ms)s::bigint "
            f"AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_locks l WHERE {lock_match})) "
            "FROM {s}.executors e, _t "
            "WHERE (e.application_name = %(application_name)s::text OR e.application_name IS NULL) "
            "AND EXISTS (SELECT 1 FROM {s}.workflows w WHERE w.status = 'PENDING' "
            "AND w.executor_id = e.executor_id AND w.incarnation = e.incarnation) "
            "ORDER BY e.executor_id, e.incarnation"
        ),
        # An incarnation that is already DEAD still matches, so that rows left PENDING under it (for example
        # after `register_executor` superseded it) can be taken over; the workflow guard keeps one winner per row.
        "take_over": (
            f"WITH {_T}, "
            "d AS (UPDATE {s}.executors e SET state = 'DEAD' FROM _t WHERE e.executor_id = %(executor_id)s "
            "AND e.incarnation = %(incarnation)s "
            "AND (NOT %(require_expired)s::boolean OR e.state <> 'ALIVE' OR e.lease_expires_at < _t.ms) "
            "RETURNING e.state), "
            f"r AS (UPDATE {{s}}.workflows w SET {_REQUEUE_SET} FROM _t WHERE EXISTS (SELECT 1 FROM d) "
            "AND w.status = 'PENDING' AND w.executor_id = %(executor_id)s AND w.incarnation = %(incarnation)s "
            "RETURNING w.workflow_id, w.queue_name), "
            f"n AS (SELECT string_agg({ctl}, '') AS sent FROM d) "
            "SELECT r.workflow_id, r.queue_name, "
            f"CASE WHEN r.workflow_id IS NOT NULL THEN {q} END FROM n LEFT JOIN r ON true ORDER BY r.workflow_id"
        ),
        "mark_stopped": (
            f"WITH {_T}, "
            "u AS (UPDATE {s}.executors e SET state = 'STOPPED', stopped_at = _t.ms FROM _t "
            "WHERE e.executor_id = %(executor_id)s AND e.incarnation = %(incarnation)s AND e.state = 'ALIVE' "
            f"RETURNING 1) SELECT {ctl} FROM u"
        ),
        "list_executors": (
            f"SELECT {cols(EXECUTOR_COLUMNS)} FROM {{s}}.executors WHERE state = 'ALIVE' "
            "ORDER BY executor_id, incarnation"
        ),
        "list_all_executors": (
            f"SELECT {cols(EXECUTOR_COLUMNS)} FROM {{s}}.executors ORDER BY executor_id, incarnation"
        ),
    }


def templates(schema: str) -> dict[str, str]:
    ch = channels(schema)
    return {
        "wf_notify": notify(ch["wf"], "wf", "KEY"),
        "queue_notify": notify(ch["queue"], "queue", "KEY"),
        "ctl_notify": notify(ch["ctl"], "ctl", "KEY"),
    }


def _workflow_sql(t: dict[str, str]) -> dict[str, str]:
    wf = t["wf_notify"].replace("KEY", "u.workflow_id")
    q = t["queue_notify"].replace("KEY", "u.queue_name")
    return {
        "insert_workflow": _insert_sql(t, parent=False),
        "insert_child": _insert_sql(t, parent=True),
        "existing_workflow": (
            f"SELECT {cols(INSERT_RESULT_COLUMNS)}, deadline_ms, creator_token FROM {{s}}.workflows "
            "WHERE workflow_id = %(workflow_id)s"
        ),
        # After a refused insert: the row holding the ID (src 0), else the holder of the dedup binding (src 1).
        "conflict_rows": (
            f"SELECT 0 AS src, {cols(INSERT_RESULT_COLUMNS)}, deadline_ms, creator_token FROM {{s}}.workflows "
            "WHERE workflow_id = %(workflow_id)s UNION ALL "
            f"SELECT 1, {cols(INSERT_RESULT_COLUMNS)}, deadline_ms, creator_token FROM {{s}}.workflows "
            "WHERE %(deduplication_id)s::text IS NOT NULL AND dedup_queue = %(dedup_queue)s::text "
            "AND deduplication_id = %(deduplication_id)s::text ORDER BY 1"
        ),
        # A child start deduplicated onto an existing holder: the parent's checkpoint points at the holder.
        "dedup_parent_step": (
            "UPDATE {s}.steps SET child_workflow_id = %(holder_id)s WHERE workflow_id = %(p_workflow_id)s "
            "AND step_id = %(p_step_id)s AND write_token = %(p_write_token)s"
        ),
        "parent_step": (
            "SELECT write_token FROM {s}.steps WHERE workflow_id = %(p_workflow_id)s AND step_id = %(p_step_id)s"
        ),
        # FOR KEY SHARE, not the FOR SHARE of 07 §2.3 rule 2: claim_token is a key column (unique index,
        # migration 0001), so every token change still conflicts with this lock, while FOR SHARE next to
        # the foreign key's KEY SHARE lock creates a multixact and costs ~60 µs per checkpoint.
        "record_step": (
            f"WITH {_T} INSERT INTO {{s}}.steps ({cols(STEP_COLUMNS)}) "
            "SELECT w.workflow_id, %(step_id)s::int, %(name)s::text, %(output)s::text, %(error)s::text, "
            "%(serializer)s::text, %(child_workflow_id)s::text, COALESCE(%(started_at)s::bigint, _t.ms), "
            "COALESCE(%(completed_at)s::bigint, _t.ms), %(write_token)s::text FROM {s}.workflows w, _t "
            "WHERE w.workflow_id = %(workflow_id)s AND w.claim_token = %(claim_token)s FOR KEY SHARE OF w "
            "ON CONFLICT (workflow_id, step_id) DO NOTHING RETURNING 1"
        ),
        "step_after_refusal": (
            "SELECT write_token FROM {s}.steps WHERE workflow_id = %(workflow_id)s AND step_id = %(step_id)s"
        ),
        "record_outcome": (
            f"WITH {_T}, "
            "u AS (UPDATE {s}.workflows w SET status = %(status)s, output = %(output)s, error = %(error)s, "
            "outcome_serializer = %(serializer)s, completed_at = _t.ms, updated_at = _t.ms FROM _t "
            "WHERE w.workflow_id = %(workflow_id)s AND w.claim_token = %(claim_token)s AND w.status = 'PENDING' "
            "RETURNING w.workflow_id, w.queue_name, w.status) "
            f"SELECT u.status, u.queue_name, {wf}, CASE WHEN u.queue_name IS NOT NULL THEN {q} END FROM u"
        ),
        "outcome_after_refusal": (
            "SELECT status, claim_token FROM {s}.workflows WHERE workflow_id = %(workflow_id)s"
        ),
        "get_states": (
            f"SELECT {cols(STATE_COLUMNS)} FROM {{s}}.workflows WHERE workflow_id = ANY(%(ids)s::text[])"
        ),
        "load_checkpoints": (
            f"SELECT {cols(STEP_COLUMNS)} FROM {{s}}.steps WHERE workflow_id = ANY(%(ids)s::text[]) "
            "ORDER BY workflow_id, step_id"
        ),
        "list_steps": (
            f"SELECT {cols(STEP_COLUMNS)} FROM {{s}}.steps WHERE workflow_id = %(workflow_id)s ORDER BY step_id"
        ),
    }


def _queue_sql(t: dict[str, str]) -> dict[str, str]:
    return {
        "release": _requeue_sql(
            "w.workflow_id = f.workflow_id AND w.claim_token = f.claim_token AND w.status = 'PENDING'",
            t,
            extra_set=", recovery_attempts = CASE WHEN %(refund)s::boolean AND w.recovery_attempts > 0 "
            "THEN w.recovery_attempts - 1 ELSE w.recovery_attempts END",
            from_extra=", unnest(%(ids)s::text[], %(tokens)s::text[]) AS f(workflow_id, claim_token)",
        ),
        "requeue_orphans": _requeue_sql(
            "w.status = 'PENDING' AND (w.application_name = %(application_name)s::text "
            "OR w.application_name IS NULL) AND NOT EXISTS (SELECT 1 FROM {s}.executors e "
            "WHERE e.executor_id = w.executor_id AND e.incarnation = w.incarnation)",
            t,
        ),
    }


def render(template: str, schema: sql.Identifier) -> str:
    return sql.SQL(template).format(s=schema).as_string(None)


def build_statements(schema: str) -> Statements:
    from .postgres_queue_sql import ClaimShape, claim_sql  # that module builds on this one's column lists

    t = templates(schema)
    ident = sql.Identifier(schema)
    raw = {**_workflow_sql(t), **_queue_sql(t), **_executor_sql(t)}
    raw["claim"] = claim_sql(ClaimShape(partitioned=False, global_concurrency=False, rate=False), t)
    rendered = {name: render(text, ident) for name, text in raw.items()}
    get_workflow = {
        (i, o): render(
            f"SELECT {workflow_select_list(load_input=i, load_output=o)} FROM {{s}}.workflows "
            "WHERE workflow_id = %(workflow_id)s",
            ident,
        )
        for i in (True, False)
        for o in (True, False)
    }
    return Statements(get_workflow=get_workflow, **rendered)
