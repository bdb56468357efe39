"""Management operations of the SQLite backend (02 §3-§6, §10; 07 §2.2 "Management"): cancel, deadlines,
resume, fork, delete, garbage-collection selection, executor pruning and maintenance leases.

Writes take a `WriteTx` (one `BEGIN IMMEDIATE` transaction, which also gives fork its single snapshot), reads a
reader connection. Trees are walked with recursive CTEs over the `parent` index.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from . import base, records
from . import manage_common as mc
from .base import INTERNAL_QUEUE
from .sqlite_conn import WriteTx
from .sqlite_rows import json_list

_ACTIVE = "('PENDING', 'ENQUEUED', 'DELAYED')"
_CANCELLABLE = "('PENDING', 'ENQUEUED', 'DELAYED', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED')"
_TERMINAL = "('SUCCESS', 'ERROR', 'CANCELLED', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED')"

# The listed rows and, through parent_workflow_id, every descendant (UNION stops on any cycle).
_TREE = """
WITH RECURSIVE tree(root, wid) AS (
  SELECT j.value, w.workflow_id FROM json_each(:ids) j JOIN dbos_workflows w ON w.workflow_id = j.value
  UNION
  SELECT t.root, c.workflow_id FROM tree t
  JOIN dbos_workflows c INDEXED BY dbos_workflows_parent ON c.parent_workflow_id = t.wid
)
"""


def _emit_stopped(tx: WriteTx, rows: Sequence[sqlite3.Row], queue_rows: Sequence[sqlite3.Row]) -> None:
    """`wf` and `cancel` per row, `queue` per queue of `queue_rows` (the rows that were active)."""
    for r in rows:
        tx.emit("wf", r["workflow_id"])
        tx.emit("cancel", r["workflow_id"])
    for r in queue_rows:
        if r["queue_name"] is not None:
            tx.emit("queue", r["queue_name"])


def _tree_ids(tx: WriteTx, ids: Sequence[str]) -> list[str]:
    rows = tx.execute(_TREE + "SELECT DISTINCT wid FROM tree", {"ids": json_list(ids)}).fetchall()
    return [r[0] for r in rows]


# ---------------------------------------------------------------------------------------------------------------
# Cancel and deadlines
# ---------------------------------------------------------------------------------------------------------------

_CANCEL = (
    "UPDATE dbos_workflows SET status = 'CANCELLED', cancel_reason = :reason, completed_at = :now, "
    "updated_at = :now WHERE workflow_id IN (SELECT value FROM json_each(:ids)) AND +status {statuses} "
    "RETURNING workflow_id, queue_name"
)
_CANCEL_ACTIVE = _CANCEL.format(statuses=f"IN {_ACTIVE}")
_CANCEL_DEAD_LETTERED = _CANCEL.format(statuses="= 'MAX_RECOVERY_ATTEMPTS_EXCEEDED'")


def cancel_workflows(
    tx: WriteTx, ids: Sequence[str], cancel_children: bool, reason: base.CancelReason
) -> list[str]:
    """Listed rows in any cancellable status; descendants only while PENDING, ENQUEUED or DELAYED."""
    if not ids:
        return []
    targets = _tree_ids(tx, ids) if cancel_children else list(ids)
    params = {"reason": reason, "now": tx.now}
    active = tx.execute(_CANCEL_ACTIVE, params | {"ids": json_list(targets)}).fetchall()
    dead = tx.execute(_CANCEL_DEAD_LETTERED, params | {"ids": json_list(ids)}).fetchall()
    _emit_stopped(tx, active + dead, active)
    return mc.changed_order(ids, (r["workflow_id"] for r in active + dead))


_CANCEL_EXPIRED = f"""
UPDATE dbos_workflows
SET status = 'CANCELLED', cancel_reason = 'deadline', completed_at = :now, updated_at = :now
WHERE seq IN (SELECT seq FROM dbos_workflows INDEXED BY dbos_workflows_deadline
              WHERE deadline_ms IS NOT NULL AND deadline_ms <= :now AND status IN {_ACTIVE} {{scope}}
              ORDER BY deadline_ms, seq LIMIT :limit)
  AND +status IN {_ACTIVE}
RETURNING workflow_id, queue_name, deadline_ms, seq
"""
_SCOPE = "AND (application_name = :app OR application_name IS NULL)"


def _scope(application_name: str | None) -> str:
    return "" if application_name is None else _SCOPE


def cancel_expired(tx: WriteTx, application_name: str | None, limit: int) -> list[str]:
    if limit <= 0:
        return []
    sql = _CANCEL_EXPIRED.format(scope=_scope(application_name))
    params = {"now": tx.now, "limit": limit, "app": application_name}
    rows = sorted(tx.execute(sql, params).fetchall(), key=lambda r: (r["deadline_ms"], r["seq"]))
    _emit_stopped(tx, rows, rows)
    return [r["workflow_id"] for r in rows]


_NEXT_DEADLINE = (
    "SELECT deadline_ms FROM dbos_workflows INDEXED BY dbos_workflows_deadline "
    f"WHERE deadline_ms IS NOT NULL AND status IN {_ACTIVE} {{scope}} ORDER BY deadline_ms LIMIT 1"
)


def next_deadline(conn: sqlite3.Connection, application_name: str | None) -> int | None:
    sql = _NEXT_DEADLINE.format(scope=_scope(application_name))
    row = conn.execute(sql, {"app": application_name}).fetchone()
    return None if row is None else int(row[0])


# ---------------------------------------------------------------------------------------------------------------
# Resume
# ---------------------------------------------------------------------------------------------------------------

_FIRST_MISSING = (
    "SELECT j.value FROM json_each(?) j WHERE NOT EXISTS "
    "(SELECT 1 FROM dbos_workflows w WHERE w.workflow_id = j.value) ORDER BY j.key LIMIT 1"
)
# Both reset recovery_attempts to 0, so they set steps_seeded: the row may have checkpoints, and the claim's
# `may_have_steps` (false for a first dispatch of an unseeded row) must not skip loading them.
_RESUME = """
UPDATE dbos_workflows
SET status = 'ENQUEUED', queue_name = :queue, recovery_attempts = 0, steps_seeded = 1, deadline_ms = NULL,
    delay_until = NULL, output = NULL, error = NULL, outcome_serializer = NULL, cancel_reason = NULL,
    completed_at = NULL, dequeued_at = NULL, executor_id = NULL, incarnation = NULL, claim_token = NULL,
    claim_batch = NULL, updated_at = :now
WHERE workflow_id IN (SELECT value FROM json_each(:ids))
  AND +status IN ('CANCELLED', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED', 'ENQUEUED', 'DELAYED')
RETURNING workflow_id, queue_name
"""
# PENDING rows whose owner incarnation is unknown, not ALIVE, or lease-expired: recovered as in a takeover.
_RESUME_ORPHANED = """
UPDATE dbos_workflows
SET status = 'ENQUEUED', queue_name = COALESCE(queue_name, :internal), executor_id = NULL, incarnation = NULL,
    claim_token = NULL, claim_batch = NULL, recovery_attempts = 0, steps_seeded = 1, updated_at = :now
WHERE workflow_id IN (SELECT value FROM json_each(:ids)) AND +status = 'PENDING'
  AND NOT EXISTS (SELECT 1 FROM dbos_executors e
                  WHERE e.executor_id = dbos_workflows.executor_id AND e.incarnation = dbos_workflows.incarnation
                    AND e.state = 'ALIVE' AND e.lease_expires_at >= :now)
RETURNING workflow_id, queue_name
"""


def resume_workflows(tx: WriteTx, ids: Sequence[str], queue_name: str | None) -> base.ResumeResult:
    if not ids:
        return base.ResumeResult(None, [])
    listed = json_list(ids)
    missing = tx.execute(_FIRST_MISSING, (listed,)).fetchone()
    if missing is not None:
        return base.ResumeResult(str(missing[0]), [])
    params = {"ids": listed, "now": tx.now, "queue": queue_name or INTERNAL_QUEUE, "internal": INTERNAL_QUEUE}
    # The orphan update runs second, so the rows it re-enqueues are not moved again by the first.
    rows = tx.execute(_RESUME, params).fetchall() + tx.execute(_RESUME_ORPHANED, params).fetchall()
    for r in rows:
        tx.emit("queue", r["queue_name"])
    for r in rows:
        tx.emit("wf", r["workflow_id"])
    resumed = {r["workflow_id"] for r in rows}
    return base.ResumeResult(None, [wid for wid in dict.fromkeys(ids) if wid in resumed])


# ---------------------------------------------------------------------------------------------------------------
# Fork
# ---------------------------------------------------------------------------------------------------------------

_RESULT_COLUMNS = "workflow_id, name, class_name, config_name, status, queue_name, created_at, deadline_ms"
_FORK_TARGET = (
    f"SELECT {_RESULT_COLUMNS}, forked_from, creator_token FROM dbos_workflows WHERE workflow_id = ?"
)
_FORK_INSERT = f"""
INSERT INTO dbos_workflows (workflow_id, status, name, class_name, config_name, inputs, receiver, inputs_serializer,
    authenticated_user, authenticated_roles, assumed_role, application_name, application_version, timeout_ms,
    queue_name, partition_key, priority, recovery_attempts, forked_from, steps_seeded, creator_token, created_at,
    updated_at)
SELECT :new, 'ENQUEUED', name, class_name, config_name, inputs, receiver, inputs_serializer, authenticated_user,
    authenticated_roles, assumed_role, application_name, :version, :timeout, :queue, :partition, 0, 0,
    workflow_id, 1, :creator, :now, :now
FROM dbos_workflows WHERE workflow_id = :source
RETURNING {_RESULT_COLUMNS}
"""
_FORK_STEPS = """
INSERT INTO dbos_steps (workflow_id, step_id, name, output, error, serializer, child_workflow_id, started_at,
    completed_at, write_token)
SELECT :new, s.step_id, s.name, s.output, s.error, s.serializer,
    COALESCE((SELECT m.value FROM json_each(:children) m WHERE m.key = s.child_workflow_id), s.child_workflow_id),
    s.started_at, s.completed_at, s.write_token
FROM dbos_steps s WHERE s.workflow_id = :source AND s.step_id < :start
"""
_FORK_HISTORY = """
INSERT INTO dbos_event_history (workflow_id, step_id, key, key_digest, value, serializer, created_at)
SELECT :new, step_id, key, key_digest, value, serializer, created_at
FROM dbos_event_history WHERE workflow_id = :source AND step_id < :start
"""
# The current value of each key: its copied history entry with the largest step_id.
_FORK_EVENTS = """
INSERT INTO dbos_events (workflow_id, key, key_digest, value, serializer, updated_at)
SELECT :new, key, key_digest, value, serializer, created_at
FROM (SELECT key, key_digest, value, serializer, created_at,
             row_number() OVER (PARTITION BY key_digest ORDER BY step_id DESC) AS latest
      FROM dbos_event_history WHERE workflow_id = :new)
WHERE latest = 1
"""
_FORK_STREAMS = """
INSERT INTO dbos_streams (workflow_id, key, key_digest, stream_offset, value, serializer, is_end, writer_step_id,
    step_seq, created_at)
SELECT :new, key, key_digest, stream_offset, value, serializer, is_end, writer_step_id, step_seq, created_at
FROM dbos_streams WHERE workflow_id = :source AND writer_step_id < :start
"""
_MARK_FORKED = "UPDATE dbos_workflows SET was_forked_from = 1 WHERE workflow_id = ? AND was_forked_from = 0"


def fork_workflow(tx: WriteTx, spec: base.ForkSpec) -> base.InsertResult:
    source = tx.execute("SELECT 1 FROM dbos_workflows WHERE workflow_id = ?", (spec.source_id,)).fetchone()
    if source is None:
        return base.InsertResult("source_missing", spec.new_id)
    target = tx.execute(_FORK_TARGET, (spec.new_id,)).fetchone()
    if target is not None:
        kind = mc.fork_kind(spec, target["forked_from"], target["creator_token"])
        return records.insert_result(kind, target)
    queue = spec.queue_name or INTERNAL_QUEUE
    params: dict[str, Any] = {
        "new": spec.new_id,
        "source": spec.source_id,
        "start": spec.start_step,
        "version": spec.application_version,
        "timeout": spec.timeout_ms,
        "queue": queue,
        "partition": spec.partition_key,
        "creator": spec.creator_token,
        "now": tx.now,
        "children": json.dumps(dict(spec.replacement_children)),
    }
    row = tx.execute(_FORK_INSERT, params).fetchone()
    for sql in (_FORK_STEPS, _FORK_HISTORY, _FORK_EVENTS, _FORK_STREAMS):
        tx.execute(sql, params)
    tx.execute(_MARK_FORKED, (spec.source_id,))
    tx.emit("queue", queue)
    return records.insert_result("created", row)


# ---------------------------------------------------------------------------------------------------------------
# Delete
# ---------------------------------------------------------------------------------------------------------------

_TREE_ROWS = _TREE + (
    "SELECT t.root, t.wid, w.status FROM tree t JOIN dbos_workflows w ON w.workflow_id = t.wid"
)
_LISTED_ROWS = (
    "SELECT j.value AS root, w.workflow_id AS wid, w.status FROM json_each(:ids) j "
    "JOIN dbos_workflows w ON w.workflow_id = j.value"
)
# Steps, messages, events, event history and streams go with the row (ON DELETE CASCADE, foreign_keys=ON).
_DELETE = (
    "DELETE FROM dbos_workflows WHERE workflow_id IN (SELECT value FROM json_each(?)) "
    "RETURNING workflow_id, queue_name, status"
)


def delete_workflows(
    tx: WriteTx, ids: Sequence[str], delete_children: bool, only_terminal: bool
) -> list[str]:
    if not ids:
        return []
    members = tx.execute(_TREE_ROWS if delete_children else _LISTED_ROWS, {"ids": json_list(ids)}).fetchall()
    trees: dict[str, list[sqlite3.Row]] = {}
    for r in members:
        trees.setdefault(r["root"], []).append(r)
    doomed: set[str] = set()
    for tree in trees.values():
        if only_terminal and any(r["status"] not in base.TERMINAL_STATUSES for r in tree):
            continue  # nothing of a tree with a live member
        doomed.update(r["wid"] for r in tree)
    if not doomed:
        return []
    rows = tx.execute(_DELETE, (json_list(sorted(doomed)),)).fetchall()
    _emit_stopped(tx, rows, [r for r in rows if r["status"] in mc.ACTIVE_STATUSES])
    return mc.changed_order(ids, (r["workflow_id"] for r in rows))


# ---------------------------------------------------------------------------------------------------------------
# Garbage-collection selection (02 §10 rule 1)
# ---------------------------------------------------------------------------------------------------------------

_GC_CHUNK = 500
# The keep_last-th most recently created row of the scope: rows at or after it are kept.
_KEEP_BOUNDARY = (
    "SELECT created_at, workflow_id FROM dbos_workflows INDEXED BY dbos_workflows_created WHERE 1 {scope} "
    "ORDER BY created_at DESC, workflow_id DESC LIMIT 1 OFFSET :offset"
)
# Candidate roots, oldest first: qualifying, in scope, no parent or a vanished one.
_GC_ROOTS = f"""
SELECT w.workflow_id, w.created_at FROM dbos_workflows w INDEXED BY dbos_workflows_created
WHERE w.status IN {_TERMINAL} {{bounds}} {{scope}}
  AND (w.parent_workflow_id IS NULL
       OR NOT EXISTS (SELECT 1 FROM dbos_workflows p WHERE p.workflow_id = w.parent_workflow_id))
ORDER BY w.created_at, w.workflow_id LIMIT :chunk
"""
# Per root: its tree size and how many members do not qualify.
_GC_TREES = """
WITH RECURSIVE tree(root, wid) AS (
  SELECT value, value FROM json_each(:roots)
  UNION
  SELECT t.root, c.workflow_id FROM tree t
  JOIN dbos_workflows c INDEXED BY dbos_workflows_parent ON c.parent_workflow_id = t.wid
)
SELECT t.root, count(*) AS size, sum(CASE WHEN {qualifies} THEN 0 ELSE 1 END) AS bad
FROM tree t JOIN dbos_workflows w ON w.workflow_id = t.wid GROUP BY t.root
"""


def gc_select(
    conn: sqlite3.Connection,
    application_name: str | None,
    cutoff_ms: int | None,
    keep_last: int | None,
    limit: int,
) -> list[str]:
    scope = _scope(application_name).replace("application_name", "w.application_name")
    params: dict[str, Any] = {"app": application_name, "cutoff": cutoff_ms, "chunk": _GC_CHUNK}
    bounds: list[str] = []
    qualifies = [f"w.status IN {_TERMINAL}"]
    if cutoff_ms is not None:
        bounds.append("w.created_at < :cutoff")
        qualifies.append("w.created_at < :cutoff")
    if keep_last:
        boundary = conn.execute(
            _KEEP_BOUNDARY.format(scope=_scope(application_name)),
            {"app": application_name, "offset": keep_last - 1},
        ).fetchone()
        if boundary is None:
            return []  # the scope has at most keep_last rows: every one is kept
        params |= {"keep_at": boundary[0], "keep_id": boundary[1]}
        bounds.append("(w.created_at, w.workflow_id) < (:keep_at, :keep_id)")
        in_scope = (
            "1" if application_name is None else "(w.application_name = :app OR w.application_name IS NULL)"
        )
        qualifies.append(f"NOT ({in_scope} AND (w.created_at, w.workflow_id) >= (:keep_at, :keep_id))")
    tree_sql = _GC_TREES.format(qualifies=" AND ".join(qualifies))
    trees: list[tuple[str, int]] = []
    total = 0
    after: tuple[int, str] | None = None
    while total < limit:
        page_bounds = bounds + (
            [] if after is None else ["(w.created_at, w.workflow_id) > (:after_at, :after_id)"]
        )
        sql = _GC_ROOTS.format(bounds="".join(f" AND {b}" for b in page_bounds), scope=scope)
        page_params = params if after is None else params | {"after_at": after[0], "after_id": after[1]}
        roots = conn.execute(sql, page_params).fetchall()
        if not roots:
            break
        after = (roots[-1]["created_at"], roots[-1]["workflow_id"])
        ids = [r["workflow_id"] for r in roots]
        sizes = {
            r["root"]: (r["size"], r["bad"])
            for r in conn.execute(tree_sql, params | {"roots": json_list(ids)}).fetchall()
        }
        for wid in ids:
            size, bad = sizes.get(wid, (0, 1))
            if bad == 0:
                trees.append((wid, size))
                total += size
                if total >= limit:
                    break
        if len(roots) < _GC_CHUNK:
            break
    return mc.gc_batches(trees, limit)


# ---------------------------------------------------------------------------------------------------------------
# Executors and maintenance leases
# ---------------------------------------------------------------------------------------------------------------

_PRUNE_EXECUTORS = """
DELETE FROM dbos_executors
WHERE state IN ('DEAD', 'STOPPED') AND last_heartbeat_at < :before
  AND NOT EXISTS (SELECT 1 FROM dbos_workflows w INDEXED BY dbos_workflows_owner
                  WHERE w.status = 'PENDING' AND w.executor_id = dbos_executors.executor_id
                    AND w.incarnation = dbos_executors.incarnation)
"""
# One probe of the queue index per queue (a loose index scan), then a range delete per queue.
_PRUNE_CLAIMS = """
WITH RECURSIVE q(name) AS (
  SELECT (SELECT min(queue_name) FROM dbos_queue_claims)
  UNION ALL
  SELECT (SELECT min(queue_name) FROM dbos_queue_claims WHERE queue_name > q.name) FROM q WHERE q.name IS NOT NULL
)
DELETE FROM dbos_queue_claims
WHERE queue_name IN (SELECT name FROM q WHERE name IS NOT NULL) AND claimed_at < :since
"""


def prune_executors(tx: WriteTx, before_ms: int) -> int:
    deleted = tx.execute(_PRUNE_EXECUTORS, {"before": before_ms}).rowcount
    tx.execute(_PRUNE_CLAIMS, {"since": tx.now - records.RATE_CLAIMS_RETENTION_MS})
    return int(deleted)


_LEASE = """
INSERT INTO dbos_maintenance_leases (name, holder, expires_at) VALUES (:name, :holder, :expires)
ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
WHERE dbos_maintenance_leases.holder = excluded.holder OR dbos_maintenance_leases.expires_at < :now
"""


def try_maintenance_lease(tx: WriteTx, name: str, holder: str, ttl_ms: int) -> bool:
    params = {"name": name, "holder": holder, "expires": tx.now + ttl_ms, "now": tx.now}
    return bool(tx.execute(_LEASE, params).rowcount == 1)
