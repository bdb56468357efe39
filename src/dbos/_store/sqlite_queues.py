"""Queue operations of the SQLite backend: claims under shared limits, release, delayed promotion and queue
statistics (03 §8, §9, §11, §12, §19, §21; 07 §2.2 "Queues and claims").

Every claim is one `BEGIN IMMEDIATE` transaction, so the file's write lock serializes claimers across
processes and the counts behind G, PG, L and PL are exact. Queries name their index (`INDEXED BY`) where the
planner could otherwise pick a plan that scans the backlog, for example after `PRAGMA optimize` has analyzed
the tables.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from . import base, records
from .base import INTERNAL_QUEUE
from .records import workflow_row
from .sqlite_conn import WriteTx
from .sqlite_rows import json_list

# ---------------------------------------------------------------------------------------------------------------
# Claims
# ---------------------------------------------------------------------------------------------------------------

# The eligibility of an ENQUEUED row for this claimer (03 §13): registered name, application and version
# (pinned to the claimer's, or version-less while the claimer runs the newest live version: `:unversioned`, from
# `_NEWEST_LIVE`). Rows whose deadline passed are cancelled first (`_CANCEL_EXPIRED`), and `_LIVE` skips any
# left over.
_ELIGIBLE = """status = 'ENQUEUED' AND queue_name = :queue
  AND name IN (SELECT value FROM json_each(:names))
  AND (application_name IS NULL OR application_name = :app)
  AND (application_version = :version OR (application_version IS NULL AND :unversioned))"""

# 1 when no live (ALIVE, lease not expired) executor of the claimer's application runs a version newer than the
# claimer's: larger version_timestamp, ties broken by name (03 §13 rule 2, 07 §3.2 rule 7). A claimer version
# without a version row counts as older than every registered one; a claimer without an application name has no
# peers to defer to.
_NEWEST_LIVE = """
SELECT NOT EXISTS (
  SELECT 1 FROM dbos_executors e
  JOIN dbos_app_versions v ON v.application_name = e.application_name AND v.version_name = e.application_version
  WHERE e.application_name = :app AND e.state = 'ALIVE' AND e.lease_expires_at >= :now
    AND (v.version_timestamp, v.version_name) > (
      COALESCE((SELECT m.version_timestamp FROM dbos_app_versions m
                WHERE m.application_name = :app AND m.version_name = :version), -1),
      COALESCE(:version, '')))
"""

_CANCEL_EXPIRED = f"""
UPDATE dbos_workflows
SET status = 'CANCELLED', cancel_reason = 'deadline', completed_at = :now, updated_at = :now
WHERE seq IN (SELECT seq FROM dbos_workflows INDEXED BY dbos_workflows_deadline
              WHERE deadline_ms IS NOT NULL AND deadline_ms <= :now
                AND status IN ('PENDING', 'ENQUEUED', 'DELAYED') AND {_ELIGIBLE}
              ORDER BY deadline_ms, seq LIMIT 1000)
  AND +status = 'ENQUEUED'
RETURNING workflow_id, deadline_ms, seq
"""
_LIVE = " AND (deadline_ms IS NULL OR deadline_ms > :now)"
_CANDIDATES = (
    f"SELECT workflow_id FROM dbos_workflows INDEXED BY dbos_workflows_claim WHERE {_ELIGIBLE}{_LIVE} "
    "ORDER BY priority DESC, seq LIMIT :limit"
)
_LANE_ROWS = (
    f"SELECT workflow_id, priority, seq FROM dbos_workflows INDEXED BY dbos_workflows_lane WHERE {_ELIGIBLE}{_LIVE} "
    "AND partition_key {key} ORDER BY priority DESC, seq LIMIT :limit OFFSET :offset"
)
_LANE_ROWS_KEY = _LANE_ROWS.format(key="= :key")
_LANE_ROWS_NULL = _LANE_ROWS.format(key="IS NULL")

# A loose index scan of the lane index: each step seeks the next partition key with ENQUEUED rows, so listing
# the lanes costs one index probe per lane, whatever their backlog (03 §8 rule 6, §21 rule 7). Each lane is
# joined to its first eligible row (its head), which drops lanes with nothing eligible.
_LANES = f"""
WITH RECURSIVE lanes(k) AS (
  SELECT (SELECT partition_key FROM dbos_workflows INDEXED BY dbos_workflows_lane
          WHERE status = 'ENQUEUED' AND queue_name = :queue AND partition_key IS NOT NULL
          ORDER BY partition_key LIMIT 1)
  UNION ALL
  SELECT (SELECT partition_key FROM dbos_workflows INDEXED BY dbos_workflows_lane
          WHERE status = 'ENQUEUED' AND queue_name = :queue AND partition_key > lanes.k
          ORDER BY partition_key LIMIT 1)
  FROM lanes WHERE lanes.k IS NOT NULL
)
SELECT lanes.k, w.workflow_id, w.priority, w.seq
FROM lanes JOIN dbos_workflows w
  ON w.seq = (SELECT seq FROM dbos_workflows INDEXED BY dbos_workflows_lane
              WHERE {_ELIGIBLE}{_LIVE} AND partition_key = lanes.k ORDER BY priority DESC, seq LIMIT 1)
WHERE lanes.k IS NOT NULL
"""
# PENDING counts through the `active` index (its predicate is repeated so the partial index applies).
_ACTIVE = "status IN ('ENQUEUED', 'DELAYED', 'PENDING')"
_PENDING = (
    f"SELECT count(*) FROM dbos_workflows INDEXED BY dbos_workflows_active "
    f"WHERE queue_name = :queue AND status = 'PENDING' AND {_ACTIVE}"
)
_PENDING_BY_LANE = (
    f"SELECT partition_key, count(*) AS n FROM dbos_workflows INDEXED BY dbos_workflows_active "
    f"WHERE queue_name = :queue AND status = 'PENDING' AND {_ACTIVE} GROUP BY partition_key"
)
_IN_WINDOW = (
    "SELECT count(*) AS n, min(claimed_at) AS oldest FROM dbos_queue_claims INDEXED BY dbos_queue_claims_queue "
    "WHERE queue_name = :queue AND claimed_at > :since"
)
_IN_WINDOW_BY_LANE = (
    "SELECT partition_key, count(*) AS n, min(claimed_at) AS oldest FROM dbos_queue_claims "
    "INDEXED BY dbos_queue_claims_queue WHERE queue_name = :queue AND claimed_at > :since GROUP BY partition_key"
)
# randomblob(16) gives each row its own 128-bit claim token inside one statement. `+status` keeps the planner
# on the workflow_id index instead of scanning every ENQUEUED row.
_CLAIM = """
UPDATE dbos_workflows
SET status = 'PENDING', executor_id = :executor, incarnation = :incarnation,
    claim_token = lower(hex(randomblob(16))), claim_batch = :batch, dequeued_at = :now, updated_at = :now,
    recovery_attempts = recovery_attempts + 1, application_version = COALESCE(application_version, :version),
    deadline_ms = COALESCE(deadline_ms, :now + timeout_ms)
WHERE workflow_id IN (SELECT value FROM json_each(:ids)) AND +status = 'ENQUEUED'
RETURNING *
"""
_BATCH_READBACK = """
SELECT * FROM dbos_workflows
WHERE status = 'PENDING' AND executor_id = ? AND incarnation = ? AND claim_batch = ?
ORDER BY priority DESC, seq
"""
_RECORD_CLAIM = (
    "INSERT INTO dbos_queue_claims (queue_name, partition_key, claimed_at, workflow_id) VALUES (?, ?, ?, ?)"
)
_PRUNE_CLAIMS = "DELETE FROM dbos_queue_claims WHERE queue_name = ? AND claimed_at < ?"


class ClaimsPruner:
    """When a queue's old `queue_claims` rows are next deleted: at most once per queue per minute, inside a
    claim of that queue (07 §3.2 rule 2). Used under the store's writer lock."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def due(self, queue_name: str) -> bool:
        mono = time.monotonic()
        last = self._last.get(queue_name)
        if last is not None and mono - last < records.RATE_CLAIMS_PRUNE_EVERY_S:
            return False
        self._last[queue_name] = mono
        return True


def _claimed(r: sqlite3.Row) -> base.ClaimedWorkflow:
    may_have_steps = records.may_have_steps(r["recovery_attempts"] - 1, r["steps_seeded"])
    return base.ClaimedWorkflow(
        base.Fence(r["workflow_id"], r["claim_token"]), workflow_row(r), may_have_steps
    )


def _window(tx: WriteTx, sql: str, queue: str, rate: base.RateLimit) -> list[sqlite3.Row]:
    return tx.execute(sql, {"queue": queue, "since": tx.now - rate.period_ms}).fetchall()


def _earliest(*slots: int | None) -> int | None:
    present = [s for s in slots if s is not None]
    return min(present) if present else None


def _paused(tx: WriteTx, queue_name: str) -> bool:
    row = tx.execute("SELECT 1 FROM dbos_queue_pauses WHERE queue_name = ?", (queue_name,)).fetchone()
    return row is not None


def claim(tx: WriteTx, req: base.ClaimRequest, pruner: ClaimsPruner) -> base.ClaimResult:
    # A retry of a batch that committed returns that batch (07 §7 rule 1).
    prior = tx.execute(_BATCH_READBACK, (req.executor_id, req.incarnation, req.batch_token)).fetchall()
    if prior:
        return base.ClaimResult([_claimed(r) for r in prior], [])
    params: dict[str, Any] = {
        "queue": req.queue_name,
        "names": json_list(sorted(req.registered)),
        "app": req.application_name,
        "version": req.application_version,
        "now": tx.now,
    }
    params["unversioned"] = tx.execute(_NEWEST_LIVE, params).fetchone()[0]
    expired = sorted(
        tx.execute(_CANCEL_EXPIRED, params).fetchall(), key=lambda r: (r["deadline_ms"], r["seq"])
    )
    cancelled = [r["workflow_id"] for r in expired]
    for wid in cancelled:
        tx.emit("wf", wid)
    pending = tx.execute(_PENDING, params).fetchone()[0] if req.global_concurrency is not None else 0
    in_window, oldest = 0, None
    if req.rate is not None:
        w = _window(tx, _IN_WINDOW, req.queue_name, req.rate)[0]
        in_window, oldest = w["n"], w["oldest"]
    budget, slot = records.claim_budget(req, pending, in_window, oldest)
    if budget > 0 and _paused(tx, req.queue_name):
        budget = (
            0  # checked inside the claim transaction, so a committed pause is never raced (03 §18 rule 8)
        )
    if budget > 0 and req.partitioned:
        ids, lane_slot = _pick_partitioned(tx, req, params, budget)
        slot = _earliest(slot, lane_slot)
    elif budget > 0:
        ids = [r[0] for r in tx.execute(_CANDIDATES, params | {"limit": budget}).fetchall()]
    else:
        ids = []
    claimed = _claim_rows(tx, req, params, ids) if ids else []
    if claimed and (req.rate is not None or req.partition_rate is not None):
        _record_claims(tx, req, claimed, pruner)
    return base.ClaimResult(claimed, cancelled, slot)


def _pick_partitioned(
    tx: WriteTx, req: base.ClaimRequest, params: dict[str, Any], budget: int
) -> tuple[list[str], int | None]:
    heads: dict[str | None, tuple[str, int, int]] = {
        r[0]: (r[1], r[2], r[3]) for r in tx.execute(_LANES, params).fetchall()
    }
    no_key = tx.execute(_LANE_ROWS_NULL, params | {"limit": 1, "offset": 0}).fetchone()
    if no_key is not None:  # the "no key" lane: one more probe of the lane index
        heads[None] = (no_key[0], no_key[1], no_key[2])
    if not heads:
        return [], None
    pending: dict[str | None, int] = {}
    if req.partition_concurrency is not None:
        pending = {r["partition_key"]: r["n"] for r in tx.execute(_PENDING_BY_LANE, params).fetchall()}
    window: dict[str | None, tuple[int, int | None]] = {}
    if req.partition_rate is not None:
        rows = _window(tx, _IN_WINDOW_BY_LANE, req.queue_name, req.partition_rate)
        window = {r["partition_key"]: (r["n"], r["oldest"]) for r in rows}
    rooms: dict[str | None, int | None] = {}
    slot: int | None = None
    for key in heads:
        in_window, oldest = window.get(key, (0, None))
        rooms[key], lane_slot = records.lane_room(req, key, pending.get(key, 0), in_window, oldest)
        slot = _earliest(slot, lane_slot)

    def fetch(key: str | None, offset: int, limit: int) -> list[tuple[str, int, int]]:
        sql = _LANE_ROWS_NULL if key is None else _LANE_ROWS_KEY
        cur = tx.execute(sql, params | {"key": key, "limit": limit, "offset": offset})
        return [(r[0], r[1], r[2]) for r in cur.fetchall()]

    return records.pick_lanes(heads, rooms, budget, req.lane_order, fetch), slot


def _claim_rows(
    tx: WriteTx, req: base.ClaimRequest, params: dict[str, Any], ids: list[str]
) -> list[base.ClaimedWorkflow]:
    stamp = params | {
        "executor": req.executor_id,
        "incarnation": req.incarnation,
        "batch": req.batch_token,
        "ids": json_list(ids),
    }
    by_id = {r["workflow_id"]: r for r in tx.execute(_CLAIM, stamp).fetchall()}
    return [_claimed(by_id[wid]) for wid in ids if wid in by_id]


def _record_claims(
    tx: WriteTx, req: base.ClaimRequest, claimed: list[base.ClaimedWorkflow], pruner: ClaimsPruner
) -> None:
    tx.conn.executemany(
        _RECORD_CLAIM,
        [(req.queue_name, c.row.partition_key, tx.now, c.fence.workflow_id) for c in claimed],
    )
    if pruner.due(req.queue_name):
        tx.execute(_PRUNE_CLAIMS, (req.queue_name, tx.now - records.RATE_CLAIMS_RETENTION_MS))


# ---------------------------------------------------------------------------------------------------------------
# Release
# ---------------------------------------------------------------------------------------------------------------

_RELEASE = """
UPDATE dbos_workflows
SET status = 'ENQUEUED', queue_name = COALESCE(queue_name, ?), executor_id = NULL, incarnation = NULL,
    claim_token = NULL, claim_batch = NULL, updated_at = ?, recovery_attempts = MAX(recovery_attempts - ?, 0)
WHERE workflow_id = ? AND claim_token = ? AND status = 'PENDING'
RETURNING workflow_id, queue_name
"""


def release(tx: WriteTx, fences: Sequence[base.Fence], refund_attempt: bool) -> list[str]:
    released: list[str] = []
    refund = 1 if refund_attempt else 0
    for f in fences:
        r = tx.execute(_RELEASE, (INTERNAL_QUEUE, tx.now, refund, f.workflow_id, f.claim_token)).fetchone()
        if r is not None:
            released.append(r["workflow_id"])
            tx.emit("queue", r["queue_name"])
    return released


# ---------------------------------------------------------------------------------------------------------------
# Delayed promotion
# ---------------------------------------------------------------------------------------------------------------

_PROMOTE = """
UPDATE dbos_workflows
SET status = 'ENQUEUED', queue_name = COALESCE(queue_name, :internal), updated_at = :now
WHERE seq IN (SELECT seq FROM dbos_workflows INDEXED BY dbos_workflows_delayed
              WHERE status = 'DELAYED' AND delay_until <= :now ORDER BY delay_until, seq LIMIT :limit)
  AND +status = 'DELAYED'
RETURNING workflow_id, queue_name, delay_until, seq
"""
_NEXT_DUE = (
    "SELECT min(delay_until) FROM dbos_workflows INDEXED BY dbos_workflows_delayed WHERE status = 'DELAYED'"
)


def next_due(conn: sqlite3.Connection) -> int | None:
    """The earliest delay_until of a DELAYED row (one probe of the `delayed` index)."""
    value = conn.execute(_NEXT_DUE).fetchone()[0]
    return None if value is None else int(value)


def promote_delayed(tx: WriteTx, limit: int) -> base.PromoteResult:
    rows: list[sqlite3.Row] = []
    if limit > 0:
        params = {"internal": INTERNAL_QUEUE, "now": tx.now, "limit": limit}
        rows = sorted(tx.execute(_PROMOTE, params).fetchall(), key=lambda r: (r["delay_until"], r["seq"]))
    promoted = [(r["workflow_id"], r["queue_name"]) for r in rows]
    for _, queue_name in promoted:
        tx.emit("queue", queue_name)
    return base.PromoteResult(promoted, next_due(tx.conn))


# ---------------------------------------------------------------------------------------------------------------
# Queue statistics
# ---------------------------------------------------------------------------------------------------------------

# Both read the `active` index only, so terminal rows are never scanned (03 §19 rule 2). The `seq` of a row is
# its rowid, which every index entry carries, so min(seq) needs no table access.
_COUNTS = (
    "SELECT queue_name, status, count(*) AS n, min(seq) AS first FROM dbos_workflows "
    f"INDEXED BY dbos_workflows_active WHERE {_ACTIVE} AND {{queue}} GROUP BY queue_name, status"
)
_LANE_COUNTS = (
    "SELECT queue_name, count(DISTINCT partition_key) AS n FROM dbos_workflows "
    f"INDEXED BY dbos_workflows_active WHERE {_ACTIVE} AND status <> 'DELAYED' AND {{queue}} "
    "AND partition_key IS NOT NULL GROUP BY queue_name"
)
# ENQUEUED rows by (application, version), for `stranded` (03 §13 rule 5): the version columns are not in the
# index, so this reads the ENQUEUED rows themselves (never a terminal row).
_VERSION_COUNTS = (
    "SELECT queue_name, application_name, application_version, count(*) AS n FROM dbos_workflows "
    f"INDEXED BY dbos_workflows_active WHERE {_ACTIVE} AND status = 'ENQUEUED' AND {{queue}} "
    "GROUP BY queue_name, application_name, application_version"
)
_ONE_QUEUE = "queue_name = ?"
_ANY_QUEUE = "queue_name IS NOT NULL"


def queue_stats(conn: sqlite3.Connection, queue_name: str | None) -> list[base.QueueStatsRow]:
    where, args = (_ANY_QUEUE, ()) if queue_name is None else (_ONE_QUEUE, (queue_name,))
    counts: dict[str, dict[str, int]] = {}
    first_enqueued: dict[str, int] = {}
    for r in conn.execute(_COUNTS.format(queue=where), args).fetchall():
        counts.setdefault(r["queue_name"], {})[r["status"]] = r["n"]
        if r["status"] == "ENQUEUED":
            first_enqueued[r["queue_name"]] = r["first"]
    lanes = {r["queue_name"]: r["n"] for r in conn.execute(_LANE_COUNTS.format(queue=where), args).fetchall()}
    versions: dict[str, dict[tuple[str | None, str | None], int]] = {}
    for r in conn.execute(_VERSION_COUNTS.format(queue=where), args).fetchall():
        versions.setdefault(r["queue_name"], {})[(r["application_name"], r["application_version"])] = r["n"]
    out: list[base.QueueStatsRow] = []
    for name in sorted(counts):
        by_status = counts[name]
        oldest = None
        if name in first_enqueued:
            row = conn.execute(
                "SELECT created_at FROM dbos_workflows WHERE seq = ?", (first_enqueued[name],)
            ).fetchone()
            oldest = None if row is None else row[0]
        out.append(
            base.QueueStatsRow(
                queue_name=name,
                enqueued=by_status.get("ENQUEUED", 0),
                delayed=by_status.get("DELAYED", 0),
                pending=by_status.get("PENDING", 0),
                oldest_enqueued_at=oldest,
                partitions=lanes.get(name, 0),
                enqueued_by_version=versions.get(name, {}),
            )
        )
    return out
