"""`wait_first` (02 §7.3): the first of several workflows to finish, event-driven like `get_result`."""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from .._context import current_or_empty
from .._management import first_terminal
from .._store.base import NewStep
from ..error import DBOSUnexpectedStepError
from .engine import Engine
from .execution import Execution
from .outcomes import replay_step
from .steps import StepCall, begin_step
from .waits import Waiter
from .workflows import write_step

WAIT_FIRST = "DBOS.waitFirst"


def _execution() -> Execution | None:
    ctx = current_or_empty()
    return None if ctx.in_step or ctx.in_transaction else ctx.execution


class FirstWait:
    """One wait over several workflow IDs; shared by the sync and async drivers."""

    def __init__(self, engine: Engine, ids: Sequence[str], ex: Execution | None) -> None:
        self.engine = engine
        self.ids = list(ids)
        self.ex = ex
        self.waiter = ex.waiter if ex is not None else Waiter()
        self.keys = [("wf", wid) for wid in self.ids]

    def __enter__(self) -> FirstWait:
        self.engine.wake.register(self.keys, self.waiter)
        return self

    def __exit__(self, *exc: object) -> None:
        self.engine.wake.unregister(self.keys, self.waiter)

    def check(self) -> str | None:
        if self.ex is not None:
            self.ex.check_boundary()
        return first_terminal(self.engine.db, self.ids)


def _wait(engine: Engine, ids: Sequence[str], ex: Execution | None, cap: float) -> str:
    with FirstWait(engine, ids, ex) as w:
        while True:
            found = w.check()
            if found is not None:
                return found
            w.waiter.wait(cap)


async def _wait_async(engine: Engine, ids: Sequence[str], ex: Execution | None, cap: float) -> str:
    with FirstWait(engine, ids, ex) as w:
        while True:
            found = await engine.io(w.check)
            if found is not None:
                return found
            await w.waiter.wait_async(cap)


def _replayed(engine: Engine, call: StepCall, ids: Sequence[str]) -> str:
    assert call.recorded is not None
    wid = str(replay_step(engine, call.recorded))
    if wid not in ids:
        raise DBOSUnexpectedStepError(
            call.ex.workflow_id, call.step_id, f"{WAIT_FIRST} over {list(ids)}", wid
        )
    return wid


def _record(engine: Engine, call: StepCall, wid: str) -> None:
    out = engine.serializers.serialize_value(wid, what="wait_first result", max_bytes=1 << 20)
    write_step(engine, call.ex, NewStep(call.step_id, WAIT_FIRST, out, None, secrets.token_hex(16)))
    call.ex.check_boundary()


def wait_first_id(engine: Engine, ids: Sequence[str], cap: float) -> str:
    ex = _execution()
    call = begin_step(WAIT_FIRST) if ex is not None else None
    if call is None:
        return _wait(engine, ids, None, cap)
    if call.recorded is not None:
        return _replayed(engine, call, ids)
    wid = _wait(engine, ids, call.ex, cap)
    _record(engine, call, wid)
    return wid


async def wait_first_id_async(engine: Engine, ids: Sequence[str], cap: float) -> str:
    ex = _execution()
    call = begin_step(WAIT_FIRST) if ex is not None else None
    if call is None:
        return await _wait_async(engine, ids, None, cap)
    if call.recorded is not None:
        return _replayed(engine, call, ids)
    wid = await _wait_async(engine, ids, call.ex, cap)
    await engine.io(_record, engine, call, wid)
    return wid
