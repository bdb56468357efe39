"""Management and introspection calls as checkpointed steps inside workflows (02 §8): the first execution runs
the call and records its answer (or error); a replay returns the recorded answer whatever the database holds now.
Outside a workflow, or inside a step, the call is plain."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from .engine import Engine
from .outcomes import replay_step
from .steps import StepCall, begin_step, record_step_outcome

T = TypeVar("T")


def _record(engine: Engine, call: StepCall, value: Any, exc: Exception | None, started: int) -> None:
    bad = record_step_outcome(engine, call, value, exc, started)
    call.ex.check_boundary()
    if bad is not None:
        raise bad


def recorded(engine: Engine, name: str, fn: Callable[[], T]) -> T:
    call = begin_step(name)
    if call is None:
        return fn()
    if call.recorded is not None:
        value: T = replay_step(engine, call.recorded)
        return value
    started = engine.db.now_ms()
    try:
        result = fn()
    except Exception as e:
        _record(engine, call, None, e, started)
        raise
    _record(engine, call, result, None, started)
    return result


async def recorded_async(engine: Engine, name: str, fn: Callable[[], T]) -> T:
    """The async twin: `fn` (blocking) runs on DBOS's I/O pool."""
    call = begin_step(name)
    if call is None:
        return await engine.io(fn)
    if call.recorded is not None:
        value: T = replay_step(engine, call.recorded)
        return value
    started = engine.db.now_ms()
    try:
        result = await engine.io(fn)
    except Exception as e:
        await engine.io(_record, engine, call, None, e, started)
        raise
    await engine.io(_record, engine, call, result, None, started)
    return result
