"""Workflow handles and the conversion of stored rows into `WorkflowStatus` (01 §8)."""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from ._context import current_or_empty
from ._serialization import SerializerSet
from ._store.base import NewStep, WorkflowRow
from ._types import WorkflowStatus
from ._validation import check_polling_interval
from .error import DBOSNonExistentWorkflowError

if TYPE_CHECKING:
    from ._engine.engine import Engine

R = TypeVar("R", covariant=True)
_log = logging.getLogger("dbos")
GET_STATUS = "DBOS.getStatus"


def _safe(what: str, fn: Any, raw: str) -> Any:
    try:
        return fn()
    except Exception:
        _log.warning("could not deserialize the %s; returning the stored text", what)
        return raw


class _HasSerializers(Protocol):
    @property
    def serializers(self) -> SerializerSet: ...


def status_from_row(engine: _HasSerializers, row: WorkflowRow) -> WorkflowStatus:
    s = engine.serializers
    inputs: dict[str, Any] | None = None
    if row.inputs is not None:
        payload = row.inputs

        def load() -> dict[str, Any]:
            args, kwargs = s.deserialize_inputs(payload)
            return {"args": tuple(args), "kwargs": dict(kwargs)}

        inputs = _safe("input", load, payload.text)
    output = None
    if row.status == "SUCCESS" and row.output is not None:
        out = row.output
        output = _safe("output", lambda: s.deserialize_value(out), out.text)
    error: Any = None
    if row.status == "ERROR" and row.error is not None:
        err = row.error
        error = _safe("error", lambda: s.deserialize_error(err), err.text)
    elif row.status == "CANCELLED" and row.cancel_reason == "deadline":
        from ._engine.outcomes import timeout_error

        error = timeout_error(row)
    return WorkflowStatus(
        workflow_id=row.workflow_id,
        status=row.status,
        name=row.name,
        class_name=row.class_name,
        config_name=row.config_name,
        authenticated_user=row.authenticated_user,
        assumed_role=row.assumed_role,
        authenticated_roles=row.authenticated_roles,
        input=inputs,
        output=output,
        error=error,
        created_at=row.created_at,
        updated_at=row.updated_at,
        queue_name=row.queue_name,
        queue_partition_key=row.partition_key,
        deduplication_id=row.deduplication_id,
        priority=row.priority,
        delay_until_epoch_ms=row.delay_until_ms,
        executor_id=row.executor_id,
        app_version=row.application_version,
        app_id=row.app_id,
        application_name=row.application_name,
        workflow_timeout_ms=row.timeout_ms,
        workflow_deadline_epoch_ms=row.deadline_ms,
        forked_from=row.forked_from,
        was_forked_from=row.was_forked_from,
        parent_workflow_id=row.parent_workflow_id,
        dequeued_at=row.dequeued_at,
        completed_at=row.completed_at,
        recovery_attempts=row.recovery_attempts,
        schedule_name=row.schedule_name,
    )


def fetch_status(engine: Engine, workflow_id: str) -> WorkflowStatus | None:
    row = engine.db.get_workflow(workflow_id)
    return status_from_row(engine, row) if row is not None else None


def get_status_checkpointed(engine: Engine, workflow_id: str) -> WorkflowStatus | None:
    """`DBOS.getStatus`: a checkpointed step inside a workflow, a plain read elsewhere (01 §6.1)."""
    from ._engine.outcomes import replay_step
    from ._engine.steps import begin_step
    from ._engine.workflows import write_step

    call = begin_step(GET_STATUS)
    if call is None:
        return fetch_status(engine, workflow_id)
    if call.recorded is not None:
        value: WorkflowStatus | None = replay_step(engine, call.recorded)
        return value
    status = fetch_status(engine, workflow_id)
    out = engine.serializers.serialize_value(
        status, what="workflow status", max_bytes=engine.settings.max_payload_bytes
    )
    write_step(engine, call.ex, NewStep(call.step_id, GET_STATUS, out, None, secrets.token_hex(16)))
    return status


def _parent() -> Any:
    ctx = current_or_empty()
    if ctx.in_step or ctx.in_transaction:
        return None
    return ctx.execution


class WorkflowHandle(Protocol[R]):
    workflow_id: str

    def get_workflow_id(self) -> str: ...
    def get_result(self, *, polling_interval_sec: float = 1.0) -> R: ...
    def get_status(self) -> WorkflowStatus: ...


class WorkflowHandleAsync(Protocol[R]):
    workflow_id: str

    def get_workflow_id(self) -> str: ...
    async def get_result(self, *, polling_interval_sec: float = 1.0) -> R: ...
    async def get_status(self) -> WorkflowStatus: ...


class _HandleBase:
    def __init__(self, engine: Engine, workflow_id: str, *, must_exist: bool = True) -> None:
        self._engine = engine
        self.workflow_id = workflow_id
        self._must_exist = must_exist

    def get_workflow_id(self) -> str:
        return self.workflow_id

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.workflow_id!r})"


class PolledHandle(_HandleBase, Generic[R]):
    """The sync handle (`WorkflowHandle`)."""

    def get_result(self, *, polling_interval_sec: float = 1.0) -> R:
        from ._dbos import refuse_on_loop
        from ._engine.outcomes import await_result
        from ._engine.workflows import get_result_in_workflow

        refuse_on_loop("WorkflowHandle.get_result", "WorkflowHandleAsync.get_result")
        cap = check_polling_interval(polling_interval_sec)
        parent = _parent()
        if parent is not None:
            value: R = get_result_in_workflow(self._engine, parent, self.workflow_id)
            return value
        result: R = await_result(self._engine, self.workflow_id, cap=cap, must_exist=self._must_exist)
        return result

    def get_status(self) -> WorkflowStatus:
        from ._dbos import refuse_on_loop

        refuse_on_loop("WorkflowHandle.get_status", "WorkflowHandleAsync.get_status")
        status = get_status_checkpointed(self._engine, self.workflow_id)
        if status is None:
            raise DBOSNonExistentWorkflowError(self.workflow_id)
        return status


class PolledHandleAsync(_HandleBase, Generic[R]):
    """The async handle (`WorkflowHandleAsync`)."""

    async def get_result(self, *, polling_interval_sec: float = 1.0) -> R:
        from ._engine.outcomes import await_result_async
        from ._engine.workflows import get_result_in_workflow_async

        cap = check_polling_interval(polling_interval_sec)
        parent = _parent()
        if parent is not None:
            value: R = await get_result_in_workflow_async(self._engine, parent, self.workflow_id)
            return value
        result: R = await await_result_async(
            self._engine, self.workflow_id, cap=cap, must_exist=self._must_exist
        )
        return result

    async def get_status(self) -> WorkflowStatus:
        parent = _parent()
        if parent is not None:
            status = get_status_checkpointed(self._engine, self.workflow_id)
        else:
            status = await self._engine.io(fetch_status, self._engine, self.workflow_id)
        if status is None:
            raise DBOSNonExistentWorkflowError(self.workflow_id)
        return status
