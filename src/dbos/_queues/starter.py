"""Starting claimed workflows: rebuild the call from the row, dead-letter, and run in the background (01 §10)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .._engine.engine import Engine
from .._engine.execution import Execution
from .._engine.workflows import Auth, ReceiverState, body_of, run_in_background
from .._registry import FuncInfo
from .._store.base import ClaimedWorkflow, Outcome, StepRow, WorkflowRow
from ..error import DBOSNotAuthorizedError, DBOSSerializationError, DBOSWorkflowFunctionNotFoundError

_log = logging.getLogger("dbos")
Done = Callable[[ClaimedWorkflow], None]


class _Missing(Exception):
    """The row needs a class or configured instance this process has not registered (01 §4.4 rule 7)."""


def start_claimed(engine: Engine, claimed: list[ClaimedWorkflow], on_done: Done) -> None:
    """Start every claimed workflow in claim order; `on_done` runs when its execution here is over."""
    if not claimed:
        return
    need = [c.fence.workflow_id for c in claimed if c.may_have_steps]
    steps = engine.db.load_checkpoints(need) if need else {}
    for c in claimed:
        try:
            started = _start_one(engine, c, steps.get(c.fence.workflow_id, {}), on_done)
        except Exception:
            _log.exception("could not dispatch workflow %s", c.fence.workflow_id)
            started = False
        if not started:
            on_done(c)


def _fail(engine: Engine, c: ClaimedWorkflow, exc: Exception) -> None:
    payload = engine.serializers.serialize_error(exc, max_bytes=engine.settings.max_payload_bytes)
    engine.db.record_outcome(c.fence, Outcome("ERROR", error=payload))


def _dead_lettered(engine: Engine, c: ClaimedWorkflow, info: FuncInfo) -> bool:
    row = c.row
    limit = row.max_recovery_attempts if row.max_recovery_attempts is not None else info.max_recovery_attempts
    if limit is None or row.recovery_attempts <= limit + 1:
        return False
    _log.error("workflow %s exceeded %d recovery attempts; dead-lettered", row.workflow_id, limit)
    engine.db.record_outcome(c.fence, Outcome("MAX_RECOVERY_ATTEMPTS_EXCEEDED"))
    return True


def _start_one(engine: Engine, c: ClaimedWorkflow, checkpoints: dict[int, StepRow], on_done: Done) -> bool:
    """True when the workflow was started (on_done then fires at its end)."""
    row = c.row
    info = engine.registry.workflow(row.name)
    if info is None:
        engine.db.release([c.fence], refund_attempt=True)
        return False
    if _dead_lettered(engine, c, info):
        return False
    try:
        assert row.inputs is not None
        args, kwargs = engine.serializers.deserialize_inputs(row.inputs)
        receiver = _receiver(engine, row, info)
    except _Missing:
        engine.db.release([c.fence], refund_attempt=True)
        return False
    except (DBOSSerializationError, DBOSWorkflowFunctionNotFoundError) as exc:
        _fail(engine, c, exc)
        return False
    required = engine.registry.roles_for(info)
    if required and not set(required) & set(row.authenticated_roles or []):
        _fail(engine, c, DBOSNotAuthorizedError(f"Function {info.name} requires one of the roles {required}"))
        return False
    auth = Auth(row.authenticated_user, row.authenticated_roles, row.assumed_role)
    ex = Execution(row.workflow_id, row.name, c.fence, checkpoints, row.deadline_ms, is_async=info.is_async)
    run_in_background(
        engine, ex, body_of(info, receiver, tuple(args), dict(kwargs)), auth, lambda: on_done(c)
    )
    return True


def _receiver(engine: Engine, row: WorkflowRow, info: FuncInfo) -> Any:
    reg = engine.registry
    if info.method_kind == "classmethod":
        cls = reg.classes.get(row.class_name or "")
        if cls is None:
            raise _Missing(row.class_name)
        return cls
    if info.method_kind != "instance":
        return None
    if row.config_name is not None:
        key = f"{row.class_name}/{row.config_name}"
        inst = reg.instances.get(key)
        if inst is None:
            _log.warning(
                "workflow %s needs configured instance %r, not registered here", row.workflow_id, key
            )
            raise _Missing(key)
        return inst
    if row.receiver is None:
        raise DBOSWorkflowFunctionNotFoundError(
            row.workflow_id, f"workflow {row.workflow_id} is an instance method but has no stored receiver"
        )
    cls = reg.classes.get(row.class_name or "")
    assert row.inputs is not None
    obj = engine.serializers.deserialize_receiver(row.receiver, row.inputs.serializer, cls)
    if isinstance(obj, ReceiverState):
        if cls is None:
            raise _Missing(row.class_name)
        return obj.rebuild(cls)
    return obj
