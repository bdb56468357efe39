"""@DBOS.transaction: exactly-once database transactions whose checkpoint commits with the user's writes."""

from __future__ import annotations

import logging
import random
import secrets
import time
from collections.abc import Callable
from typing import Any

from .. import _failpoints as fp
from .._appdb import AppDatabase, is_retryable
from .._context import current_or_empty, pop, push
from .._registry import FuncInfo
from .._store.base import NewStep, Payload, Write
from .._types import StepStatus
from ..error import DBOSException, DBOSWorkflowConflictIDError
from .engine import Engine
from .outcomes import replay_step
from .steps import StepCall, begin_step, record_step_outcome
from .workflows import call_workflow, check_roles

_log = logging.getLogger("dbos")
_warned_on_loop: set[str] = set()


def _warn_if_on_loop(name: str) -> None:
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    if name not in _warned_on_loop:
        _warned_on_loop.add(name)
        _log.warning("transaction %s called on a thread with a running event loop; it blocks the loop", name)


def run_transaction(engine: Engine, info: FuncInfo, func: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    ctx = current_or_empty()
    if ctx.in_step or ctx.in_transaction:
        raise DBOSException(f"transaction {info.name} cannot be called inside a step or another transaction")
    _warn_if_on_loop(info.name)
    if ctx.execution is None:
        return call_workflow(engine, info, args, kwargs)  # a one-step temp workflow (01 §4.3 rule 7)
    call = begin_step(info.name)
    assert call is not None
    if call.recorded is not None:
        return replay_step(engine, call.recorded)
    role = check_roles(engine.registry, info, call.ctx)
    started = engine.db.now_ms()
    delay = 0.001
    while True:
        try:
            return _attempt(engine, info, call, func, args, kwargs, role, started)
        except Exception as e:
            if not is_retryable(e):
                raise
            call.ex.check_boundary()
            time.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 1.5, 2.0)


class _Recorded(Exception):
    """Internal: the output table already holds this step (a committed earlier attempt)."""

    def __init__(self, row: tuple[Any, ...]) -> None:
        self.row = row


def _attempt(
    engine: Engine,
    info: FuncInfo,
    call: StepCall,
    func: Callable[..., Any],
    args: Any,
    kwargs: Any,
    role: str | None,
    started: int,
) -> Any:
    app: AppDatabase = engine.app_db
    try:
        value = _in_transaction(engine, app, info, call, func, args, kwargs, role, started)
    except _Recorded as rec:
        output, _error, serializer = rec.row
        payload = Payload(output, serializer) if output is not None else None
        value = engine.serializers.deserialize_value(payload) if payload is not None else None
        record_step_outcome(engine, call, value, None, started)
        return value
    except DBOSWorkflowConflictIDError:
        raise
    except Exception as e:
        if is_retryable(e):
            raise
        record_step_outcome(engine, call, None, e, started)
        raise
    if app.separate:
        fp.failpoint("transaction.after_commit")
        record_step_outcome(engine, call, value, None, started)
    return value


def _in_transaction(
    engine: Engine,
    app: AppDatabase,
    info: FuncInfo,
    call: StepCall,
    func: Callable[..., Any],
    args: Any,
    kwargs: Any,
    role: str | None,
    started: int,
) -> Any:
    with app.transaction(info.isolation_level) as (conn, session):
        if app.separate:
            row = app.recorded_output(conn, call.ex.workflow_id, call.step_id)
            if row is not None:
                raise _Recorded(row)
        state = call.ctx.copy(
            in_transaction=True,
            sql_session=session,
            step_status=StepStatus(call.step_id, None, None),
            assumed_role=role,
        )
        token = push(state)
        try:
            value = func(*args, **kwargs)
        finally:
            pop(token)
        session.flush()
        output = engine.serializers.serialize_value(
            value, what=f"output of transaction {info.name}", max_bytes=engine.settings.max_payload_bytes
        )
        if app.separate:
            app.record_output(
                conn, call.ex.workflow_id, call.step_id, output.text, output.serializer, started
            )
        else:
            step = NewStep(call.step_id, info.name, output, None, secrets.token_hex(16), None, started)
            dbapi = conn.connection.dbapi_connection
            w = engine.db.record_step_in(dbapi, call.ex.fence, step)
            if w is not Write.APPLIED:
                if w is Write.FENCED:
                    call.ex.fence_off()
                raise DBOSWorkflowConflictIDError(call.ex.workflow_id)
    return value
