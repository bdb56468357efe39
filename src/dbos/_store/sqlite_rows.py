"""Column lists of the SQLite backend and the mapping of its state and executor rows to the records of `base`
(workflow and step rows map by name through `records`)."""

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
    "process_start, started_at, last_heartbeat_at, lease_expires_at, heartbeat_interval_ms, lease_ms, stopped_at, "
    "queues"
)


@functools.cache
def workflow_columns(load_input: bool = True, load_output: bool = True) -> str:
    """The select list for a `WorkflowRow`; unrequested payload columns are selected as NULL."""
    cols = list(_WF_PLAIN)
    cols += _WF_INPUT if load_input else [f"NULL AS {c}" for c in _WF_INPUT]
    cols += _WF_OUTPUT if load_output else [f"NULL AS {c}" for c in _WF_OUTPUT]
    return ", ".join(cols)


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
        queues=r["queues"],
    )


def json_list(values: Any) -> str:
    """A JSON array for `IN (SELECT value FROM json_each(?))`: one prepared statement for any list length."""
    return json.dumps(list(values))
