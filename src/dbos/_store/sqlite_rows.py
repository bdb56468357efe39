"""Column lists of the SQLite backend and the mapping of result rows to the records of `base`."""

from __future__ import annotations

import functools
import json
import sqlite3
from typing import Any

from . import base

_WF_PLAIN = (
    "workflow_id",
    "seq",
    "status",
    "name",
    "class_name",
    "config_name",
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
_WF_INPUT = ("inputs", "receiver", "inputs_serializer")
_WF_OUTPUT = ("output", "error", "outcome_serializer")

STEP_COLUMNS = "workflow_id, step_id, name, output, error, serializer, child_workflow_id, started_at, completed_at, write_token"
STATE_COLUMNS = (
    "workflow_id, status, cancel_reason, completed_at, timeout_ms, deadline_ms, parent_workflow_id, "
    "application_version"
)
EXECUTOR_COLUMNS = (
    "executor_id, incarnation, state, application_name, application_version, hostname, host_identity, pid, "
    "process_start, started_at, last_heartbeat_at, lease_expires_at, heartbeat_interval_ms, lease_ms, stopped_at"
)


@functools.cache
def workflow_columns(load_input: bool = True, load_output: bool = True) -> str:
    """The select list for a `WorkflowRow`; unrequested payload columns are selected as NULL."""
    cols = list(_WF_PLAIN)
    cols += _WF_INPUT if load_input else [f"NULL AS {c}" for c in _WF_INPUT]
    cols += _WF_OUTPUT if load_output else [f"NULL AS {c}" for c in _WF_OUTPUT]
    return ", ".join(cols)


def _payload(text: str | None, serializer: str | None) -> base.Payload | None:
    return None if text is None else base.Payload(text, serializer or "")


def _roles(text: str | None) -> list[str] | None:
    return None if text is None else list(json.loads(text))


def to_workflow(r: sqlite3.Row) -> base.WorkflowRow:
    return base.WorkflowRow(
        workflow_id=r["workflow_id"],
        seq=r["seq"],
        status=r["status"],
        name=r["name"],
        class_name=r["class_name"],
        config_name=r["config_name"],
        inputs=_payload(r["inputs"], r["inputs_serializer"]),
        receiver=r["receiver"],
        output=_payload(r["output"], r["outcome_serializer"]),
        error=_payload(r["error"], r["outcome_serializer"]),
        cancel_reason=r["cancel_reason"],
        application_name=r["application_name"],
        application_version=r["application_version"],
        app_id=r["app_id"],
        authenticated_user=r["authenticated_user"],
        authenticated_roles=_roles(r["authenticated_roles"]),
        assumed_role=r["assumed_role"],
        queue_name=r["queue_name"],
        deduplication_id=r["deduplication_id"],
        priority=r["priority"],
        partition_key=r["partition_key"],
        delay_until_ms=r["delay_until"],
        timeout_ms=r["timeout_ms"],
        deadline_ms=r["deadline_ms"],
        executor_id=r["executor_id"],
        incarnation=r["incarnation"],
        claim_token=r["claim_token"],
        recovery_attempts=r["recovery_attempts"],
        max_recovery_attempts=r["max_recovery_attempts"],
        parent_workflow_id=r["parent_workflow_id"],
        forked_from=r["forked_from"],
        was_forked_from=bool(r["was_forked_from"]),
        schedule_name=r["schedule_name"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        dequeued_at=r["dequeued_at"],
        completed_at=r["completed_at"],
    )


def to_state(r: sqlite3.Row) -> base.WorkflowState:
    return base.WorkflowState(
        exists=True,
        status=r["status"],
        cancel_reason=r["cancel_reason"],
        completed_at=r["completed_at"],
        timeout_ms=r["timeout_ms"],
        deadline_ms=r["deadline_ms"],
        parent_workflow_id=r["parent_workflow_id"],
        application_version=r["application_version"],
    )


def to_step(r: sqlite3.Row) -> base.StepRow:
    return base.StepRow(
        workflow_id=r["workflow_id"],
        step_id=r["step_id"],
        name=r["name"],
        output=_payload(r["output"], r["serializer"]),
        error=_payload(r["error"], r["serializer"]),
        child_workflow_id=r["child_workflow_id"],
        started_at=r["started_at"],
        completed_at=r["completed_at"],
        write_token=r["write_token"],
    )


def to_executor(r: sqlite3.Row) -> base.ExecutorRow:
    return base.ExecutorRow(
        executor_id=r["executor_id"],
        incarnation=r["incarnation"],
        state=r["state"],
        application_name=r["application_name"],
        application_version=r["application_version"],
        hostname=r["hostname"],
        host_identity=r["host_identity"],
        pid=r["pid"],
        process_start=r["process_start"],
        started_at=r["started_at"],
        last_heartbeat_at=r["last_heartbeat_at"],
        lease_expires_at=r["lease_expires_at"],
        heartbeat_interval_ms=r["heartbeat_interval_ms"],
        lease_ms=r["lease_ms"],
        stopped_at=r["stopped_at"],
    )


def json_list(values: Any) -> str:
    """A JSON array for `IN (SELECT value FROM json_each(?))`: one prepared statement for any list length."""
    return json.dumps(list(values))
