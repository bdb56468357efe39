"""Timeouts and deadlines through the public API, on both backends (02 §2)."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from typing import Any

import pytest

from conftest import wait_for
from dbos import DBOS, Queue, SetWorkflowID, SetWorkflowTimeout
from dbos._dbos import current_engine
from dbos.error import (
    DBOSAwaitedWorkflowCancelledError,
    DBOSValidationError,
    DBOSWorkflowCancelledError,
    DBOSWorkflowTimeoutError,
)

ran: dict[str, int] = {}


def bump(key: str) -> None:
    ran[key] = ran.get(key, 0) + 1


# --- the seed's examples, scaled ------------------------------------------------------------------------------


@DBOS.workflow()
def long_running_task() -> str:
    DBOS.sleep(120)  # Sleep for 2 minutes
    return "completed"


@DBOS.workflow()
def quick_operation() -> str:
    return "fast"


@DBOS.workflow()
def slow_operation() -> str:
    DBOS.sleep(1)
    return "slow"


def test_seed_timeout_protection(dbos: Any) -> None:
    t0 = time.monotonic()
    caught: Exception | None = None
    try:
        with SetWorkflowID("timeout-protection"):
            with SetWorkflowTimeout(1.0):
                result = long_running_task()
        print(result)
    except Exception as e:  # the seed catches Exception: the timeout error is one
        print(f"Workflow timed out: {e}")
        caught = e
    elapsed = time.monotonic() - t0
    assert isinstance(caught, DBOSWorkflowTimeoutError)
    assert "1.0" in str(caught)
    assert 1.0 <= elapsed < 1.5, elapsed
    status = DBOS.get_workflow_status("timeout-protection")
    assert status is not None and status.status == "CANCELLED"
    assert isinstance(status.error, DBOSWorkflowTimeoutError)
    assert status.workflow_timeout_ms == 1000
    with pytest.raises(DBOSWorkflowTimeoutError):
        DBOS.retrieve_workflow("timeout-protection").get_result()


def test_seed_different_timeouts(dbos: Any) -> None:
    with SetWorkflowID("quick-op"):
        with SetWorkflowTimeout(1.0):
            quick_result = quick_operation()
    with SetWorkflowID("slow-op"):
        with SetWorkflowTimeout(3.0):
            slow_result = slow_operation()
    assert (quick_result, slow_result) == ("fast", "slow")
    time.sleep(1.2)  # the quick one's deadline has passed; a finished workflow stays finished
    for wid in ("quick-op", "slow-op"):
        st = DBOS.get_workflow_status(wid)
        assert st is not None and st.status == "SUCCESS"


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), True, "1"])
def test_bad_timeouts_raise(bad: Any) -> None:
    with pytest.raises(DBOSValidationError):
        SetWorkflowTimeout(bad)


# --- every wait wakes at the deadline -------------------------------------------------------------------------


@DBOS.step(retries_allowed=True, interval_seconds=60, max_attempts=3)
def always_fails() -> None:
    raise RuntimeError("boom")


@DBOS.workflow()
def waits_in_retry() -> None:
    always_fails()


@DBOS.workflow()
def sleeps_60() -> str:
    DBOS.sleep(60)
    return "woke"


@DBOS.workflow()
def awaits_child() -> str:
    with SetWorkflowTimeout(None):
        handle = DBOS.start_workflow(sleeps_60)
    return str(handle.get_result())


@DBOS.workflow()
def waits_first() -> str:
    with SetWorkflowTimeout(None):
        handle = DBOS.start_workflow(sleeps_60)
    return str(DBOS.wait_first([handle]).workflow_id)


@DBOS.workflow()
def waits_in_recv() -> Any:
    return DBOS.recv(timeout_seconds=60)


@DBOS.workflow()
def waits_in_get_event() -> Any:
    return DBOS.get_event("never-set-by-anyone", "k", timeout_seconds=60)


@DBOS.workflow()
def waits_in_read_stream() -> Any:
    with SetWorkflowTimeout(None):
        idle = DBOS.start_workflow(sleeps_60)
    return list(DBOS.read_stream(idle.workflow_id, "s"))


@pytest.mark.parametrize(
    "func",
    [
        sleeps_60,
        waits_in_retry,
        awaits_child,
        waits_first,
        waits_in_recv,
        waits_in_get_event,
        waits_in_read_stream,
    ],
)
def test_wait_wakes_at_deadline(dbos: Any, func: Any) -> None:
    t0 = time.monotonic()
    with SetWorkflowTimeout(1.0):
        handle = DBOS.start_workflow(func)
    with pytest.raises(DBOSWorkflowTimeoutError):
        handle.get_result()
    assert time.monotonic() - t0 < 1.5
    st = handle.get_status()
    assert st.status == "CANCELLED"
    # the workflow's own thread has left the wait too: nothing of it is still running here
    engine = current_engine()
    wait_for(lambda: not engine.is_running_here(handle.workflow_id), 0.5)


@DBOS.step()
def sync_slow_step() -> str:
    bump("sync_slow_step")
    time.sleep(2)
    return "step-done"


@DBOS.step()
def after_slow_step() -> None:
    bump("after_slow_step")


@DBOS.workflow()
def slow_step_workflow() -> None:
    sync_slow_step()
    after_slow_step()


def test_sync_step_under_timeout(dbos: Any) -> None:
    ran.clear()
    t0 = time.monotonic()
    with SetWorkflowTimeout(1.0):
        handle = DBOS.start_workflow(slow_step_workflow)
    with pytest.raises(DBOSWorkflowTimeoutError):
        handle.get_result()
    assert time.monotonic() - t0 < 1.5  # the caller is woken at the deadline, not when the step returns
    engine = current_engine()
    wait_for(lambda: not engine.is_running_here(handle.workflow_id), 3)
    steps = DBOS.list_workflow_steps(handle.workflow_id)
    assert [s["function_name"] for s in steps] == [sync_slow_step.__qualname__]  # its checkpoint exists
    assert ran == {"sync_slow_step": 1}  # the next step never ran
    assert handle.get_status().status == "CANCELLED"


attempts: list[str] = []


@DBOS.step()
async def async_slow_step() -> str:
    attempts.append("start")
    await asyncio.sleep(60 if len(attempts) == 1 else 0)
    return "async-done"


@DBOS.workflow()
async def async_step_workflow() -> str:
    return await async_slow_step()


def test_async_step_interrupted_and_rerun_after_resume(dbos: Any) -> None:
    attempts.clear()
    t0 = time.monotonic()
    with SetWorkflowTimeout(1.0):
        handle = DBOS.start_workflow(async_step_workflow)
    with pytest.raises(DBOSWorkflowTimeoutError):
        handle.get_result()
    first_deadline = handle.get_status().workflow_deadline_epoch_ms
    assert first_deadline is not None
    assert time.monotonic() - t0 < 1.5
    engine = current_engine()
    wait_for(lambda: not engine.is_running_here(handle.workflow_id), 1)
    assert DBOS.list_workflow_steps(handle.workflow_id) == []  # the interrupted attempt recorded nothing
    resumed = DBOS.resume_workflow(handle.workflow_id)
    assert resumed.get_result() == "async-done"
    assert attempts == ["start", "start"]
    st = resumed.get_status()
    assert (
        st.workflow_deadline_epoch_ms or 0
    ) > first_deadline  # resume cleared it; the claim set a fresh one


# --- inheritance ----------------------------------------------------------------------------------------------


@DBOS.workflow()
def sleepy_child(seconds: float) -> str:
    DBOS.sleep(seconds)
    return "child-done"


@DBOS.workflow()
def parent_calls_child() -> str:
    return sleepy_child(10)


def test_called_child_inherits_deadline(dbos: Any) -> None:
    t0 = time.monotonic()
    with SetWorkflowID("inherit-parent"):
        with SetWorkflowTimeout(1.0):
            handle = DBOS.start_workflow(parent_calls_child)
    with pytest.raises(DBOSWorkflowTimeoutError):
        handle.get_result()
    assert time.monotonic() - t0 < 1.5
    parent = handle.get_status()
    child = DBOS.get_workflow_status("inherit-parent-1")
    assert child is not None
    assert child.workflow_deadline_epoch_ms == parent.workflow_deadline_epoch_ms
    assert child.workflow_timeout_ms is None
    wait_for(lambda: (DBOS.get_workflow_status("inherit-parent-1") or child).status == "CANCELLED", 1)
    with pytest.raises(DBOSWorkflowTimeoutError) as info:
        DBOS.retrieve_workflow("inherit-parent-1").get_result()
    assert "inherited from workflow inherit-parent" in str(info.value)


gate = threading.Event()


@pytest.fixture
def blocked_queue(dbos: Any) -> Any:
    """Declared per test: other modules' fixtures clear the process-wide queue registry."""
    from dbos._queues.queue import QUEUES

    return QUEUES.get("timeouts-blocked") or Queue("timeouts-blocked", concurrency=1)


@DBOS.workflow()
def blocker() -> str:
    gate.wait(10)
    return "unblocked"


@DBOS.workflow()
def quick_child() -> str:
    return "quick"


@DBOS.workflow()
def parent_enqueues_child() -> str:
    handle = DBOS.enqueue_workflow("timeouts-blocked", quick_child)
    return str(handle.get_result())


def test_enqueued_child_cancelled_at_parent_deadline(blocked_queue: Any) -> None:
    gate.clear()
    try:
        block = blocked_queue.enqueue(blocker)
        wait_for(lambda: block.get_status().status == "PENDING", 5)
        with SetWorkflowID("enq-parent"):
            with SetWorkflowTimeout(1.0):
                handle = DBOS.start_workflow(parent_enqueues_child)
        with pytest.raises(DBOSWorkflowTimeoutError):
            handle.get_result()
        child = DBOS.list_workflows(parent_workflow_id="enq-parent")
        assert len(child) == 1
        wait_for(lambda: DBOS.get_workflow_status(child[0].workflow_id).status == "CANCELLED", 2)  # type: ignore[union-attr]
        assert DBOS.get_workflow_status(child[0].workflow_id).dequeued_at is None  # type: ignore[union-attr]
    finally:
        gate.set()
    assert block.get_result() == "unblocked"


@DBOS.workflow()
def parent_clears_timeout() -> str:
    with SetWorkflowID("cleared-child"):
        with SetWorkflowTimeout(None):
            DBOS.start_workflow(sleepy_child, 1.5)
    DBOS.sleep(10)
    return "parent-done"


def test_timeout_none_inside_parent_frees_child(dbos: Any) -> None:
    with SetWorkflowTimeout(0.5):
        handle = DBOS.start_workflow(parent_clears_timeout)
    with pytest.raises(DBOSWorkflowTimeoutError):
        handle.get_result()
    assert DBOS.retrieve_workflow("cleared-child").get_result() == "child-done"
    st = DBOS.get_workflow_status("cleared-child")
    assert st is not None and st.status == "SUCCESS" and st.workflow_deadline_epoch_ms is None


def test_queued_timeout_starts_at_dequeue(blocked_queue: Any) -> None:
    gate.clear()
    try:
        block = blocked_queue.enqueue(blocker)
        wait_for(lambda: block.get_status().status == "PENDING", 5)
        with SetWorkflowTimeout(1.0):
            handle = blocked_queue.enqueue(sleepy_child, 0.1)
        time.sleep(1.5)  # longer than the timeout, spent waiting in the queue
        assert handle.get_status().status == "ENQUEUED"
    finally:
        gate.set()
    assert handle.get_result() == "child-done"
    st = handle.get_status()
    assert st.dequeued_at is not None
    assert st.workflow_deadline_epoch_ms == st.dequeued_at + 1000


# --- cancellation and resume ----------------------------------------------------------------------------------


def test_resumed_timeout_gets_fresh_deadline(blocked_queue: Any) -> None:
    with SetWorkflowTimeout(0.5):
        handle = blocked_queue.enqueue(sleepy_child, 0.8)
    with pytest.raises(DBOSWorkflowTimeoutError):
        handle.get_result()
    first = handle.get_status()
    # the recorded sleep replays: its remaining 0.3 s fits in the fresh 0.5 s deadline (02 §2 rule 10)
    assert DBOS.resume_workflow(handle.workflow_id).get_result() == "child-done"
    second = handle.get_status()
    assert second.workflow_deadline_epoch_ms is not None and first.workflow_deadline_epoch_ms is not None
    assert second.workflow_deadline_epoch_ms > first.workflow_deadline_epoch_ms


def test_cancel_wakes_sleep(dbos: Any) -> None:
    ran.clear()
    handle = DBOS.start_workflow(sleeps_60)
    wait_for(lambda: len(DBOS.list_workflow_steps(handle.workflow_id)) == 1, 5)
    t0 = time.monotonic()
    DBOS.cancel_workflow(handle.workflow_id)
    assert handle.get_status().status == "CANCELLED"
    engine = current_engine()
    wait_for(lambda: not engine.is_running_here(handle.workflow_id), 0.2)
    assert time.monotonic() - t0 < 0.3
    with pytest.raises(DBOSAwaitedWorkflowCancelledError) as info:
        handle.get_result()
    assert not isinstance(info.value, DBOSWorkflowTimeoutError)


def test_timeout_error_attributes(dbos: Any) -> None:
    with SetWorkflowTimeout(0.25):
        handle = DBOS.start_workflow(sleeps_60)
    with pytest.raises(DBOSWorkflowTimeoutError) as info:
        handle.get_result()
    err = info.value
    st = handle.get_status()
    assert err.workflow_id == handle.workflow_id
    assert err.timeout_seconds == 0.25
    assert err.deadline_epoch_ms == st.workflow_deadline_epoch_ms
    assert math.isclose(st.workflow_timeout_ms or 0, 250)
    assert not isinstance(err, DBOSWorkflowCancelledError)
