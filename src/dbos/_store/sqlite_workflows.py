"""Workflow and step operations of the SQLite backend (queue operations are in `sqlite_queues`). Writes take a
`WriteTx`, reads a connection."""

from __future__ import annotations

import operator
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from . import base, records
from .base import Write
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
# `ON CONFLICT DO NOTHING` covers the workflow ID and the deduplication binding (the unique index `dedup` on
# (dedup_queue, deduplication_id)); a refused insert is then told apart by the lookups below.
_INSERT_WORKFLOW = (
    f"INSERT INTO dbos_workflows ({_INSERT_COLUMNS}) VALUES ("
    + ", ".join(f":{c.strip()}" for c in _INSERT_COLUMNS.split(","))
    + ") ON CONFLICT DO NOTHING RETURNING seq"
)
_RESULT_COLUMNS = "workflow_id, name, class_name, config_name, status, queue_name, created_at, deadline_ms"
_IDENTITY = f"SELECT {_RESULT_COLUMNS}, creator_token FROM dbos_workflows WHERE workflow_id = ?"
_HOLDER = (
    f"SELECT {_RESULT_COLUMNS} FROM dbos_workflows INDEXED BY dbos_workflows_dedup "
    "WHERE dedup_queue = ? AND deduplication_id = ?"
)
_POINT_PARENT_STEP = (
    "UPDATE dbos_steps SET child_workflow_id = ? WHERE workflow_id = ? AND step_id = ? AND write_token = ?"
)
# A holder deleted between the refused insert and its lookup is retried this many times (03 §7 rule 4). One
# write transaction holds the file's write lock, so on SQLite this cannot actually happen.
DEDUP_RETRIES = 3


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
    for _ in range(1 + DEDUP_RETRIES):
        if tx.execute(_INSERT_WORKFLOW, params).fetchone() is not None:
            if new.status in ("ENQUEUED", "DELAYED") and new.queue_name is not None:
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
        r = tx.execute(_IDENTITY, (new.workflow_id,)).fetchone()
        if r is not None:
            return _existing(tx, new, r)
        if new.deduplication_id is not None:
            holder = tx.execute(_HOLDER, (new.queue_name, new.deduplication_id)).fetchone()
            if holder is not None:
                return _deduplicated(tx, new, parent, holder)
    raise base.UnknownStorageError(
        f"the insert of workflow {new.workflow_id!r} was refused, but neither its ID nor its deduplication ID "
        f"is held (after {DEDUP_RETRIES} retries)",
        op="insert_workflow",
    )


def _existing(tx: WriteTx, new: base.NewWorkflow, r: sqlite3.Row) -> base.InsertResult:
    kind = records.existing_kind(new, r["creator_token"], (r["name"], r["class_name"], r["config_name"]))
    if kind == "id_conflict":
        tx.rollback_only = True  # drop the parent checkpoint, if any
    return records.insert_result(kind, r)


def _deduplicated(
    tx: WriteTx, new: base.NewWorkflow, parent: base.ParentLink | None, holder: sqlite3.Row
) -> base.InsertResult:
    kind = records.dedup_kind(new, (holder["name"], holder["class_name"], holder["config_name"]))
    if kind != "dedup_existing":
        tx.rollback_only = True  # nothing is written, not even the parent checkpoint
    elif parent is not None:  # the parent's step names the workflow its handle refers to: the holder
        tx.execute(
            _POINT_PARENT_STEP,
            (holder["workflow_id"], parent.fence.workflow_id, parent.step_id, parent.write_token),
        )
    return records.insert_result(kind, holder)


def get_workflow(
    conn: sqlite3.Connection, workflow_id: str, load_input: bool, load_output: bool
) -> base.WorkflowRow | None:
    cols = workflow_columns(load_input, load_output)
    r = conn.execute(f"SELECT {cols} FROM dbos_workflows WHERE workflow_id = ?", (workflow_id,)).fetchone()
    return None if r is None else workflow_row(r)


def list_queued(
    conn: sqlite3.Connection, queue_name: str | None, limit: int | None
) -> list[base.WorkflowRow]:
    cols = workflow_columns(False, False)
    where = "status IN ('ENQUEUED', 'DELAYED', 'PENDING') AND queue_name IS NOT NULL"
    params: list[Any] = []
    if queue_name is not None:
        where += " AND queue_name = ?"
        params.append(queue_name)
    sql = f"SELECT {cols} FROM dbos_workflows INDEXED BY dbos_workflows_active WHERE {where} ORDER BY seq"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return [workflow_row(r) for r in conn.execute(sql, params).fetchall()]


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
