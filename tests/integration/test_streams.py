"""Streams through the public API, on both backends (04 §8-§11)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from conftest import wait_for
from dbos import DBOS, SetWorkflowID
from dbos._dbos import current_engine
from dbos.error import (
    DBOSException,
    DBOSNonExistentWorkflowError,
    DBOSStreamNondeterminismError,
    DBOSStreamTimeoutError,
    DBOSValidationError,
)

attempts: dict[str, int] = {}


@DBOS.workflow()
def writes_n(n: int, close: bool, delay: float = 0.0) -> int:
    for i in range(n):
        DBOS.write_stream("s", i)
        if delay:
            DBOS.sleep(delay)
    if close:
        DBOS.close_stream("s")
    return n


def test_write_read_gapless_and_close(dbos: Any) -> None:
    with SetWorkflowID("st-1"):
        writes_n(1000, True)
    assert list(DBOS.read_stream("st-1", "s")) == list(range(1000))
    assert list(DBOS.read_stream("st-1", "s", offset=950)) == list(range(950, 1000))
    assert list(DBOS.read_stream("st-1", "s", offset=5000)) == []
    assert DBOS.read_stream_offset("st-1", "s", 3) == 3
    with pytest.raises(DBOSStreamTimeoutError) as info:
        DBOS.read_stream_offset("st-1", "s", 1000)
    assert "ended" in str(info.value)


def test_unclosed_stream_ends_with_its_writer(dbos: Any) -> None:
    with SetWorkflowID("st-open"):
        writes_n(5, False)
    assert list(DBOS.read_stream("st-open", "s")) == [0, 1, 2, 3, 4]


@DBOS.workflow()
def writes_then_fails() -> None:
    for i in range(3):
        DBOS.write_stream("s", i)
    raise RuntimeError("boom")


def test_error_writer_drains_then_stops(dbos: Any) -> None:
    with SetWorkflowID("st-err"):
        with pytest.raises(RuntimeError):
            writes_then_fails()
    assert list(DBOS.read_stream("st-err", "s")) == [0, 1, 2]


def test_live_reader_follows_the_writer(dbos: Any) -> None:
    with SetWorkflowID("st-live"):
        DBOS.start_workflow(writes_n, 30, True, 0.02)
    t0 = time.monotonic()
    got = list(DBOS.read_stream("st-live", "s"))
    assert got == list(range(30))
    assert time.monotonic() - t0 < 5


@DBOS.workflow()
def closes_twice_and_writes() -> None:
    DBOS.write_stream("s", "__DBOS_STREAM_CLOSED__")
    DBOS.write_stream("s", None)
    DBOS.close_stream("s")
    DBOS.close_stream("s")
    DBOS.write_stream("s", "too late")


def test_close_semantics(dbos: Any) -> None:
    with SetWorkflowID("st-close"):
        with pytest.raises(DBOSException) as info:
            closes_twice_and_writes()
    assert "is closed" in str(info.value)
    assert list(DBOS.read_stream("st-close", "s")) == ["__DBOS_STREAM_CLOSED__", None]


@DBOS.step(retries_allowed=True, max_attempts=3, interval_seconds=0.01)
def writes_in_flaky_step() -> None:
    attempts["w"] = attempts.get("w", 0) + 1
    for i in range(3):
        DBOS.write_stream("s", i)
    if attempts["w"] < 3:
        raise RuntimeError("retry")


@DBOS.workflow()
def step_writer() -> None:
    writes_in_flaky_step()
    DBOS.close_stream("s")


def test_step_writes_are_exactly_once(dbos: Any) -> None:
    attempts.clear()
    with SetWorkflowID("st-step"):
        step_writer()
    assert attempts["w"] == 3
    assert list(DBOS.read_stream("st-step", "s")) == [0, 1, 2]


@DBOS.workflow()
async def four_async_writers() -> None:
    async def writer(w: int) -> None:
        for i in range(50):
            await DBOS.write_stream_async("s", (w, i))

    await asyncio.gather(*(writer(w) for w in range(4)))
    await DBOS.close_stream_async("s")


def test_concurrent_async_writers(dbos: Any) -> None:
    async def go() -> None:
        with SetWorkflowID("st-async"):
            await four_async_writers()

    asyncio.run(go())
    values = list(DBOS.read_stream("st-async", "s"))
    assert sorted(values) == sorted((w, i) for w in range(4) for i in range(50))


@DBOS.workflow()
def idle_writer() -> None:
    DBOS.sleep(30)


def test_read_timeouts_and_bad_input(dbos: Any) -> None:
    handle = DBOS.start_workflow(idle_writer)
    t0 = time.monotonic()
    with pytest.raises(DBOSStreamTimeoutError):
        list(DBOS.read_stream(handle.workflow_id, "s", timeout_seconds=0.2))
    assert 0.2 <= time.monotonic() - t0 < 0.6
    DBOS.cancel_workflow(handle.workflow_id)
    with pytest.raises(DBOSNonExistentWorkflowError):
        list(DBOS.read_stream("nope", "k"))
    with pytest.raises(DBOSValidationError):
        DBOS.read_stream("nope", "k", offset=-1)  # at the call, before iteration
    with pytest.raises(DBOSValidationError):
        DBOS.read_stream("nope", "k\x00")
    with pytest.raises(DBOSException):
        DBOS.write_stream("k", 1)  # outside a workflow


@DBOS.workflow()
def reads_stream(source: str) -> list[Any]:
    return list(DBOS.read_stream(source, "s"))


def test_checkpointed_read_replays(dbos: Any) -> None:
    with SetWorkflowID("st-src"):
        writes_n(5, True)
    with SetWorkflowID("st-reader"):
        assert reads_stream("st-src") == [0, 1, 2, 3, 4]
    names = [s["function_name"] for s in DBOS.list_workflow_steps("st-reader")]
    assert names == ["DBOS.readStream"] * 6  # five values and the end
    DBOS.delete_workflow("st-src")
    fork = DBOS.fork_workflow("st-reader", 7)  # every read replayed from its checkpoint
    assert fork.get_result() == [0, 1, 2, 3, 4]


@DBOS.workflow()
async def two_concurrent_reads(source: str) -> str:
    async def first() -> None:
        async for _ in DBOS.read_stream_async(source, "s", timeout_seconds=2):
            pass

    task = asyncio.ensure_future(first())
    await asyncio.sleep(0.1)
    try:
        async for _ in DBOS.read_stream_async(source, "s", timeout_seconds=2):
            pass
    except DBOSStreamNondeterminismError:
        task.cancel()
        return "refused"
    return "allowed"


def test_concurrent_checkpointed_reads_refused(dbos: Any) -> None:
    h = DBOS.start_workflow(idle_writer)

    async def go() -> str:
        return str(await two_concurrent_reads(h.workflow_id))

    assert asyncio.run(go()) == "refused"
    DBOS.cancel_workflow(h.workflow_id)


@DBOS.workflow()
def waits_on_stream(source: str) -> list[Any]:
    return list(DBOS.read_stream(source, "s"))


def test_cancel_wakes_a_reading_workflow(dbos: Any) -> None:
    src = DBOS.start_workflow(idle_writer)
    reader = DBOS.start_workflow(waits_on_stream, src.workflow_id)
    time.sleep(0.2)
    t0 = time.monotonic()
    DBOS.cancel_workflow(reader.workflow_id)
    wait_for(lambda: not current_engine().is_running_here(reader.workflow_id), 0.3)
    assert time.monotonic() - t0 < 0.3
    DBOS.cancel_workflow(src.workflow_id)
