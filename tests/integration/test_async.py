"""Async workflows, steps and the `_async` twins, on both backends."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from dbos import DBOS, SetWorkflowID
from dbos.error import DBOSMaxStepRetriesExceeded, DBOSStepTimeoutError


def test_async_workflow_with_steps_and_children(dbos: type[DBOS]) -> None:
    @DBOS.step()
    async def a_step(x: int) -> int:
        await asyncio.sleep(0)
        return x + 1

    @DBOS.step()
    def s_step(x: int) -> int:
        return x * 2

    @DBOS.workflow()
    async def child(x: int) -> int:
        return await a_step(x)

    @DBOS.workflow()
    async def parent(x: int) -> int:
        y = await a_step(x)
        z = s_step(y)
        await DBOS.sleep_async(0.01)
        return await child(z)

    async def main() -> int:
        with SetWorkflowID("async-parent"):
            return await parent(1)

    assert asyncio.run(main()) == 5
    status = DBOS.get_workflow_status("async-parent-4")
    assert status is not None and status.output == 5


def test_gather_assigns_ids_in_argument_order(dbos: type[DBOS]) -> None:
    @DBOS.step()
    async def step_a() -> int | None:
        await asyncio.sleep(0.02)
        return DBOS.step_id

    @DBOS.step()
    async def step_b() -> int | None:
        return DBOS.step_id

    @DBOS.workflow()
    async def wf() -> list[int | None]:
        return list(await asyncio.gather(step_a(), step_b()))

    assert asyncio.run(wf()) == [1, 2]


def test_start_workflow_async_of_sync_workflow(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def sync_wf(x: int) -> int:
        return x + 1

    async def main() -> int:
        handle = await DBOS.start_workflow_async(sync_wf, 41)
        status = await handle.get_status()
        assert status.workflow_id == handle.workflow_id
        return int(await handle.get_result())

    assert asyncio.run(main()) == 42


def test_start_async_workflow_from_sync_code(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    async def async_wf(x: int) -> str:
        await DBOS.sleep_async(0.01)
        return f"v{x}"

    handle = DBOS.start_workflow(async_wf, 3)
    assert handle.get_result() == "v3"


def test_many_concurrent_async_sleeps_share_threads(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    async def sleeper(i: int) -> int:
        await DBOS.sleep_async(1)
        return i

    async def main() -> list[int]:
        return list(await asyncio.gather(*(sleeper(i) for i in range(100))))

    before = threading.active_count()
    start = time.monotonic()
    assert asyncio.run(main()) == list(range(100))
    assert time.monotonic() - start < 3.0
    assert threading.active_count() < before + 50


def test_async_step_timeout_and_retries(dbos: type[DBOS]) -> None:
    @DBOS.step(timeout_seconds=0.2)
    async def slow() -> None:
        await asyncio.sleep(5)

    @DBOS.step(timeout_seconds=0.1, retries_allowed=True, max_attempts=3, interval_seconds=0.01)
    async def slow_retried() -> None:
        await asyncio.sleep(5)

    @DBOS.workflow()
    async def wf1() -> None:
        await slow()

    @DBOS.workflow()
    async def wf2() -> None:
        await slow_retried()

    with pytest.raises(DBOSStepTimeoutError):
        asyncio.run(wf1())
    with pytest.raises(DBOSMaxStepRetriesExceeded) as info:
        asyncio.run(wf2())
    assert len(info.value.errors) == 3
    assert all(isinstance(e, DBOSStepTimeoutError) for e in info.value.errors)


def test_sync_step_with_timeout_rejected() -> None:
    from dbos.error import DBOSException

    with pytest.raises(DBOSException):

        @DBOS.step(timeout_seconds=1)
        def s() -> None:
            pass


def test_async_get_result_and_status_twins(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    async def wf() -> str:
        return "ok"

    async def main() -> None:
        with SetWorkflowID("twins-1"):
            assert await wf() == "ok"
        assert await DBOS.get_result_async("twins-1") == "ok"
        status = await DBOS.get_workflow_status_async("twins-1")
        assert status is not None and status.status == "SUCCESS"
        handle = await DBOS.retrieve_workflow_async("twins-1")
        assert await handle.get_result() == "ok"

    asyncio.run(main())
