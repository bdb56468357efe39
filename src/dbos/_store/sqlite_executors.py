"""Executor registration, liveness and takeover for the SQLite backend (02 §12, 07 §2.2)."""

from __future__ import annotations

import sqlite3

from . import base, records
from .base import INTERNAL_QUEUE
from .sqlite_conn import WriteTx
from .sqlite_rows import EXECUTOR_COLUMNS, to_executor

_INSERT_EXECUTOR = """
INSERT INTO dbos_executors (executor_id, incarnation, state, application_name, application_version, hostname,
    host_identity, pid, process_start, started_at, last_heartbeat_at, lease_expires_at, heartbeat_interval_ms,
    lease_ms, queues)
VALUES (?, ?, 'ALIVE', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
# A new version gets a timestamp above every other version of its application, so that it is the latest even
# when registered within the same millisecond as another (05 §7 rule 4); a known version keeps its own.
_REGISTER_VERSION = """
INSERT INTO dbos_app_versions (application_name, version_name, version_id, version_timestamp, created_at)
SELECT :app, :version, :version_id,
       MAX(:now, COALESCE((SELECT MAX(version_timestamp) + 1 FROM dbos_app_versions WHERE application_name = :app),
                          :now)), :now
WHERE true
ON CONFLICT (application_name, version_name) DO NOTHING
"""
_LATEST_VERSION = """
SELECT version_name FROM dbos_app_versions WHERE application_name = ?
ORDER BY version_timestamp DESC, version_name DESC LIMIT 1
"""


def register(tx: WriteTx, reg: base.ExecutorRegistration) -> base.Registration:
    top = tx.execute(
        "SELECT COALESCE(MAX(incarnation), 0) FROM dbos_executors WHERE executor_id = ?", (reg.executor_id,)
    ).fetchone()[0]
    older = tx.execute(
        "UPDATE dbos_executors SET state = 'DEAD' WHERE executor_id = ? AND state = 'ALIVE' "
        "RETURNING incarnation, lease_expires_at",
        (reg.executor_id,),
    ).fetchall()
    incarnation = int(top) + 1
    tx.execute(
        _INSERT_EXECUTOR,
        (
            reg.executor_id,
            incarnation,
            reg.application_name,
            reg.application_version,
            reg.hostname,
            reg.host_identity,
            reg.pid,
            reg.process_start,
            tx.now,
            tx.now,
            tx.now + reg.lease_ms,
            reg.heartbeat_interval_ms,
            reg.lease_ms,
            reg.queues_json,
        ),
    )
    tx.emit("ctl", "executors")
    return base.Registration(
        incarnation=incarnation,
        superseded=sorted(int(r["incarnation"]) for r in older),
        previous_lease_valid=any(r["lease_expires_at"] > tx.now for r in older),
        db_now_ms=tx.now,
        latest_version=_register_version(tx, reg),
    )


def _register_version(tx: WriteTx, reg: base.ExecutorRegistration) -> str | None:
    """Add the executor's version to app_versions if absent; returns the application's latest version."""
    if reg.application_version is None:
        return None
    app = records.app_key(reg.application_name)
    params = {"app": app, "version": reg.application_version, "version_id": records.new_version_id()}
    if tx.execute(_REGISTER_VERSION, params | {"now": tx.now}).rowcount:
        tx.emit("ctl", "versions")
    return str(tx.execute(_LATEST_VERSION, (app,)).fetchone()[0])


def heartbeat(tx: WriteTx, executor_id: str, incarnation: int, queues_json: str | None) -> base.Heartbeat:
    cur = tx.execute(
        "UPDATE dbos_executors SET last_heartbeat_at = ?, lease_expires_at = ? + lease_ms, "
        "queues = COALESCE(?, queues) WHERE executor_id = ? AND incarnation = ? AND state = 'ALIVE'",
        (tx.now, tx.now, queues_json, executor_id, incarnation),
    )
    newer = tx.execute(
        "SELECT EXISTS (SELECT 1 FROM dbos_executors WHERE executor_id = ? AND incarnation > ? AND state = 'ALIVE')",
        (executor_id, incarnation),
    ).fetchone()[0]
    return base.Heartbeat(alive=cur.rowcount == 1, newer_incarnation_alive=bool(newer), db_now_ms=tx.now)


_FIND_DEAD = f"""
SELECT {EXECUTOR_COLUMNS} FROM dbos_executors e
WHERE (e.application_name IS ? OR e.application_name IS NULL)
  AND EXISTS (SELECT 1 FROM dbos_workflows w
              WHERE w.status = 'PENDING' AND w.executor_id = e.executor_id AND w.incarnation = e.incarnation)
ORDER BY e.executor_id, e.incarnation
"""


def find_dead(conn: sqlite3.Connection, application_name: str | None, now: int) -> list[base.DeadCandidate]:
    out: list[base.DeadCandidate] = []
    for r in conn.execute(_FIND_DEAD, (application_name,)).fetchall():
        ex = to_executor(r)
        certain = ex.state in ("STOPPED", "DEAD") or ex.lease_expires_at < now
        out.append(base.DeadCandidate(ex, certain))
    return out


_MARK_DEAD = "UPDATE dbos_executors SET state = 'DEAD' WHERE executor_id = ? AND incarnation = ?"
_MARK_DEAD_IF_EXPIRED = _MARK_DEAD + " AND (state <> 'ALIVE' OR lease_expires_at < ?)"
_REQUEUE_OWNED = """
UPDATE dbos_workflows
SET status = 'ENQUEUED', queue_name = COALESCE(queue_name, ?), executor_id = NULL, incarnation = NULL,
    claim_token = NULL, claim_batch = NULL, updated_at = ?
WHERE status = 'PENDING' AND executor_id = ? AND incarnation = ?
RETURNING workflow_id, queue_name
"""


def take_over(tx: WriteTx, executor_id: str, incarnation: int, require_expired: bool) -> list[str]:
    if require_expired:
        cur = tx.execute(_MARK_DEAD_IF_EXPIRED, (executor_id, incarnation, tx.now))
        if cur.rowcount == 0:
            return []  # a heartbeat landed first, or the row is gone
    else:
        cur = tx.execute(_MARK_DEAD, (executor_id, incarnation))
    if cur.rowcount:
        tx.emit("ctl", "executors")
    rows = tx.execute(_REQUEUE_OWNED, (INTERNAL_QUEUE, tx.now, executor_id, incarnation)).fetchall()
    return _emit_requeued(tx, rows)


_REQUEUE_ORPHANS = """
UPDATE dbos_workflows
SET status = 'ENQUEUED', queue_name = COALESCE(queue_name, ?), executor_id = NULL, incarnation = NULL,
    claim_token = NULL, claim_batch = NULL, updated_at = ?
WHERE status = 'PENDING' AND (application_name IS ? OR application_name IS NULL)
  AND NOT EXISTS (SELECT 1 FROM dbos_executors e
                  WHERE e.executor_id = dbos_workflows.executor_id AND e.incarnation = dbos_workflows.incarnation)
RETURNING workflow_id, queue_name
"""


def requeue_orphans(tx: WriteTx, application_name: str | None) -> list[str]:
    rows = tx.execute(_REQUEUE_ORPHANS, (INTERNAL_QUEUE, tx.now, application_name)).fetchall()
    return _emit_requeued(tx, rows)


def _emit_requeued(tx: WriteTx, rows: list[sqlite3.Row]) -> list[str]:
    for r in rows:
        tx.emit("queue", r["queue_name"])
    return sorted(r["workflow_id"] for r in rows)


def mark_stopped(tx: WriteTx, executor_id: str, incarnation: int) -> None:
    cur = tx.execute(
        "UPDATE dbos_executors SET state = 'STOPPED', stopped_at = ? "
        "WHERE executor_id = ? AND incarnation = ? AND state = 'ALIVE'",
        (tx.now, executor_id, incarnation),
    )
    if cur.rowcount:
        tx.emit("ctl", "executors")


def list_executors(conn: sqlite3.Connection, include_inactive: bool) -> list[base.ExecutorRow]:
    where = "" if include_inactive else "WHERE state = 'ALIVE'"
    cur = conn.execute(
        f"SELECT {EXECUTOR_COLUMNS} FROM dbos_executors {where} ORDER BY executor_id, incarnation"
    )
    return [to_executor(r) for r in cur.fetchall()]
