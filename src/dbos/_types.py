"""Public record types: workflow status, step status."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, TypedDict


class WorkflowStatusString(str, enum.Enum):
    PENDING = "PENDING"
    ENQUEUED = "ENQUEUED"
    DELAYED = "DELAYED"
    SUCCESS = "SUCCESS"
    ERROR = "ERROR"
    CANCELLED = "CANCELLED"
    MAX_RECOVERY_ATTEMPTS_EXCEEDED = "MAX_RECOVERY_ATTEMPTS_EXCEEDED"


@dataclass
class WorkflowStatus:
    """A snapshot of one workflow record (01 §8.4)."""

    workflow_id: str
    status: str
    name: str
    class_name: str | None = None
    config_name: str | None = None
    authenticated_user: str | None = None
    assumed_role: str | None = None
    authenticated_roles: list[str] | None = None
    input: dict[str, Any] | None = None
    output: Any = None
    error: BaseException | None = None
    created_at: int = 0
    updated_at: int = 0
    queue_name: str | None = None
    queue_partition_key: str | None = None
    deduplication_id: str | None = None
    priority: int = 0
    delay_until_epoch_ms: int | None = None
    executor_id: str | None = None
    app_version: str | None = None
    app_id: str | None = None
    application_name: str | None = None
    workflow_timeout_ms: int | None = None
    workflow_deadline_epoch_ms: int | None = None
    forked_from: str | None = None
    was_forked_from: bool = False
    parent_workflow_id: str | None = None
    dequeued_at: int | None = None
    completed_at: int | None = None
    recovery_attempts: int = 0
    schedule_name: str | None = None


@dataclass
class StepStatus:
    """What a running step knows about itself (01 §11.7)."""

    step_id: int
    current_attempt: int | None
    max_attempts: int | None


class WorkflowList(list[WorkflowStatus]):
    """A page of `list_workflows`; `next_cursor` continues after its last row (02 §7.1 rule 7)."""

    next_cursor: str | None = None


class StepInfo(TypedDict):
    """One checkpoint of a workflow (02 §7.2)."""

    function_id: int
    function_name: str
    output: Any
    error: BaseException | None
    child_workflow_id: str | None
    started_at_epoch_ms: int | None
    completed_at_epoch_ms: int | None


class VersionInfo(TypedDict):
    """One registered application version (05 §7); the largest `version_timestamp` is the latest."""

    version_id: str
    version_name: str
    version_timestamp: int  # epoch ms
    created_at: int  # epoch ms


@dataclass(frozen=True)
class ExecutorInfo:
    """One executor incarnation (02 §12)."""

    executor_id: str
    incarnation: int
    application_name: str | None
    application_version: str | None
    hostname: str
    pid: int
    state: str  # "ALIVE" | "STOPPED" | "DEAD"
    started_at: int
    last_heartbeat_at: int
    lease_expires_at: int
    queues: dict[str, dict[str, Any]]
