"""Workflow, step and claim operations of the SQLite backend. Writes take a `WriteTx`, reads a connection."""

from __future__ import annotations

import operator
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from . import base, records
from .base import INTERNAL_QUEUE, Write
from .records import step_row, workflow_row
from .sqlite_conn import WriteTx
from .sqlite_rows import STATE_COLUMNS, STEP_COLUMNS, json_list, to_state, workflow_columns

Execute = Callable[[str, Sequence[Any]], Any]

# ---------------------------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------------------------

# Fence check, insert and duplicate detection in one statement (07 §2.2).
_INSERT_STEP = """
INSERT INTO dbos_steps (workflow_id, step_id, name, output, error, serializer, child_workflow_id,
                        started_at, completed_at, write_token)
SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?
WHERE EXISTS (SELECT 1 FROM dbos_workflows WHERE workflow_id = ? AND claim_token = ?)
ON CONFLICT DO NOTHING
"""
_STEP_TOKEN = "SELECT write_token FROM dbos_steps WHERE workflow_id = ? AND step_id = ?"


# `_INSERT_STEP`'s positional parameters from `records.step_params`: its columns (those of STEP_COLUMNS, in that
# order), then the fence.
_step_values = operator.itemgetter(
    *(c.strip() for c in STEP_COLUMNS.split(",")), "workflow_id", "claim_token"
)


def record_step_on(execute: Execute, fence: base.Fence, step: base.NewStep, now: int) -> Write:
    """Insert a checkpoint through `execute` (any DB-API cursor's or connection's `execute`)."""
    params = records.step_params(fence, step, now)
    cur = execute(_INSERT_STEP, _step_values(params))
    if cur.rowcount == 1:
        return Write.APPLIED
    row = execute(_STEP_TOKEN, (fence.workflow_id, step.step_id)).fetchone()
    return records.step_verdict(row, step.write_token)


def load_checkpoints(conn: sqlite3.Connection, ids: Sequence[str]) -> dict[str, dict[int, base.StepRow]]:
    out: dict[str, dict[int, base.StepRow]] = {wid: {} for wid in ids}
    if not ids:
        return out
    cur = conn.execute(
        f"SELECT {STEP_COLUMNS} FROM dbos_steps WHERE workflow_id IN (SELECT value FROM json_each(?)) "
        "ORDER BY workflow_id, step_id",
        (json_list(ids),),
    )
    for r in cur.fetchall():
        out[r["workflow_id"]][r["step_id"]] = step_row(r)
    return out


def list_steps(conn: sqlite3.Connection, workflow_id: str) -> list[base.StepRow]:
    cur = conn.execute(
        f"SELECT {STEP_COLUMNS} FROM dbos_steps WHERE workflow_id = ? ORDER BY step_id", (workflow_id,)
    )
    return [step_row(r) for r in cur.fetchall()]


# ---------------------------------------------------------------------------------------------------------------
# Workflows
# ---------------------------------------------------------------------------------------------------------------

_INSERT_COLUMNS = (
    "workflow_id, status, name, class_name, config_name, inputs, receiver, inputs_serializer, application_name, "
    "application_version, app_id, authenticated_user, authenticated_roles, assumed_role, queue_name, dedup_queue, "
    "deduplication_id, priority, partition_key, delay_until, timeout_ms, deadline_ms, executor_id, incarnation, "
    "claim_token, recovery_attempts, max_recovery_attempts, parent_workflow_id, forked_from, schedule_name, "
    "attributes, creator_token, created_at, updated_at"
)
_INSERT_WORKFLOW = (
    f"INSERT INTO dbos_workflows ({_INSERT_COLUMNS}) VALUES ("
    + ", ".join(f":{c.strip()}" for c in _INSERT_COLUMNS.split(","))
    + ") ON CONFLICT (workflow_id) DO NOTHING RETURNING seq"
)
_IDENTITY = (
    "SELECT name, class_name, config_name, status, queue_name, created_at, deadline_ms, creator_token "
    "FROM dbos_workflows WHERE workflow_id = ?"
)


def _insert_params(new: base.NewWorkflow, now: int) -> dict[str, Any]:
    """SQLite binds its own clock: the created/updated times and a relative deadline."""
    deadline = new.deadline_ms
    if new.deadline_from_now and new.timeout_ms is not None:
        deadline = now + new.timeout_ms
    return records.insert_params(new) | {"deadline_ms": deadline, "created_at": now, "updated_at": now}


def _parent_checkpoint(tx: WriteTx, new: base.NewWorkflow, parent: base.ParentLink) -> Write:
    step = base.NewStep(
        step_id=parent.step_id,
        name=parent.step_name,
        output=None,
        error=None,
        write_token=parent.write_token,
        child_workflow_id=new.workflow_id,
    )
    return record_step_on(tx.execute, parent.fence, step, tx.now)


def insert_workflow(tx: WriteTx, new: base.NewWorkflow, parent: base.ParentLink | None) -> base.InsertResult:
    if parent is not None:
        written = _parent_checkpoint(tx, new, parent)
        if written is not Write.APPLIED:
            tx.rollback_only = True
            kind: base.InsertKind = "fenced" if written is Write.FENCED else "parent_conflict"
            return base.InsertResult(kind, new.workflow_id)
    params = _insert_params(new, tx.now)
    if tx.execute(_INSERT_WORKFLOW, params).fetchone() is not None:
        if new.status == "ENQUEUED":
            tx.emit("queue", new.queue_name)
        return base.InsertResult(
            "created",
            new.workflow_id,
            new.name,
            new.class_name,
            new.config_name,
            new.status,
            new.queue_name,
            tx.now,
            params["deadline_ms"],
        )
    return _existing(tx, new)


def _existing(tx: WriteTx, new: base.NewWorkflow) -> base.InsertResult:
    r = tx.execute(_IDENTITY, (new.workflow_id,)).fetchone()
    kind = records.existing_kind(new, r["creator_token"], (r["name"], r["class_name"], r["config_name"]))
    if kind == "id_conflict":
        tx.rollback_only = True  # drop the parent checkpoint, if any
    return base.InsertResult(
        kind,
        new.workflow_id,
        r["name"],
        r["class_name"],
        r["config_name"],
        r["status"],
        r["queue_name"],
        r["created_at"],
        r["deadline_ms"],
    )


def get_workflow(
    conn: sqlite3.Connection, workflow_id: str, load_input: bool, load_output: bool
) -> base.WorkflowRow | None:
    cols = workflow_columns(load_input, load_output)
    r = conn.execute(f"SELECT {cols} FROM dbos_workflows WHERE workflow_id = ?", (workflow_id,)).fetchone()
    return None if r is None else workflow_row(r)


def get_states(conn: sqlite3.Connection, ids: Sequence[str]) -> dict[str, base.WorkflowState]:
    out = {wid: base.WorkflowState(exists=False) for wid in ids}
    if not ids:
        return out
    cur = conn.execute(
        f"SELECT {STATE_COLUMNS} FROM dbos_workflows WHERE workflow_id IN (SELECT value FROM json_each(?))",
        (json_list(ids),),
    )
    for r in cur.fetchall():
        out[r["workflow_id"]] = to_state(r)
    return out


_RECORD_OUTCOME = """
UPDATE dbos_workflows
SET status = ?, output = ?, error = ?, outcome_serializer = ?, completed_at = ?, updated_at = ?
WHERE workflow_id = ? AND claim_token = ? AND status = 'PENDING'
RETURNING queue_name
"""


def record_outcome(tx: WriteTx, fence: base.Fence, outcome: base.Outcome) -> base.OutcomeResult:
    r = tx.execute(
        _RECORD_OUTCOME,
        (
            outcome.status,
            records.text_of(outcome.output),
            records.text_of(outcome.error),
            records.serializer_of(outcome.output, outcome.error),
            tx.now,
            tx.now,
            fence.workflow_id,
            fence.claim_token,
        ),
    ).fetchone()
    if r is not None:
        tx.emit("wf", fence.workflow_id)
        if r["queue_name"] is not None:
            tx.emit("queue", r["queue_name"])
        return base.OutcomeResult(True, outcome.status)
    cur = tx.execute(
        "SELECT status, claim_token FROM dbos_workflows WHERE workflow_id = ?", (fence.workflow_id,)
    )
    row = cur.fetchone()
    if row is None:
        return base.OutcomeResult(False, None)
    return records.refused_outcome(row["status"], row["claim_token"], outcome.status, fence.claim_token)


# ---------------------------------------------------------------------------------------------------------------
# Claims
# ---------------------------------------------------------------------------------------------------------------

_CANDIDATES = """
SELECT workflow_id, deadline_ms FROM dbos_workflows
WHERE status = 'ENQUEUED' AND queue_name = ?
  AND name IN (SELECT value FROM json_each(?))
  AND (application_name IS NULL OR application_name = ?)
  AND (application_version IS NULL OR application_version = ?)
ORDER BY priority DESC, seq
LIMIT ?
"""
_CANCEL_EXPIRED = """
UPDATE dbos_workflows
SET status = 'CANCELLED', cancel_reason = 'deadline', completed_at = ?, updated_at = ?
WHERE workflow_id IN (SELECT value FROM json_each(?)) AND +status = 'ENQUEUED'
RETURNING workflow_id
"""
# randomblob(16) gives each row its own 128-bit claim token inside one statement. `+status` keeps the planner
# on the workflow_id index instead of scanning every ENQUEUED row.
_CLAIM = """
UPDATE dbos_workflows
SET status = 'PENDING', executor_id = ?, incarnation = ?, claim_token = lower(hex(randomblob(16))),
    claim_batch = ?, dequeued_at = ?, updated_at = ?, recovery_attempts = recovery_attempts + 1,
    application_version = COALESCE(application_version, ?), deadline_ms = COALESCE(deadline_ms, ? + timeout_ms)
WHERE workflow_id IN (SELECT value FROM json_each(?)) AND +status = 'ENQUEUED'
RETURNING *
"""
_BATCH_READBACK = """
SELECT * FROM dbos_workflows
WHERE status = 'PENDING' AND executor_id = ? AND incarnation = ? AND claim_batch = ?
ORDER BY priority DESC, seq
"""


def _claimed(r: sqlite3.Row) -> base.ClaimedWorkflow:
    may_have_steps = records.may_have_steps(r["recovery_attempts"] - 1, r["steps_seeded"])
    return base.ClaimedWorkflow(
        base.Fence(r["workflow_id"], r["claim_token"]), workflow_row(r), may_have_steps
    )


def claim(tx: WriteTx, req: base.ClaimRequest) -> base.ClaimResult:
    # A retry of a batch that committed returns that batch (07 §7 rule 1).
    prior = tx.execute(_BATCH_READBACK, (req.executor_id, req.incarnation, req.batch_token)).fetchall()
    if prior:
        return base.ClaimResult([_claimed(r) for r in prior], [])
    limit = max(0, min(req.max_rows, 1000))
    rows = tx.execute(
        _CANDIDATES,
        (
            req.queue_name,
            json_list(sorted(req.registered)),
            req.application_name,
            req.application_version,
            limit,
        ),
    ).fetchall()
    expired = [r["workflow_id"] for r in rows if r["deadline_ms"] is not None and r["deadline_ms"] <= tx.now]
    live = [r["workflow_id"] for r in rows if r["deadline_ms"] is None or r["deadline_ms"] > tx.now]
    cancelled: list[str] = []
    if expired:
        cur = tx.execute(_CANCEL_EXPIRED, (tx.now, tx.now, json_list(expired)))
        cancelled = [r["workflow_id"] for r in cur.fetchall()]
        for wid in cancelled:
            tx.emit("wf", wid)
    claimed: list[base.ClaimedWorkflow] = []
    if live:
        params = (
            req.executor_id,
            req.incarnation,
            req.batch_token,
            tx.now,
            tx.now,
            req.application_version,
            tx.now,
            json_list(live),
        )
        by_id = {r["workflow_id"]: r for r in tx.execute(_CLAIM, params).fetchall()}
        claimed = [_claimed(by_id[wid]) for wid in live if wid in by_id]
    order = {wid: i for i, wid in enumerate(expired)}
    cancelled.sort(key=lambda wid: order[wid])
    return base.ClaimResult(claimed, cancelled)


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
