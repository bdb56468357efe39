"""Checkpointed steps (with retries) and durable sleep (01 §4.2, §6.2, §9)."""

from __future__ import annotations

import asyncio
import inspect
import math
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from .. import _failpoints as fp
from .._context import ContextState, current_or_empty, pop, push
from .._registry import FuncInfo, StepConfig
from .._store.base import NewStep, Payload, StepRow
from .._types import StepStatus
from .._validation import check_sleep_seconds
from ..error import DBOSException, DBOSMaxStepRetriesExceeded, DBOSStepTimeoutError
from .engine import Engine
from .execution import Execution
from .outcomes import replay_step
from .workflows import check_roles, verify_recorded, write_step

SLEEP = "DBOS.sleep"
MAX_BACKOFF_S = 3600.0


@dataclass
class StepCall:
    """One checkpointed step call: its ID and the recorded row, if replaying."""

    ex: Execution
    ctx: ContextState
    step_id: int
    name: str
    recorded: StepRow | None


def begin_step(name: str) -> StepCall | None:
    """Take the next step ID, or None when the call is a plain call (outside a workflow, or nested)."""
    ctx = current_or_empty()
    ex = ctx.execution
    if ex is None or ctx.in_step or ctx.in_transaction:
        return None
    step_id = ex.next_step_id()
    ex.check_boundary()
    recorded = ex.checkpoints.get(step_id)
    if recorded is not None:
        verify_recorded(ex, step_id, name, recorded.name)
    return StepCall(ex, ctx, step_id, name, recorded)


def _delay(cfg: StepConfig, attempt: int) -> float:
    return float(min(cfg.interval_seconds * cfg.backoff_rate**attempt, MAX_BACKOFF_S))


def _attempt_context(call: StepCall, cfg: StepConfig, attempt: int, role: str | None) -> ContextState:
    status = StepStatus(
        call.step_id,
        attempt if cfg.retries_allowed else None,
        cfg.max_attempts if cfg.retries_allowed else None,
    )
    # fresh extras per attempt: per-attempt counters (e.g. automatic send keys, 04 §2 rule 6) restart at 0
    return call.ctx.copy(in_step=True, step_status=status, assumed_role=role, extras={})


def outcome_payloads(
    engine: Engine, call: StepCall, value: Any, exc: Exception | None
) -> tuple[Payload | None, Payload | None, Exception | None]:
    """(output, error, serialization failure). An output that cannot be serialized becomes the step's
    recorded error (01 §12 rule 6)."""
    s = engine.serializers
    limit = engine.settings.max_payload_bytes
    if exc is None:
        try:
            return s.serialize_value(value, what=f"output of step {call.name}", max_bytes=limit), None, None
        except Exception as bad:
            return None, s.serialize_error(bad, max_bytes=limit), bad
    return None, s.serialize_error(exc, max_bytes=limit), None


def record_payloads(
    engine: Engine, call: StepCall, output: Payload | None, error: Payload | None, started: int
) -> None:
    fp.failpoint("step.before_commit")
    write_step(
        engine, call.ex, NewStep(call.step_id, call.name, output, error, secrets.token_hex(16), None, started)
    )
    fp.failpoint("step.after_commit")


def record_step_outcome(
    engine: Engine, call: StepCall, value: Any, exc: Exception | None, started: int
) -> Exception | None:
    """Serialize and record a step's outcome; returns the serialization failure recorded instead, if any."""
    output, error, bad = outcome_payloads(engine, call, value, exc)
    record_payloads(engine, call, output, error, started)
    return bad


def _should_retry(cfg: StepConfig, exc: Exception, attempt: int) -> bool:
    if not cfg.retries_allowed or attempt >= cfg.max_attempts - 1:
        return False
    if cfg.should_retry is None:
        return True
    return bool(cfg.should_retry(exc))


def _final_error(info_name: str, cfg: StepConfig, errors: list[Exception]) -> Exception:
    if cfg.retries_allowed and len(errors) >= cfg.max_attempts:
        return DBOSMaxStepRetriesExceeded(info_name, cfg.max_attempts, list(errors))
    return errors[-1]


def run_step(engine: Engine, info: FuncInfo, func: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    call = begin_step(info.name)
    if call is None:
        ctx = current_or_empty()
        if ctx.in_transaction and info.kind == "transaction":
            raise DBOSException(f"transaction {info.name} cannot be called inside another transaction")
        return func(*args, **kwargs)
    if call.recorded is not None:
        return replay_step(engine, call.recorded)
    role = check_roles(engine.registry, info, call.ctx)
    cfg = info.step or StepConfig()
    engine.confirm_lease()
    call.ex.check_boundary()
    started = engine.db.now_ms()
    errors: list[Exception] = []
    for attempt in range(cfg.max_attempts if cfg.retries_allowed else 1):
        token = push(_attempt_context(call, cfg, attempt, role))
        try:
            value = func(*args, **kwargs)
        except Exception as e:
            errors.append(e)
            pop(token)
            try:
                retry = _should_retry(cfg, e, attempt)
            except Exception as pred_exc:
                errors[-1] = pred_exc
                retry = False
            if not retry:
                break
            call.ex.waiter.wait(_delay(cfg, attempt))
            call.ex.check_boundary()
            continue
        pop(token)
        bad = record_step_outcome(engine, call, value, None, started)
        call.ex.check_boundary()
        if bad is not None:
            raise bad
        return value
    exc = _final_error(info.name, cfg, errors)
    record_step_outcome(engine, call, None, exc, started)
    raise exc


async def _one_attempt_async(
    func: Callable[..., Any], args: Any, kwargs: Any, cfg: StepConfig, name: str
) -> Any:
    result = func(*args, **kwargs)
    if not inspect.isawaitable(result):
        return result
    if cfg.timeout_seconds is None:
        return await result
    try:
        return await asyncio.wait_for(result, cfg.timeout_seconds)
    except asyncio.TimeoutError:
        raise DBOSStepTimeoutError(name, cfg.timeout_seconds) from None


async def _interruptible(ex: Execution, attempt: Coroutine[Any, Any, Any]) -> Any:
    """Run one async attempt as a task that cancellation or fencing can interrupt; an interrupted attempt
    records nothing and the step call raises the boundary error (02 §2 rule 7, §3 rule 4)."""
    task = asyncio.ensure_future(attempt)
    ex.track(task)
    try:
        return await task
    except asyncio.CancelledError:
        if task.cancelled() and ex.stopped:
            ex.check_boundary()
        raise
    finally:
        ex.untrack(task)


async def _should_retry_async(cfg: StepConfig, exc: Exception, attempt: int) -> bool:
    if not cfg.retries_allowed or attempt >= cfg.max_attempts - 1:
        return False
    if cfg.should_retry is None:
        return True
    verdict = cfg.should_retry(exc)
    if inspect.isawaitable(verdict):
        verdict = await verdict
    return bool(verdict)


async def run_step_async(
    engine: Engine, info: FuncInfo, func: Callable[..., Any], args: Any, kwargs: Any
) -> Any:
    call = begin_step(info.name)
    cfg = info.step or StepConfig()
    if call is None:
        return await _one_attempt_async(
            func, args, kwargs, StepConfig(timeout_seconds=cfg.timeout_seconds), info.name
        )
    if call.recorded is not None:
        return replay_step(engine, call.recorded)
    role = check_roles(engine.registry, info, call.ctx)
    if engine.lease_is_stale():
        await engine.io(engine.confirm_lease)
    call.ex.check_boundary()
    started = engine.db.now_ms()
    errors: list[Exception] = []
    for attempt in range(cfg.max_attempts if cfg.retries_allowed else 1):
        token = push(_attempt_context(call, cfg, attempt, role))
        try:
            value = await _interruptible(call.ex, _one_attempt_async(func, args, kwargs, cfg, info.name))
        except Exception as e:
            errors.append(e)
            pop(token)
            try:
                retry = await _should_retry_async(cfg, e, attempt)
            except Exception as pred_exc:
                errors[-1] = pred_exc
                retry = False
            if not retry:
                break
            await call.ex.waiter.wait_async(_delay(cfg, attempt))
            call.ex.check_boundary()
            continue
        pop(token)
        bad = await engine.io(record_step_outcome, engine, call, value, None, started)
        call.ex.check_boundary()
        if bad is not None:
            raise bad
        return value
    exc = _final_error(info.name, cfg, errors)
    await engine.io(record_step_outcome, engine, call, None, exc, started)
    raise exc


# --- durable sleep -------------------------------------------------------------------------------------------


def _sleep_call(seconds: Any) -> tuple[StepCall, float] | None:
    """The sleep's step call, or None for a non-positive sleep (which takes no step ID). No I/O."""
    s = check_sleep_seconds(seconds)
    ctx = current_or_empty()
    if ctx.execution is None or ctx.in_step or ctx.in_transaction:
        raise DBOSException(
            "DBOS.sleep must be called from a workflow (not from a step, transaction or plain code)"
        )
    if s <= 0:
        return None
    call = begin_step(SLEEP)
    assert call is not None
    return call, s


def deadline_after(engine: Engine, timeout_s: float) -> int:
    """The database-clock time `timeout_s` from now. The clock reads whole milliseconds (truncated), so one more
    millisecond keeps a sleep or a wait from ending before its time has passed."""
    return engine.db.now_ms() + int(math.ceil(timeout_s * 1000)) + 1


def _wake_time(engine: Engine, call: StepCall, seconds: float) -> int:
    """The recorded wake-up time (epoch ms); durably recorded before the first sleep (01 §9 rule 3)."""
    if call.recorded is not None:
        return int(replay_step(engine, call.recorded))
    wake_ms = deadline_after(engine, seconds)
    out = engine.serializers.serialize_value(wake_ms, what="sleep wake-up time", max_bytes=1 << 20)
    write_step(engine, call.ex, NewStep(call.step_id, SLEEP, out, None, secrets.token_hex(16)))
    fp.failpoint("sleep.after_record")
    return wake_ms


def sleep(engine: Engine, seconds: Any) -> None:
    begun = _sleep_call(seconds)
    if begun is None:
        return
    call, s = begun
    wake_ms = _wake_time(engine, call, s)
    while True:
        remaining = wake_ms - engine.db.now_ms()
        if remaining <= 0:
            return
        call.ex.waiter.wait(remaining / 1000)
        call.ex.check_boundary()


async def sleep_async(engine: Engine, seconds: Any) -> None:
    begun = _sleep_call(seconds)
    if begun is None:
        return
    call, s = begun
    wake_ms = await engine.io(_wake_time, engine, call, s)
    while True:
        remaining = wake_ms - engine.db.now_ms()
        if remaining <= 0:
            return
        await call.ex.waiter.wait_async(remaining / 1000)
        call.ex.check_boundary()
