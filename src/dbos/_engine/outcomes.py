"""Reading recorded outcomes and waiting for them (01 §8.2, §8.3)."""

from __future__ import annotations

from typing import Any

from .._store.base import TERMINAL_STATUSES, StepRow, WorkflowRow
from ..error import (
    DBOSAwaitedWorkflowCancelledError,
    DBOSAwaitedWorkflowMaxRecoveryAttemptsExceeded,
    DBOSNonExistentWorkflowError,
    DBOSSerializationError,
    DBOSWorkflowTimeoutError,
)
from .engine import Engine
from .execution import Execution
from .waits import Waiter


def timeout_error(row: WorkflowRow) -> DBOSWorkflowTimeoutError:
    timeout_s = row.timeout_ms / 1000 if row.timeout_ms is not None else None
    return DBOSWorkflowTimeoutError(
        row.workflow_id, timeout_s, row.deadline_ms or 0, parent_workflow_id=row.parent_workflow_id
    )


def outcome_of(engine: Engine, row: WorkflowRow) -> Any:
    """Return the recorded output of a terminal row, or raise what §8.3 says."""
    if row.status == "SUCCESS":
        if row.output is None:
            return None
        try:
            return engine.serializers.deserialize_value(row.output)
        except DBOSSerializationError:
            raise
        except Exception as e:
            raise DBOSSerializationError(f"output of workflow {row.workflow_id!r}", str(e)) from e
    if row.status == "ERROR":
        if row.error is None:
            raise DBOSSerializationError(f"error of workflow {row.workflow_id!r}", "no error recorded")
        raise engine.serializers.deserialize_error(row.error)
    if row.status == "CANCELLED":
        if row.cancel_reason == "deadline":
            raise timeout_error(row)
        raise DBOSAwaitedWorkflowCancelledError(row.workflow_id)
    if row.status == "MAX_RECOVERY_ATTEMPTS_EXCEEDED":
        raise DBOSAwaitedWorkflowMaxRecoveryAttemptsExceeded(row.workflow_id)
    raise AssertionError(f"outcome_of called on a non-terminal row ({row.status})")  # pragma: no cover


def replay_step(engine: Engine, row: StepRow) -> Any:
    """Return or raise a recorded step outcome without executing anything."""
    if row.error is not None:
        raise engine.serializers.deserialize_error(row.error)
    if row.output is None:
        return None
    return engine.serializers.deserialize_value(row.output)


class ResultWait:
    """One wait for a workflow's outcome; shared by the sync and async drivers."""

    def __init__(self, engine: Engine, workflow_id: str, *, must_exist: bool, ex: Execution | None) -> None:
        self.engine = engine
        self.workflow_id = workflow_id
        self.must_exist = must_exist
        self.ex = ex
        self.waiter = ex.waiter if ex is not None else Waiter()
        self.keys = [("wf", workflow_id)]
        self.seen = False

    def __enter__(self) -> ResultWait:
        self.engine.wake.register(self.keys, self.waiter)
        return self

    def __exit__(self, *exc: object) -> None:
        self.engine.wake.unregister(self.keys, self.waiter)

    def check(self) -> tuple[bool, WorkflowRow | None]:
        """(done, row): done when terminal; raises when the row is missing and must exist."""
        if self.ex is not None:
            self.ex.check_boundary()
        row = self.engine.db.get_workflow(self.workflow_id, load_input=False, load_output=True)
        if row is None:
            if self.must_exist or self.seen:
                raise DBOSNonExistentWorkflowError(self.workflow_id)
            return False, None
        self.seen = True
        return row.status in TERMINAL_STATUSES, row


def await_result(
    engine: Engine,
    workflow_id: str,
    *,
    cap: float = 1.0,
    must_exist: bool = True,
    ex: Execution | None = None,
) -> Any:
    with ResultWait(engine, workflow_id, must_exist=must_exist, ex=ex) as w:
        while True:
            done, row = w.check()
            if done and row is not None:
                return outcome_of(engine, row)
            w.waiter.wait(cap)


async def await_result_async(
    engine: Engine,
    workflow_id: str,
    *,
    cap: float = 1.0,
    must_exist: bool = True,
    ex: Execution | None = None,
) -> Any:
    with ResultWait(engine, workflow_id, must_exist=must_exist, ex=ex) as w:
        while True:
            done, row = await engine.io(w.check)
            if done and row is not None:
                return outcome_of(engine, row)
            await w.waiter.wait_async(cap)
