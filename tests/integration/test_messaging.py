"""Messages and events through the public API, on both backends (04 §2-§7)."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from typing import Any

import pytest

from conftest import wait_for
from dbos import DBOS, SetWorkflowID, SetWorkflowTimeout
from dbos._dbos import current_engine
from dbos.error import (
    DBOSAwaitedWorkflowCancelledError,
    DBOSException,
    DBOSNonExistentWorkflowError,
    DBOSPayloadTooLargeError,
    DBOSSerializationError,
    DBOSValidationError,
    DBOSWorkflowTimeoutError,
)

attempts: dict[str, int] = {}


@DBOS.workflow()
def receiver(n: int, topic: str | None = None, timeout: float = 10) -> list[Any]:
    return [DBOS.recv(topic, timeout_seconds=timeout) for _ in range(n)]


@DBOS.workflow()
def sender(dest: str, n: int, topic: str | None = None) -> None:
    for i in range(n):
        DBOS.send(dest, i, topic)


@DBOS.workflow()
def recv_once(timeout: float) -> Any:
    return DBOS.recv(timeout_seconds=timeout)


def test_send_and_recv_in_order(dbos: Any) -> None:
    with SetWorkflowID("rcv-1"):
        handle = DBOS.start_workflow(receiver, 100, "t")
    with SetWorkflowID("snd-1"):
        sender("rcv-1", 100, "t")
    assert handle.get_result() == list(range(100))
    names = [s["function_name"] for s in DBOS.list_workflow_steps("snd-1")]
    assert names == ["DBOS.send"] * 100
    steps = DBOS.list_workflow_steps("rcv-1")
    assert [s["function_name"] for s in steps[:2]] == ["DBOS.recv", "DBOS.sleep"]


def test_topics_are_separate(dbos: Any) -> None:
    with SetWorkflowID("rcv-topics"):
        h = DBOS.start_workflow(receiver, 1, "y", 0.3)
    DBOS.send("rcv-topics", "on-x", "x")
    DBOS.send("rcv-topics", "on-empty", "")
    assert h.get_result() == [None]
    with SetWorkflowID("rcv-none"):
        h2 = DBOS.start_workflow(receiver, 1, None, 0.3)
    DBOS.send("rcv-none", "on-empty", "")
    assert h2.get_result() == [None]  # None and "" are different topics


def test_send_to_unknown_workflow(dbos: Any) -> None:
    with pytest.raises(DBOSNonExistentWorkflowError):
        DBOS.send("does-not-exist", "hello")


def test_idempotent_send(dbos: Any) -> None:
    with SetWorkflowID("rcv-idem"):
        h = DBOS.start_workflow(receiver, 2, None, 0.5)
    for _ in range(3):
        DBOS.send("rcv-idem", "once", idempotency_key="k-1")
    assert h.get_result() == ["once", None]


@DBOS.step(retries_allowed=True, max_attempts=3, interval_seconds=0.01)
def flaky_sender(dest: str) -> None:
    attempts["flaky"] = attempts.get("flaky", 0) + 1
    DBOS.send(dest, "from-step")
    if attempts["flaky"] < 3:
        raise RuntimeError("try again")


@DBOS.workflow()
def sends_from_step(dest: str) -> None:
    flaky_sender(dest)


def test_step_send_with_retries_delivers_once(dbos: Any) -> None:
    attempts.clear()
    with SetWorkflowID("rcv-step"):
        h = DBOS.start_workflow(receiver, 2, None, 0.5)
    sends_from_step("rcv-step")
    assert attempts["flaky"] == 3
    assert h.get_result() == ["from-step", None]


def test_recv_timeouts(dbos: Any) -> None:
    t0 = time.monotonic()
    assert recv_once(0.5) is None
    elapsed = time.monotonic() - t0
    assert 0.5 <= elapsed < 0.8, elapsed
    t0 = time.monotonic()
    assert recv_once(0) is None
    assert time.monotonic() - t0 < 0.2
    with SetWorkflowID("rcv-zero"):
        h = DBOS.start_workflow(receiver, 1, "later", 0)
    assert h.get_result() == [None]


@DBOS.workflow()
def parked_receiver() -> Any:
    return DBOS.recv("wake", timeout_seconds=60)


def test_cancel_recv_then_resume_receives(dbos: Any) -> None:
    h = DBOS.start_workflow(parked_receiver)
    wait_for(lambda: len(DBOS.list_workflow_steps(h.workflow_id)) >= 1, 5)  # the deadline is recorded
    t0 = time.monotonic()
    DBOS.cancel_workflow(h.workflow_id)
    engine = current_engine()
    wait_for(lambda: not engine.is_running_here(h.workflow_id), 0.3)
    assert time.monotonic() - t0 < 0.3
    with pytest.raises(DBOSAwaitedWorkflowCancelledError):
        h.get_result()
    DBOS.send(h.workflow_id, "after-cancel", "wake")
    assert DBOS.resume_workflow(h.workflow_id).get_result() == "after-cancel"


def test_timeout_wakes_recv(dbos: Any) -> None:
    t0 = time.monotonic()
    with SetWorkflowTimeout(0.5):
        h = DBOS.start_workflow(parked_receiver)
    with pytest.raises(DBOSWorkflowTimeoutError):
        h.get_result()
    assert time.monotonic() - t0 < 0.8


@DBOS.step()
def recv_in_step() -> Any:
    return DBOS.recv()


@DBOS.workflow()
def bad_recv_workflow() -> Any:
    return recv_in_step()


@DBOS.workflow()
async def two_concurrent_recvs() -> Any:
    first = asyncio.ensure_future(DBOS.recv_async("same", timeout_seconds=1))
    await asyncio.sleep(0.05)
    try:
        await DBOS.recv_async("same", timeout_seconds=1)
    except DBOSException as e:
        await first
        return f"refused: {e}"
    return "no error"


def test_recv_misuse(dbos: Any) -> None:
    with pytest.raises(DBOSException):
        DBOS.recv()
    with pytest.raises(DBOSException):
        bad_recv_workflow()
    assert str(asyncio.run(_run_async(two_concurrent_recvs))).startswith("refused")


async def _run_async(func: Any) -> Any:
    return await func()


# --- events ---------------------------------------------------------------------------------------------------


progress_gate = threading.Event()


@DBOS.workflow()
def reports_progress() -> None:
    for i in (1, 2, 3):
        DBOS.set_event("progress", i)
        DBOS.sleep(0.05)


@DBOS.step()
def set_in_step() -> None:
    DBOS.set_event("from-step", "yes")


@DBOS.workflow()
def sets_abc() -> None:
    DBOS.set_event("a", 1)
    DBOS.set_event("b", 2)
    DBOS.set_event("a", 3)
    set_in_step()


def test_events_progress_and_all_events(dbos: Any) -> None:
    h = DBOS.start_workflow(reports_progress)
    seen = []
    while True:
        v = DBOS.get_event(h.workflow_id, "progress", timeout_seconds=0)
        if v is not None:
            seen.append(v)
        if v == 3:
            break
        time.sleep(0.005)
    assert seen == sorted(seen) and seen[-1] == 3
    h.get_result()
    with SetWorkflowID("abc"):
        sets_abc()
    assert DBOS.get_all_events("abc") == {"a": 3, "b": 2, "from-step": "yes"}
    assert DBOS.get_all_events("nobody") == {}
    assert [s["function_name"] for s in DBOS.list_workflow_steps("abc")][:3] == ["DBOS.setEvent"] * 3


@DBOS.workflow()
def sets_later(delay: float) -> None:
    DBOS.sleep(delay)
    DBOS.set_event("ready", "now")


def test_get_event_waits_for_the_value(dbos: Any) -> None:
    with SetWorkflowID("later-1"):
        DBOS.start_workflow(sets_later, 0.2)
    t0 = time.monotonic()
    assert DBOS.get_event("later-1", "ready", timeout_seconds=5) == "now"
    assert time.monotonic() - t0 < 1.0
    with SetWorkflowID("done-no-key"):
        quick_done()
    t0 = time.monotonic()
    assert DBOS.get_event("done-no-key", "never", timeout_seconds=60) is None
    assert time.monotonic() - t0 < 0.1
    t0 = time.monotonic()
    assert DBOS.get_event("not-yet-created", "k", timeout_seconds=0.3) is None
    assert 0.3 <= time.monotonic() - t0 < 0.6


@DBOS.workflow()
def quick_done() -> str:
    return "done"


@DBOS.workflow()
def reads_event(target: str) -> Any:
    return DBOS.get_event(target, "ready", timeout_seconds=5)


def test_get_event_inside_workflow_is_recorded(dbos: Any) -> None:
    with SetWorkflowID("later-2"):
        DBOS.start_workflow(sets_later, 0.01).get_result()
    with SetWorkflowID("reader-1"):
        assert reads_event("later-2") == "now"
    names = [s["function_name"] for s in DBOS.list_workflow_steps("reader-1")]
    assert names == ["DBOS.getEvent", "DBOS.sleep"]
    fork = DBOS.fork_workflow("reader-1", 3)  # both steps copied: replays the recorded value
    assert fork.get_result() == "now"


def test_set_event_outside_a_workflow(dbos: Any) -> None:
    with pytest.raises(DBOSException):
        DBOS.set_event("k", 1)


# --- bad input ------------------------------------------------------------------------------------------------


def test_bad_input_writes_nothing(dbos: Any, dbos_config: dict[str, Any]) -> None:
    with SetWorkflowID("rcv-bad"):
        h = DBOS.start_workflow(receiver, 1, None, 0.5)
    for topic in ("a\x00b", "x" * 1025):
        with pytest.raises(DBOSValidationError):
            DBOS.send("rcv-bad", "m", topic)
    with pytest.raises(DBOSSerializationError):
        DBOS.send("rcv-bad", lambda: None)
    with pytest.raises(DBOSPayloadTooLargeError):
        DBOS.send("rcv-bad", "x" * (dbos_config.get("max_payload_bytes", 67_108_864) + 1))
    for bad in (-1, float("nan"), True, "1"):
        with pytest.raises(DBOSValidationError):
            DBOS.get_event("rcv-bad", "k", timeout_seconds=bad)
    with pytest.raises(DBOSValidationError):
        DBOS.get_event("rcv-bad", "k\x00")
    assert h.get_result() == [None]


# --- latency (the loose test bounds of 04 §1.5; the targets are measured by make bench) -------------------------


@DBOS.workflow()
def ponger(rounds: int) -> None:
    for _ in range(rounds):
        v = DBOS.recv("ping", timeout_seconds=10)
        DBOS.set_event(f"pong-{v}", v)


def test_round_trip_latency(dbos: Any) -> None:
    rounds = 30
    with SetWorkflowID("ponger"):
        h = DBOS.start_workflow(ponger, rounds)
    samples = []
    for i in range(rounds):
        t0 = time.perf_counter()
        DBOS.send("ponger", i, "ping")
        assert DBOS.get_event("ponger", f"pong-{i}", timeout_seconds=10) == i
        samples.append(time.perf_counter() - t0)
    h.get_result()
    assert statistics.median(samples) < 0.05, statistics.median(samples)


@DBOS.workflow()
def drains_two_topics(n: int) -> tuple[list[Any], list[Any]]:
    a = [DBOS.recv("a", timeout_seconds=30) for _ in range(n)]
    b = [DBOS.recv("b", timeout_seconds=30) for _ in range(n)]
    return a, b


def test_ten_thousand_messages_in_order_on_two_topics(dbos: Any) -> None:
    half = 5000
    with SetWorkflowID("bulk-rcv"):
        h = DBOS.start_workflow(drains_two_topics, half)
    for i in range(half):
        DBOS.send("bulk-rcv", i, "a")
        DBOS.send("bulk-rcv", -i, "b")
    a, b = h.get_result()
    assert a == list(range(half))
    assert b == [-i for i in range(half)]


@DBOS.workflow()
def bulk_sender(dests: list[str]) -> None:
    from dbos import SendMessage

    DBOS.send_bulk([SendMessage(d, i, "bulk") for i in range(100) for d in dests])


def test_send_bulk(dbos: Any) -> None:
    from dbos import SendMessage

    dests = [f"bulk-{i}" for i in range(5)]
    handles = []
    for d in dests:
        with SetWorkflowID(d):
            handles.append(DBOS.start_workflow(receiver, 100, "bulk"))
    with SetWorkflowID("bulk-sender"):
        bulk_sender(dests)
    for h in handles:
        assert h.get_result() == list(range(100))
    assert [s["function_name"] for s in DBOS.list_workflow_steps("bulk-sender")] == ["DBOS.send_bulk"]
    DBOS.fork_workflow("bulk-sender", 2).get_result()  # the replayed send_bulk sends nothing again
    with SetWorkflowID("bulk-check"):
        h = DBOS.start_workflow(receiver, 1, "bulk", 0.3)
    with pytest.raises(DBOSNonExistentWorkflowError):
        DBOS.send_bulk([SendMessage("bulk-check", "x", "bulk"), SendMessage("missing-dest", "y")])
    assert h.get_result() == [None]  # nothing of the failed batch was delivered
    with pytest.raises(DBOSValidationError):
        DBOS.send_bulk(["not a SendMessage"])
    with pytest.raises(DBOSException):
        DBOS.send_bulk(
            [
                SendMessage("bulk-check", 1, idempotency_key="k"),
                SendMessage("bulk-check", 2, idempotency_key="k"),
            ]
        )


@DBOS.workflow()
def parked_on_event() -> Any:
    return DBOS.get_event("never-set-anywhere", "k", timeout_seconds=60)


def test_cancel_wakes_get_event(dbos: Any) -> None:
    h = DBOS.start_workflow(parked_on_event)
    wait_for(lambda: len(DBOS.list_workflow_steps(h.workflow_id)) >= 1, 5)
    t0 = time.monotonic()
    DBOS.cancel_workflow(h.workflow_id)
    wait_for(lambda: not current_engine().is_running_here(h.workflow_id), 0.3)
    assert time.monotonic() - t0 < 0.3
    assert (
        DBOS.list_workflow_steps(h.workflow_id)[0]["function_name"] == "DBOS.sleep"
    )  # getEvent not recorded


@DBOS.workflow()
def events_at_steps() -> str:
    DBOS.set_event("early", "e1")  # step 1
    v = DBOS.recv("m", timeout_seconds=0.1)  # steps 2-3
    DBOS.set_event("late", "l1")  # step 4
    return str(v)


def test_fork_copies_events_before_start_step_but_not_messages(dbos: Any) -> None:
    with SetWorkflowID("ev-src"):
        DBOS.start_workflow(events_at_steps).get_result()
    DBOS.send("ev-src", "for-the-original", "m")
    gate_fork = DBOS.fork_workflow("ev-src", 2, application_version="not-running-here")  # stays ENQUEUED
    assert DBOS.get_event(gate_fork.workflow_id, "early", timeout_seconds=0) == "e1"
    assert DBOS.get_event(gate_fork.workflow_id, "late", timeout_seconds=0) is None
    fork = DBOS.fork_workflow("ev-src", 2)
    assert fork.get_result() == "None"  # the message sent to the original is not the fork's
    assert DBOS.get_event(fork.workflow_id, "late", timeout_seconds=1) == "l1"
    DBOS.cancel_workflow(gate_fork.workflow_id)
