"""Row mapping, statement parameters and the storable-text guard of the PostgreSQL backend."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import psycopg

from . import base
from . import textcheck as tc
from .postgres_sql import WORKFLOW_COLUMNS

Conn = psycopg.Connection[tuple[Any, ...]]
Row = Sequence[Any]


# ---------------------------------------------------------------------------------------------------------------
# Row mapping
# ---------------------------------------------------------------------------------------------------------------


def payload_of(text: str | None, serializer: str | None) -> base.Payload | None:
    return None if text is None else base.Payload(text, serializer or "")


def workflow_row(r: Row) -> base.WorkflowRow:
    d = dict(zip(WORKFLOW_COLUMNS, r, strict=True))
    roles = d["authenticated_roles"]
    return base.WorkflowRow(
        workflow_id=d["workflow_id"],
        seq=d["seq"],
        status=d["status"],
        name=d["name"],
        class_name=d["class_name"],
        config_name=d["config_name"],
        inputs=payload_of(d["inputs"], d["inputs_serializer"]),
        receiver=d["receiver"],
        output=payload_of(d["output"], d["outcome_serializer"]),
        error=payload_of(d["error"], d["outcome_serializer"]),
        cancel_reason=d["cancel_reason"],
        application_name=d["application_name"],
        application_version=d["application_version"],
        app_id=d["app_id"],
        authenticated_user=d["authenticated_user"],
        authenticated_roles=None if roles is None else list(json.loads(roles)),
        assumed_role=d["assumed_role"],
        queue_name=d["queue_name"],
        deduplication_id=d["deduplication_id"],
        priority=d["priority"],
        partition_key=d["partition_key"],
        delay_until_ms=d["delay_until"],
        timeout_ms=d["timeout_ms"],
        deadline_ms=d["deadline_ms"],
        executor_id=d["executor_id"],
        incarnation=d["incarnation"],
        claim_token=d["claim_token"],
        recovery_attempts=d["recovery_attempts"],
        max_recovery_attempts=d["max_recovery_attempts"],
        parent_workflow_id=d["parent_workflow_id"],
        forked_from=d["forked_from"],
        was_forked_from=bool(d["was_forked_from"]),
        schedule_name=d["schedule_name"],
        created_at=d["created_at"],
        updated_at=d["updated_at"],
        dequeued_at=d["dequeued_at"],
        completed_at=d["completed_at"],
    )


def step_row(r: Row) -> base.StepRow:
    wid, step_id, name, output, error, serializer, child, started, completed, token = r
    return base.StepRow(
        workflow_id=wid,
        step_id=step_id,
        name=name,
        output=payload_of(output, serializer),
        error=payload_of(error, serializer),
        child_workflow_id=child,
        started_at=started,
        completed_at=completed,
        write_token=token,
    )


def executor_row(r: Row) -> base.ExecutorRow:
    return base.ExecutorRow(*r[:15])


def insert_result(kind: base.InsertKind, r: Row) -> base.InsertResult:
    """`r` = (workflow_id, name, class_name, config_name, status, queue_name, created_at, deadline_ms, ...)."""
    return base.InsertResult(kind, r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7])


# ---------------------------------------------------------------------------------------------------------------
# Parameters and the storable-text guard
# ---------------------------------------------------------------------------------------------------------------


def check_new(new: base.NewWorkflow) -> None:
    tc.check_id(new.workflow_id)
    tc.check_name(new.name, "workflow name")
    for value, what in (
        (new.class_name, "class name"),
        (new.config_name, "config name"),
        (new.queue_name, "queue name"),
        (new.partition_key, "partition key"),
        (new.deduplication_id, "deduplication ID"),
        (new.application_name, "application name"),
        (new.application_version, "application version"),
        (new.schedule_name, "schedule name"),
    ):
        tc.check_optional_text(value, tc.MAX_NAME_BYTES, what)
    for value, what in ((new.parent_workflow_id, "parent workflow ID"), (new.forked_from, "forked-from ID")):
        tc.check_optional_text(value, tc.MAX_ID_BYTES, what)
    tc.check_storable_text(new.inputs.serializer, tc.MAX_SERIALIZER_BYTES, "serializer name")
    tc.check_storable_text(new.creator_token, tc.MAX_NAME_BYTES, "creator token")
    if new.owner is not None:
        tc.check_name(new.owner[0], "executor ID")
        tc.check_name(new.owner[2], "claim token")


def check_fence(fence: base.Fence) -> None:
    tc.check_id(fence.workflow_id)
    tc.check_name(fence.claim_token, "claim token")


def check_step(step: base.NewStep) -> None:
    tc.check_name(step.name, "step name")
    tc.check_name(step.write_token, "write token")
    tc.check_optional_text(step.child_workflow_id, tc.MAX_ID_BYTES, "child workflow ID")
    for p in (step.output, step.error):
        if p is not None:
            tc.check_storable_text(p.serializer, tc.MAX_SERIALIZER_BYTES, "serializer name")


def insert_params(new: base.NewWorkflow) -> dict[str, Any]:
    executor_id, incarnation, claim_token = new.owner if new.owner is not None else (None, None, None)
    roles = None if new.authenticated_roles is None else json.dumps(list(new.authenticated_roles))
    return {
        "workflow_id": new.workflow_id,
        "status": new.status,
        "name": new.name,
        "class_name": new.class_name,
        "config_name": new.config_name,
        "inputs": new.inputs.text,
        "receiver": new.receiver,
        "inputs_serializer": new.inputs.serializer,
        "application_name": new.application_name,
        "application_version": new.application_version,
        "app_id": new.app_id,
        "authenticated_user": new.authenticated_user,
        "authenticated_roles": roles,
        "assumed_role": new.assumed_role,
        "queue_name": new.queue_name,
        "dedup_queue": new.queue_name if new.deduplication_id is not None else None,
        "deduplication_id": new.deduplication_id,
        "priority": new.priority,
        "partition_key": new.partition_key,
        "delay_until": new.delay_until_ms,
        "timeout_ms": new.timeout_ms,
        "deadline_ms": new.deadline_ms,
        "deadline_from_now": new.deadline_from_now,
        "executor_id": executor_id,
        "incarnation": incarnation,
        "claim_token": claim_token,
        "recovery_attempts": new.recovery_attempts,
        "max_recovery_attempts": new.max_recovery_attempts,
        "parent_workflow_id": new.parent_workflow_id,
        "forked_from": new.forked_from,
        "schedule_name": new.schedule_name,
        "attributes": new.attributes,
        "creator_token": new.creator_token,
        "internal": base.INTERNAL_QUEUE,
    }


def step_params(fence: base.Fence, step: base.NewStep) -> dict[str, Any]:
    payload = step.output if step.output is not None else step.error
    return {
        "workflow_id": fence.workflow_id,
        "claim_token": fence.claim_token,
        "step_id": step.step_id,
        "name": step.name,
        "output": None if step.output is None else step.output.text,
        "error": None if step.error is None else step.error.text,
        "serializer": None if payload is None else payload.serializer,
        "child_workflow_id": step.child_workflow_id,
        "started_at": step.started_at_ms,
        "completed_at": step.completed_at_ms,
        "write_token": step.write_token,
    }


def step_verdict(row: Row | None, write_token: str) -> base.Write:
    """After a refused step insert, from the existing step's write token: my earlier attempt, another writer's
    step, or (no step) a fence failure."""
    if row is None or row[0] is None:
        return base.Write.FENCED
    return base.Write.APPLIED if row[0] == write_token else base.Write.CONFLICT


def unwrap_dbapi(conn: Any) -> Any:
    """The driver connection behind a SQLAlchemy connection, pool proxy or fairy (or `conn` itself)."""
    for _ in range(4):
        if isinstance(conn, psycopg.Connection):
            return conn
        inner = None
        for attr in ("driver_connection", "dbapi_connection", "connection"):
            inner = getattr(conn, attr, None)
            if inner is not None and inner is not conn:
                break
        if inner is None or inner is conn:
            return conn
        conn = inner
    return conn


def init_error(message: str) -> Exception:
    from ..error import DBOSInitializationError

    return DBOSInitializationError(message)


def abort(conn: Conn) -> None:
    """Roll back a manually begun transaction after a failure, unless the connection is gone."""
    if conn.closed or conn.broken or conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        return
    try:
        conn.execute("ROLLBACK")
    except psycopg.Error:
        pass
