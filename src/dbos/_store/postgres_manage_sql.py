"""SQL text of the PostgreSQL management operations (02 §3-§11; 07 §2.2 "Management", §6.3), built once per store
for its schema; `list_workflows` statements are built per filter shape and cached.

Conventions shared with `postgres_sql`:
- every statement that stores a time starts with the `_t` CTE (one server-clock value per statement);
- notifications are sent inside the writing statement (`pg_notify` per changed row; the server merges identical
  ones within a transaction), so other processes learn of a change exactly when it commits. A `cancel` change
  travels on the `wf` channel (07 §6.6 rule 1: five channels per schema);
- a bulk update first locks its rows in `workflow_id` order (07 §6.4 rule 4), `FOR NO KEY UPDATE` when the claim
  token (a key column) is kept, so that fenced checkpoint writes (`FOR KEY SHARE`) are never blocked by a cancel;
- trees are walked with recursive CTEs over the `parent` index; `UNION` stops on any cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from . import base
from . import manage_common as mc
from .postgres_conn import NOW_MS, channels
from .postgres_sql import STEP_COLUMNS, cols, notify, render, templates, workflow_select_list

_T = f"_t AS (SELECT {NOW_MS} AS ms)"
_NOW = "(SELECT ms FROM _t)"
LONG_TIMEOUT = "SET LOCAL statement_timeout = 300000"  # GC and delete batches, fork, export, import (07 §6.3)
_RESULT = "workflow_id, name, class_name, config_name, status, queue_name, created_at, deadline_ms"
_SCOPE = "({a}.application_name = %(app)s::text OR {a}.application_name IS NULL)"
GC_PAGE = 500  # candidate roots examined per gc_select statement


def _in(values: Sequence[str]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


ACTIVE = _in(mc.ACTIVE_STATUSES)
CANCELLABLE = _in(mc.CANCELLABLE_STATUSES)
RESUMABLE = _in(mc.RESUMABLE_STATUSES)
TERMINAL = _in(sorted(base.TERMINAL_STATUSES))


def _scope(alias: str, scoped: bool) -> str:
    return f" AND {_SCOPE.format(a=alias)}" if scoped else ""


class _Notify:
    """pg_notify expressions of one schema; `KEY` in a template stands for the key expression."""

    def __init__(self, schema: str) -> None:
        t = templates(schema)
        self._wf = t["wf_notify"]
        self._queue = t["queue_notify"]
        self._cancel = notify(channels(schema)["wf"], "cancel", "KEY")

    def wf(self, key: str) -> str:
        return self._wf.replace("KEY", key)

    def cancel(self, key: str) -> str:
        return self._cancel.replace("KEY", key)

    def queue(self, key: str) -> str:
        return self._queue.replace("KEY", key)

    def stopped(self, a: str) -> str:
        """`wf` and `cancel` for row `a`, and `queue` for its queue if it was active (its `old` status)."""
        return (
            f"{self.wf(f'{a}.workflow_id')} || {self.cancel(f'{a}.workflow_id')} || "
            f"COALESCE(CASE WHEN {a}.old IN {ACTIVE} AND {a}.queue_name IS NOT NULL "
            f"THEN {self.queue(f'{a}.queue_name')} END, '')"
        )


# ---------------------------------------------------------------------------------------------------------------
# Cancel, deadlines, resume
# ---------------------------------------------------------------------------------------------------------------


def _tree(ids: str, *, children: bool, root: bool = False) -> str:
    """`tree([root,] workflow_id)`: the existing listed rows and, with `children`, every descendant. Each level
    probes the `parent` index once per row (the `OFFSET 0` keeps the lateral subquery a per-row index probe, never
    a merge join walking the whole index)."""
    r0, r1 = ("w.workflow_id AS root, ", "t.root, ") if root else ("", "")
    down = (
        f" UNION SELECT {r1}c.workflow_id FROM tree t CROSS JOIN LATERAL {_children_of('t')} c"
        if children
        else ""
    )
    return f"tree AS (SELECT {r0}w.workflow_id FROM {{s}}.workflows w WHERE w.workflow_id = ANY({ids}){down})"


def _children_of(alias: str, columns: str = "c.workflow_id") -> str:
    return (
        f"(SELECT {columns} FROM {{s}}.workflows c WHERE c.parent_workflow_id = {alias}.workflow_id OFFSET 0)"
    )


# Rows of the tree, fetched through the primary key (an array, so the plan never hashes the whole table).
_IN_TREE = "= ANY(ARRAY(SELECT t.workflow_id FROM tree t))"


def _cancel_sql(n: _Notify, *, children: bool) -> str:
    # Listed rows in any cancellable status; descendants only while non-terminal.
    which = (
        f"(w.status IN {ACTIVE} OR (w.status = 'MAX_RECOVERY_ATTEMPTS_EXCEEDED' "
        "AND w.workflow_id = ANY(%(ids)s::text[])))"
        if children
        else f"w.status IN {CANCELLABLE}"
    )
    return (
        f"WITH RECURSIVE {_T}, {_tree('%(ids)s::text[]', children=children)}, "
        "lk AS (SELECT w.workflow_id, w.status FROM {s}.workflows w "
        f"WHERE w.workflow_id {_IN_TREE} AND {which} "
        "ORDER BY w.workflow_id FOR NO KEY UPDATE OF w), "
        "u AS (UPDATE {s}.workflows w SET status = 'CANCELLED', cancel_reason = %(reason)s::text, "
        "completed_at = _t.ms, updated_at = _t.ms FROM _t, lk "
        f"WHERE w.workflow_id = lk.workflow_id AND w.status IN {CANCELLABLE} "
        "RETURNING w.workflow_id, w.queue_name, lk.status AS old) "
        f"SELECT u.workflow_id, u.queue_name, u.old, {n.stopped('u')} FROM u"
    )


def _cancel_expired_sql(n: _Notify, *, scoped: bool) -> str:
    """Up to `limit` active rows whose deadline passed, earliest first, through the `deadline` index; rows locked
    by someone else are left for the next pass."""
    return (
        f"WITH {_T}, "
        "lk AS (SELECT e.workflow_id, e.status, e.deadline_ms, e.seq FROM {s}.workflows e "
        f"WHERE e.deadline_ms <= {_NOW} AND e.status IN {ACTIVE}{_scope('e', scoped)} "
        "ORDER BY e.deadline_ms, e.seq LIMIT %(limit)s FOR NO KEY UPDATE OF e SKIP LOCKED), "
        "u AS (UPDATE {s}.workflows w SET status = 'CANCELLED', cancel_reason = 'deadline', "
        "completed_at = _t.ms, updated_at = _t.ms FROM _t, lk "
        f"WHERE w.workflow_id = lk.workflow_id AND w.status IN {ACTIVE} AND w.deadline_ms <= _t.ms "
        "RETURNING w.workflow_id, w.queue_name, lk.status AS old, lk.deadline_ms, lk.seq) "
        f"SELECT u.workflow_id, u.queue_name, u.old, {n.stopped('u')} FROM u ORDER BY u.deadline_ms, u.seq"
    )


def _next_deadline_sql(*, scoped: bool) -> str:
    return (
        "SELECT min(w.deadline_ms) FROM {s}.workflows w "
        f"WHERE w.deadline_ms IS NOT NULL AND w.status IN {ACTIVE}{_scope('w', scoped)}"
    )


def _resume_sql(n: _Notify) -> str:
    """All listed rows are locked first; if one is missing nothing is updated. Resumable rows move to the
    target queue with their run state cleared; PENDING rows of a dead, stopped or unknown owner are re-enqueued
    on their own queue as in a takeover (their deadline and dequeue time stay). Both get steps_seeded: with
    recovery_attempts back at 0, the next claim must still load their checkpoints."""
    pending = "w.status = 'PENDING'"
    return (
        f"WITH {_T}, "
        "lk AS (SELECT w.workflow_id FROM {s}.workflows w WHERE w.workflow_id = ANY(%(ids)s::text[]) "
        "ORDER BY w.workflow_id FOR UPDATE OF w), "
        "miss AS (SELECT i.id FROM unnest(%(ids)s::text[]) WITH ORDINALITY AS i(id, ord) "
        "WHERE NOT EXISTS (SELECT 1 FROM lk WHERE lk.workflow_id = i.id) ORDER BY i.ord LIMIT 1), "
        "u AS (UPDATE {s}.workflows w SET status = 'ENQUEUED', "
        f"queue_name = CASE WHEN {pending} THEN COALESCE(w.queue_name, %(internal)s::text) "
        "ELSE %(queue)s::text END, recovery_attempts = 0, steps_seeded = true, "
        f"deadline_ms = CASE WHEN {pending} THEN w.deadline_ms END, "
        f"delay_until = CASE WHEN {pending} THEN w.delay_until END, "
        f"dequeued_at = CASE WHEN {pending} THEN w.dequeued_at END, "
        "output = NULL, error = NULL, outcome_serializer = NULL, cancel_reason = NULL, completed_at = NULL, "
        "executor_id = NULL, incarnation = NULL, claim_token = NULL, claim_batch = NULL, updated_at = _t.ms "
        "FROM _t WHERE w.workflow_id = ANY(ARRAY(SELECT lk.workflow_id FROM lk)) AND NOT EXISTS (SELECT 1 FROM miss) "
        f"AND (w.status IN {RESUMABLE} OR ({pending} AND NOT EXISTS (SELECT 1 FROM {{s}}.executors e "
        "WHERE e.executor_id = w.executor_id AND e.incarnation = w.incarnation AND e.state = 'ALIVE' "
        "AND e.lease_expires_at >= _t.ms))) "
        "RETURNING w.workflow_id, w.queue_name) "
        "SELECT (SELECT miss.id FROM miss), u.workflow_id, u.queue_name, "
        f"CASE WHEN u.workflow_id IS NOT NULL THEN {n.wf('u.workflow_id')} || {n.queue('u.queue_name')} END "
        "FROM (SELECT 1) AS one LEFT JOIN u ON true"
    )


# ---------------------------------------------------------------------------------------------------------------
# Fork
# ---------------------------------------------------------------------------------------------------------------


def _fork_sql(n: _Notify) -> str:
    """One statement (run at REPEATABLE READ): the new row and its copied children, or nothing when the source
    is missing or `new_id` exists. Result: source exists, the inserted row, the existing row (+ forked_from,
    creator_token)."""
    history = "step_id, key, key_digest, value, serializer, created_at"
    streams = (
        "key, key_digest, stream_offset, value, serializer, is_end, writer_step_id, step_seq, created_at"
    )
    return (
        f"WITH {_T}, "
        "src AS (SELECT * FROM {s}.workflows WHERE workflow_id = %(source)s), "
        f"ex AS (SELECT {_RESULT}, forked_from, creator_token FROM {{s}}.workflows WHERE workflow_id = %(new)s), "
        "ins AS (INSERT INTO {s}.workflows (workflow_id, status, name, class_name, config_name, inputs, receiver, "
        "inputs_serializer, authenticated_user, authenticated_roles, assumed_role, application_name, "
        "application_version, timeout_ms, queue_name, partition_key, priority, recovery_attempts, forked_from, "
        "steps_seeded, creator_token, created_at, updated_at) "
        "SELECT %(new)s::text, 'ENQUEUED', src.name, src.class_name, src.config_name, src.inputs, src.receiver, "
        "src.inputs_serializer, src.authenticated_user, src.authenticated_roles, src.assumed_role, "
        "src.application_name, %(version)s::text, %(timeout)s::bigint, %(queue)s::text, %(partition)s::text, "
        "0, 0, src.workflow_id, true, %(creator)s::text, _t.ms, _t.ms FROM src, _t "
        f"WHERE NOT EXISTS (SELECT 1 FROM ex) ON CONFLICT DO NOTHING RETURNING {_RESULT}), "
        f"st AS (INSERT INTO {{s}}.steps ({cols(STEP_COLUMNS)}) "
        "SELECT ins.workflow_id, s.step_id, s.name, s.output, s.error, s.serializer, "
        "COALESCE(m.new_id, s.child_workflow_id), s.started_at, s.completed_at, s.write_token "
        "FROM ins JOIN {s}.steps s ON s.workflow_id = %(source)s AND s.step_id < %(start)s "
        "LEFT JOIN unnest(%(old_children)s::text[], %(new_children)s::text[]) AS m(old_id, new_id) "
        "ON m.old_id = s.child_workflow_id), "
        f"eh AS (INSERT INTO {{s}}.event_history (workflow_id, {history}) "
        f"SELECT ins.workflow_id, {cols(tuple(history.split(', ')), 'h')} FROM ins "
        "JOIN {s}.event_history h ON h.workflow_id = %(source)s AND h.step_id < %(start)s), "
        # The fork's current events: per key, the copied history entry with the largest step_id.
        "ev AS (INSERT INTO {s}.events (workflow_id, key, key_digest, value, serializer, updated_at) "
        "SELECT DISTINCT ON (h.key_digest) ins.workflow_id, h.key, h.key_digest, h.value, h.serializer, "
        "h.created_at FROM ins JOIN {s}.event_history h ON h.workflow_id = %(source)s AND h.step_id < %(start)s "
        "ORDER BY h.key_digest, h.step_id DESC), "
        f"sm AS (INSERT INTO {{s}}.streams (workflow_id, {streams}) "
        f"SELECT ins.workflow_id, {cols(tuple(streams.split(', ')), 'x')} FROM ins "
        "JOIN {s}.streams x ON x.workflow_id = %(source)s AND x.writer_step_id < %(start)s), "
        "mk AS (UPDATE {s}.workflows w SET was_forked_from = true FROM ins "
        "WHERE w.workflow_id = %(source)s AND NOT w.was_forked_from) "
        f"SELECT EXISTS (SELECT 1 FROM src), {cols(tuple(_RESULT.split(', ')), 'ins')}, "
        f"{cols(tuple(_RESULT.split(', ')), 'ex')}, ex.forked_from, ex.creator_token, "
        f"CASE WHEN ins.workflow_id IS NOT NULL THEN {n.queue('ins.queue_name')} END "
        "FROM (SELECT 1) AS one LEFT JOIN ins ON true LEFT JOIN ex ON true"
    )


# ---------------------------------------------------------------------------------------------------------------
# Delete and garbage collection
# ---------------------------------------------------------------------------------------------------------------


def _delete_sql(n: _Notify, *, children: bool, only_terminal: bool) -> str:
    """Every tree member is locked first; with `only_terminal` a tree with a member that is not terminal (after
    the lock) is left whole. Steps, messages, events, event history and streams go by ON DELETE CASCADE."""
    bad = (
        "bad AS (SELECT DISTINCT t.root FROM tree t JOIN lk ON lk.workflow_id = t.workflow_id "
        f"WHERE lk.status NOT IN {TERMINAL}), "
        if only_terminal
        else "bad AS (SELECT NULL::text AS root WHERE false), "
    )
    return (
        f"WITH RECURSIVE {_tree('%(ids)s::text[]', children=children, root=True)}, "
        "lk AS (SELECT w.workflow_id, w.status FROM {s}.workflows w "
        f"WHERE w.workflow_id {_IN_TREE} ORDER BY w.workflow_id FOR UPDATE OF w), "
        f"{bad}"
        "d AS (DELETE FROM {s}.workflows w WHERE w.workflow_id = ANY(ARRAY(SELECT lk.workflow_id FROM lk "
        "WHERE lk.workflow_id IN (SELECT t.workflow_id FROM tree t WHERE t.root NOT IN (SELECT b.root FROM bad b)))) "
        "RETURNING w.workflow_id, w.queue_name, w.status AS old) "
        f"SELECT d.workflow_id, d.queue_name, d.old, {n.stopped('d')} FROM d"
    )


def _keep_boundary_sql(*, scoped: bool) -> str:
    """The keep_last-th most recently created row of the scope: rows at or after it are kept."""
    where = f" WHERE {_SCOPE.format(a='w')}" if scoped else ""
    return (
        f"SELECT w.created_at, w.workflow_id FROM {{s}}.workflows w{where} "
        "ORDER BY w.created_at DESC, w.workflow_id DESC OFFSET %(offset)s LIMIT 1"
    )


@dataclass(frozen=True, slots=True)
class GcShape:
    scoped: bool
    cutoff: bool
    keep: bool
    after: bool


def gc_page_sql(shape: GcShape) -> str:
    """One page of candidate roots (qualifying, in scope, with no parent or a vanished one) in created order,
    each with its tree's size and how many members do not qualify (decided while walking down the tree)."""
    bounds = [f"w.status IN {TERMINAL}"]
    qualifies = [f"c.status IN {TERMINAL}"]
    if shape.cutoff:
        bounds.append("w.created_at < %(cutoff)s")
        qualifies.append("c.created_at < %(cutoff)s")
    if shape.keep:
        bounds.append("(w.created_at, w.workflow_id) < (%(keep_at)s, %(keep_id)s::text)")
        in_scope = f"{_SCOPE.format(a='c')} AND " if shape.scoped else ""
        qualifies.append(f"NOT ({in_scope}(c.created_at, c.workflow_id) >= (%(keep_at)s, %(keep_id)s::text))")
    if shape.after:
        bounds.append("(w.created_at, w.workflow_id) > (%(after_at)s, %(after_id)s::text)")
    if shape.scoped:
        bounds.append(_SCOPE.format(a="w"))
    member = f"c.workflow_id, COALESCE({' AND '.join(qualifies)}, false) AS q"
    return (
        "WITH RECURSIVE roots AS (SELECT w.workflow_id, w.created_at FROM {s}.workflows w "
        "LEFT JOIN {s}.workflows p ON p.workflow_id = w.parent_workflow_id "
        f"WHERE {' AND '.join(bounds)} AND p.workflow_id IS NULL "
        f"ORDER BY w.created_at, w.workflow_id LIMIT {GC_PAGE}), "
        "tree AS (SELECT r.workflow_id AS root, r.workflow_id, true AS q FROM roots r UNION "
        f"SELECT t.root, c.workflow_id, c.q FROM tree t CROSS JOIN LATERAL {_children_of('t', member)} c) "
        "SELECT r.workflow_id, r.created_at, count(*), count(*) FILTER (WHERE NOT t.q) "
        "FROM roots r JOIN tree t ON t.root = r.workflow_id "
        "GROUP BY r.workflow_id, r.created_at ORDER BY r.created_at, r.workflow_id"
    )


# ---------------------------------------------------------------------------------------------------------------
# Executors and maintenance leases
# ---------------------------------------------------------------------------------------------------------------


def _prune_sql() -> str:
    return (
        f"WITH {_T}, "
        "d AS (DELETE FROM {s}.executors e WHERE e.state IN ('DEAD', 'STOPPED') "
        "AND e.last_heartbeat_at < %(before)s AND NOT EXISTS (SELECT 1 FROM {s}.workflows w "
        "WHERE w.status = 'PENDING' AND w.executor_id = e.executor_id AND w.incarnation = e.incarnation) "
        "RETURNING 1), "
        "c AS (DELETE FROM {s}.queue_claims q "
        f"WHERE q.claimed_at < {_NOW} - %(retention)s::bigint) "
        "SELECT count(*) FROM d"
    )


def _lease_sql() -> str:
    # EXCLUDED.expires_at - ttl is this statement's now.
    return (
        f"WITH {_T} INSERT INTO {{s}}.maintenance_leases AS l (name, holder, expires_at) "
        "SELECT %(name)s::text, %(holder)s::text, _t.ms + %(ttl)s::bigint FROM _t "
        "ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at "
        "WHERE l.holder = EXCLUDED.holder OR l.expires_at < EXCLUDED.expires_at - %(ttl)s::bigint "
        "RETURNING 1"
    )


# ---------------------------------------------------------------------------------------------------------------
# Listing
# ---------------------------------------------------------------------------------------------------------------


def _list_steps_sql(*, load_output: bool) -> str:
    payloads = (
        "output, error, serializer" if load_output else "NULL AS output, NULL AS error, NULL AS serializer"
    )
    return (
        f"SELECT workflow_id, step_id, name, {payloads}, child_workflow_id, started_at, completed_at, write_token "
        "FROM {s}.steps WHERE workflow_id = %(workflow_id)s ORDER BY step_id LIMIT %(limit)s OFFSET %(offset)s"
    )


# (query attribute, column) of the "any of" filters of `list_workflows`.
LIST_FILTERS = (
    ("workflow_ids", "workflow_id"),
    ("statuses", "status"),
    ("names", "name"),
    ("app_versions", "application_version"),
    ("users", "authenticated_user"),
    ("queue_names", "queue_name"),
    ("executor_ids", "executor_id"),
    ("forked_from", "forked_from"),
    ("parent_workflow_ids", "parent_workflow_id"),
    ("application_names", "application_name"),
    ("schedule_names", "schedule_name"),
)
# (attribute, column, operator): inclusive time bounds.
LIST_RANGES = (
    ("created_from", "created_at", ">="),
    ("created_to", "created_at", "<="),
    ("completed_from", "completed_at", ">="),
    ("completed_to", "completed_at", "<="),
    ("dequeued_from", "dequeued_at", ">="),
    ("dequeued_to", "dequeued_at", "<="),
)


def list_shape(q: base.WorkflowQuery) -> tuple[Any, ...]:
    """What the statement text of `q` depends on (its values are parameters)."""
    return (
        tuple(getattr(q, attr) is not None for attr, _ in LIST_FILTERS),
        q.id_prefixes is not None,
        tuple(getattr(q, attr) is not None for attr, _, _ in LIST_RANGES),
        q.was_forked_from is not None,
        q.has_parent,
        q.queues_only,
        q.after is not None,
        q.sort_desc,
        q.limit is not None or q.offset is not None,
        q.load_input,
        q.load_output,
    )


def list_sql(q: base.WorkflowQuery, schema: sql.Identifier) -> str:
    """One SELECT of `q`'s shape with named parameters (`list_params`)."""
    where: list[str] = []
    for attr, column in LIST_FILTERS:
        if getattr(q, attr) is not None:
            where.append(f"w.{column} = ANY(%({attr})s::text[])")
    if q.id_prefixes is not None:
        # Literal prefixes: starts_with compares bytes under the "C" collation, so %, _ and \ mean nothing.
        where.append(
            "EXISTS (SELECT 1 FROM unnest(%(id_prefixes)s::text[]) AS p(v) WHERE starts_with(w.workflow_id, p.v))"
        )
    for attr, column, op in LIST_RANGES:
        if getattr(q, attr) is not None:
            where.append(f"w.{column} {op} %({attr})s::bigint")
    if q.was_forked_from is not None:
        where.append("w.was_forked_from = %(was_forked_from)s::boolean")
    if q.has_parent is not None:
        where.append(f"w.parent_workflow_id IS {'NOT ' if q.has_parent else ''}NULL")
    if q.queues_only:
        where.append("w.queue_name IS NOT NULL")
    if q.after is not None:
        op = "<" if q.sort_desc else ">"
        where.append(f"(w.created_at, w.workflow_id) {op} (%(after_at)s::bigint, %(after_id)s::text)")
    d = " DESC" if q.sort_desc else ""
    text = (
        f"SELECT {workflow_select_list(load_input=q.load_input, load_output=q.load_output, alias='w')} "
        "FROM {s}.workflows w"
        + (" WHERE " + " AND ".join(where) if where else "")
        + f" ORDER BY w.created_at{d}, w.workflow_id{d}"
    )
    if q.limit is not None or q.offset is not None:
        text += " LIMIT %(limit)s OFFSET %(offset)s"
    return render(text, schema)


def list_params(q: base.WorkflowQuery) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for attr, _ in LIST_FILTERS:
        values = getattr(q, attr)
        if values is not None:
            params[attr] = list(values)
    if q.id_prefixes is not None:
        params["id_prefixes"] = list(q.id_prefixes)
    for attr, _, _ in LIST_RANGES:
        if getattr(q, attr) is not None:
            params[attr] = getattr(q, attr)
    if q.was_forked_from is not None:
        params["was_forked_from"] = bool(q.was_forked_from)
    if q.after is not None:
        params["after_at"], params["after_id"] = q.after
    if q.limit is not None or q.offset is not None:
        params["limit"] = q.limit
        params["offset"] = q.offset or 0
    return params


def list_is_empty(q: base.WorkflowQuery) -> bool:
    """An empty "any of" filter matches nothing: no query needed."""
    lists = [getattr(q, attr) for attr, _ in LIST_FILTERS] + [q.id_prefixes]
    return any(v is not None and len(v) == 0 for v in lists) or q.limit == 0


# ---------------------------------------------------------------------------------------------------------------
# Export and import
# ---------------------------------------------------------------------------------------------------------------

PG_TABLES = {"workflows": "workflows", **{t: t for t in mc.CHILD_TABLES}}


def _export_tree(children: bool) -> str:
    return f"WITH RECURSIVE {_tree('%(ids)s::text[]', children=children)} "


def _export_status_sql(*, children: bool) -> str:
    return (
        _export_tree(children) + f"SELECT {cols(mc.EXPORT_COLUMNS['workflows'], 'w')} FROM {{s}}.workflows w "
        "WHERE w.workflow_id IN (SELECT t.workflow_id FROM tree t) ORDER BY w.created_at, w.workflow_id"
    )


def _export_child_sql(table: str, *, children: bool) -> str:
    owner = mc.CHILD_TABLES[table]
    order = ", ".join(f"c.{c}" for c in mc.CHILD_ORDER[table])
    return (
        _export_tree(children)
        + f"SELECT c.{owner}, {cols(mc.EXPORT_COLUMNS[table], 'c')} FROM {{s}}.{PG_TABLES[table]} c "
        f"WHERE c.{owner} {_IN_TREE} ORDER BY c.{owner}, {order}"
    )


def _import_conflicts_sql() -> str:
    """Rows holding an imported ID (src 0, with their creator token) or a (dedup_queue, deduplication_id)
    binding of the bundle (src 1)."""
    return (
        "SELECT 0 AS src, w.workflow_id, w.creator_token, NULL::text AS dq, NULL::text AS did "
        "FROM {s}.workflows w WHERE w.workflow_id = ANY(%(ids)s::text[]) UNION ALL "
        "SELECT 1, w.workflow_id, w.creator_token, w.dedup_queue, w.deduplication_id FROM {s}.workflows w "
        "JOIN unnest(%(dq)s::text[], %(did)s::text[]) AS b(q, d) "
        "ON w.dedup_queue = b.q AND w.deduplication_id = b.d WHERE w.deduplication_id IS NOT NULL"
    )


def _import_sql(n: _Notify) -> str:
    """Every row of the bundle in one statement; rows come as JSON arrays of objects keyed by column name and are
    typed by the tables' row types. A workflow row that conflicts is skipped (`ON CONFLICT DO NOTHING`) with its
    children, and the caller rolls back unless every row was inserted."""
    wf_cols = mc.EXPORT_COLUMNS["workflows"]
    ctes = [
        f"ins AS (INSERT INTO {{s}}.workflows ({cols(wf_cols)}) SELECT {cols(wf_cols, 'r')} "
        "FROM json_populate_recordset(NULL::{s}.workflows, %(workflows)s::json) AS r "
        "ON CONFLICT DO NOTHING RETURNING workflow_id, status, queue_name)"
    ]
    for i, (table, owner) in enumerate(mc.CHILD_TABLES.items()):
        columns = (owner,) + mc.EXPORT_COLUMNS[table]
        ctes.append(
            f"c{i} AS (INSERT INTO {{s}}.{PG_TABLES[table]} ({cols(columns)}) SELECT {cols(columns, 'r')} "
            f"FROM json_populate_recordset(NULL::{{s}}.{PG_TABLES[table]}, %({table})s::json) AS r "
            f"WHERE r.{owner} IN (SELECT ins.workflow_id FROM ins))"
        )
    q = n.queue("COALESCE(d.queue_name, %(internal)s::text)")
    return (
        f"WITH {', '.join(ctes)} "
        "SELECT (SELECT count(*) FROM ins), "
        f"(SELECT string_agg({q}, '') FROM (SELECT DISTINCT ins.queue_name FROM ins "
        "WHERE ins.status IN ('ENQUEUED', 'DELAYED')) AS d), "
        "(SELECT array_agg(DISTINCT COALESCE(ins.queue_name, %(internal)s::text)) FROM ins "
        "WHERE ins.status IN ('ENQUEUED', 'DELAYED'))"
    )


# ---------------------------------------------------------------------------------------------------------------
# The rendered statements of one schema
# ---------------------------------------------------------------------------------------------------------------


class ManageStatements:
    def __init__(self, schema: str) -> None:
        self.ident = sql.Identifier(schema)
        n = _Notify(schema)

        def r(text: str) -> str:
            return render(text, self.ident)

        self.cancel = {c: r(_cancel_sql(n, children=c)) for c in (False, True)}
        self.cancel_expired = {s: r(_cancel_expired_sql(n, scoped=s)) for s in (False, True)}
        self.next_deadline = {s: r(_next_deadline_sql(scoped=s)) for s in (False, True)}
        self.resume = r(_resume_sql(n))
        self.fork = r(_fork_sql(n))
        self.delete = {
            (c, o): r(_delete_sql(n, children=c, only_terminal=o))
            for c in (False, True)
            for o in (False, True)
        }
        self.keep_boundary = {s: r(_keep_boundary_sql(scoped=s)) for s in (False, True)}
        self.prune = r(_prune_sql())
        self.lease = r(_lease_sql())
        self.list_steps = {o: r(_list_steps_sql(load_output=o)) for o in (False, True)}
        self.export_status = {c: r(_export_status_sql(children=c)) for c in (False, True)}
        self.export_children = {
            (t, c): r(_export_child_sql(t, children=c)) for t in mc.CHILD_TABLES for c in (False, True)
        }
        self.import_conflicts = r(_import_conflicts_sql())
        self.import_rows = r(_import_sql(n))
        self._gc: dict[GcShape, str] = {}
        self._lists: dict[tuple[Any, ...], str] = {}

    def gc_page(self, shape: GcShape) -> str:
        text = self._gc.get(shape)
        if text is None:
            text = self._gc[shape] = render(gc_page_sql(shape), self.ident)
        return text

    @staticmethod
    def is_empty(q: base.WorkflowQuery) -> bool:
        return list_is_empty(q)

    def list_workflows(self, q: base.WorkflowQuery) -> str:
        key = list_shape(q)
        text = self._lists.get(key)
        if text is None:
            if len(self._lists) >= 256:
                self._lists.clear()
            text = self._lists[key] = list_sql(q, self.ident)
        return text
