"""Workflows, steps, identity, children, handles and replay through the public API, on both backends."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from dbos import DBOS, SetWorkflowID, WorkflowStatusString
from dbos.error import (
    DBOSConflictingWorkflowError,
    DBOSException,
    DBOSMaxStepRetriesExceeded,
    DBOSNonExistentWorkflowError,
    DBOSSerializationError,
    DBOSUnexpectedStepError,
    DBOSValidationError,
)


def test_workflow_with_steps_records_checkpoints(dbos: type[DBOS]) -> None:
    calls: list[str] = []

    @DBOS.step()
    def add(a: int, b: int) -> int:
        calls.append("add")
        return a + b

    @DBOS.workflow()
    def wf(x: int) -> int:
        return add(x, 1) + add(x, 2)

    with SetWorkflowID("wf-steps-1"):
        assert wf(10) == 23
    status = DBOS.get_workflow_status("wf-steps-1")
    assert status is not None
    assert status.status == "SUCCESS"
    assert status.name == "test_workflow_with_steps_records_checkpoints.<locals>.wf"
    assert status.input == {"args": (10,), "kwargs": {}}
    assert status.output == 23
    assert status.completed_at is not None and status.completed_at >= status.created_at
    assert status.recovery_attempts == 1
    assert status.application_name == "test-app"
    assert calls == ["add", "add"]


def test_same_id_returns_recorded_result_without_running(dbos: type[DBOS]) -> None:
    runs: list[int] = []

    @DBOS.workflow()
    def wf(x: int) -> int:
        runs.append(x)
        return x * 2

    with SetWorkflowID("idem-1"):
        assert wf(1) == 2
    with SetWorkflowID("idem-1"):
        assert wf(5) == 2  # different arguments: the recorded result stands
    assert runs == [1]


def test_recorded_error_is_reraised_without_running(dbos: type[DBOS]) -> None:
    runs: list[int] = []

    @DBOS.workflow()
    def failing() -> None:
        runs.append(1)
        raise ValueError("boom")

    for _ in range(2):
        with SetWorkflowID("err-1"):
            with pytest.raises(ValueError, match="boom"):
                failing()
    assert runs == [1]
    status = DBOS.get_workflow_status("err-1")
    assert status is not None and status.status == "ERROR"
    assert isinstance(status.error, ValueError)


def test_conflicting_function_for_existing_id(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def first() -> str:
        return "first"

    @DBOS.workflow()
    def second() -> str:
        return "second"

    with SetWorkflowID("conflict-1"):
        first()
    with SetWorkflowID("conflict-1"):
        with pytest.raises(DBOSConflictingWorkflowError):
            second()
    status = DBOS.get_workflow_status("conflict-1")
    assert status is not None and status.output == "first"


def test_only_first_workflow_in_block_gets_the_id(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def wf() -> str:
        return DBOS.workflow_id or ""

    with SetWorkflowID("first-only"):
        a = wf()
        b = wf()
    assert a == "first-only"
    assert b and b != "first-only"


def test_concurrent_same_id_runs_body_once(dbos: type[DBOS]) -> None:
    runs: list[int] = []
    lock = threading.Lock()

    @DBOS.workflow()
    def wf() -> str:
        with lock:
            runs.append(1)
        time.sleep(0.2)
        return "done"

    results: list[Any] = []

    def call() -> None:
        with SetWorkflowID("race-1"):
            results.append(wf())

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["done"] * 8
    assert len(runs) == 1


def test_step_outcomes_replay_none_and_errors(dbos: type[DBOS]) -> None:
    counts = {"none": 0, "err": 0}

    @DBOS.step()
    def returns_none() -> None:
        counts["none"] += 1

    @DBOS.step()
    def raises() -> None:
        counts["err"] += 1
        raise ValueError("x")

    @DBOS.workflow()
    def wf() -> str:
        returns_none()
        try:
            raises()
        except ValueError as e:
            return str(e)
        return "no error"

    with SetWorkflowID("replay-1"):
        assert wf() == "x"
    handles = DBOS.recover_pending_workflows()
    assert handles == []
    assert counts == {"none": 1, "err": 1}


def test_retry_aware_step_attempts(dbos: type[DBOS]) -> None:
    seen: list[tuple[Any, Any]] = []

    @DBOS.step(retries_allowed=True, max_attempts=5, interval_seconds=0.01)
    def flaky() -> str:
        status = DBOS.step_status
        assert status is not None
        seen.append((status.current_attempt, status.max_attempts))
        if len(seen) < 3:
            raise RuntimeError("fail")
        return "ok"

    @DBOS.workflow()
    def wf() -> str:
        return flaky()

    assert wf() == "ok"
    assert seen == [(0, 5), (1, 5), (2, 5)]


def test_retries_exhausted_and_should_retry(dbos: type[DBOS]) -> None:
    attempts: list[int] = []

    @DBOS.step(retries_allowed=True, max_attempts=3, interval_seconds=0.01)
    def always_fails() -> None:
        attempts.append(1)
        raise RuntimeError("nope")

    @DBOS.step(retries_allowed=True, max_attempts=3, interval_seconds=0.01, should_retry=lambda e: False)
    def no_retry() -> None:
        attempts.append(2)
        raise KeyError("k")

    @DBOS.workflow()
    def wf1() -> None:
        always_fails()

    @DBOS.workflow()
    def wf2() -> None:
        no_retry()

    with pytest.raises(DBOSMaxStepRetriesExceeded) as info:
        wf1()
    assert len(info.value.errors) == 3
    with pytest.raises(KeyError):
        wf2()
    assert attempts == [1, 1, 1, 2]


def test_step_status_outside_and_in_plain_step(dbos: type[DBOS]) -> None:
    observed: dict[str, Any] = {}

    @DBOS.step()
    def s() -> None:
        observed["in_step"] = DBOS.step_status

    @DBOS.workflow()
    def wf() -> None:
        observed["in_wf"] = DBOS.step_status
        s()

    wf()
    assert observed["in_wf"] is None
    assert observed["in_step"].step_id == 1
    assert observed["in_step"].current_attempt is None
    assert DBOS.step_status is None


def test_step_outside_workflow_is_plain_call(dbos: type[DBOS]) -> None:
    @DBOS.step()
    def s(x: int) -> int:
        return x + 1

    assert s(1) == 2


def test_children_ids_and_result_steps(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def child(x: int) -> int:
        return x * 10

    @DBOS.workflow()
    def parent() -> int:
        return child(1) + child(2)

    with SetWorkflowID("parent-1"):
        assert parent() == 30
    c1 = DBOS.get_workflow_status("parent-1-1")
    c2 = DBOS.get_workflow_status("parent-1-3")
    assert c1 is not None and c1.parent_workflow_id == "parent-1" and c1.output == 10
    assert c2 is not None and c2.output == 20


def test_child_with_custom_id_and_failure_caught(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def bad_child() -> None:
        raise ValueError("child failed")

    @DBOS.workflow()
    def parent() -> str:
        with SetWorkflowID("custom-child"):
            try:
                bad_child()
            except ValueError as e:
                return f"caught {e}"
        return "not caught"

    assert parent() == "caught child failed"
    st = DBOS.get_workflow_status("custom-child")
    assert st is not None and st.status == "ERROR" and st.parent_workflow_id is not None


def test_start_workflow_and_retrieve(dbos: type[DBOS]) -> None:
    gate = threading.Event()

    @DBOS.workflow()
    def background_job(job_id: str) -> str:
        DBOS.sleep(0.05)
        gate.wait(5)
        return f"done {job_id}"

    with SetWorkflowID("job-123"):
        handle = DBOS.start_workflow(background_job, "job-123")
    assert handle.workflow_id == "job-123"
    assert DBOS.retrieve_workflow("job-123").get_status().status == WorkflowStatusString.PENDING.value
    gate.set()
    assert handle.get_result() == "done job-123"
    assert DBOS.retrieve_workflow("job-123").get_status().status == "SUCCESS"


def test_retrieve_unknown(dbos: type[DBOS]) -> None:
    with pytest.raises(DBOSNonExistentWorkflowError):
        DBOS.retrieve_workflow("nope")
    assert DBOS.get_workflow_status("nope") is None


def test_retrieve_before_creation_waits(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def wf() -> int:
        return 7

    handle = DBOS.retrieve_workflow("later-1", existing_workflow=False)
    results: list[int] = []
    t = threading.Thread(target=lambda: results.append(handle.get_result(polling_interval_sec=0.05)))
    t.start()
    time.sleep(0.1)
    with SetWorkflowID("later-1"):
        wf()
    t.join(5)
    assert results == [7]


def test_start_step_as_temp_workflow(dbos: type[DBOS]) -> None:
    @DBOS.step()
    def some_step(x: int) -> int:
        return x + 100

    handle = DBOS.start_workflow(some_step, 1)
    assert handle.get_result() == 101
    status = handle.get_status()
    assert status.name.startswith("<temp>.") and status.name.endswith("some_step")


def test_unserializable_argument_fails_at_start(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def wf(f: Any) -> None:
        pass

    with SetWorkflowID("bad-arg"):
        with pytest.raises(DBOSSerializationError, match="0"):
            DBOS.start_workflow(wf, lambda: 1)
    assert DBOS.get_workflow_status("bad-arg") is None


def test_unserializable_step_output_is_recorded_error(dbos: type[DBOS]) -> None:
    @DBOS.step()
    def lam() -> Any:
        return lambda: 1

    @DBOS.workflow()
    def wf() -> str:
        try:
            lam()
        except DBOSSerializationError:
            return "serialization error"
        return "no error"

    assert wf() == "serialization error"


@pytest.mark.parametrize("bad", ["", "   ", "a\x00b", "\ud800", "x" * 1025, "\U0001f600" * 257])
def test_invalid_workflow_ids_rejected(dbos: type[DBOS], bad: str) -> None:
    with pytest.raises(DBOSValidationError):
        SetWorkflowID(bad)


@pytest.mark.parametrize("good", ["a\nb", "x" * 1024, "\U0001f600" * 256, "'; DROP TABLE x; --", "%_\\"])
def test_unusual_workflow_ids_round_trip(dbos: type[DBOS], good: str) -> None:
    @DBOS.workflow()
    def wf() -> str:
        return DBOS.workflow_id or ""

    with SetWorkflowID(good):
        assert wf() == good
    status = DBOS.get_workflow_status(good)
    assert status is not None and status.workflow_id == good


def test_sleep_validation(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def wf(s: Any) -> None:
        DBOS.sleep(s)

    for bad in (float("nan"), float("inf"), True, "1"):
        with pytest.raises(DBOSValidationError):
            wf(bad)
    with pytest.raises(DBOSException):
        DBOS.sleep(1)


def test_sleep_zero_takes_no_step(dbos: type[DBOS]) -> None:
    @DBOS.step()
    def s() -> int:
        return DBOS.step_id or -1

    @DBOS.workflow()
    def wf() -> int:
        DBOS.sleep(0)
        return s()

    assert wf() == 1


def test_determinism_check(dbos: type[DBOS]) -> None:
    """Replaying a workflow whose code now calls a different step ends in DBOSUnexpectedStepError."""
    from dbos._context import ContextState, pop, push  # noqa: F401

    mode = {"v": "a"}

    @DBOS.step()
    def step_a() -> str:
        return "a"

    @DBOS.step()
    def step_b() -> str:
        return "b"

    gate = threading.Event()

    @DBOS.workflow()
    def wf() -> str:
        r = step_a() if mode["v"] == "a" else step_b()
        gate.wait(5)
        DBOS.sleep(0.01)
        return r

    with SetWorkflowID("det-1"):
        DBOS.start_workflow(wf)
    time.sleep(0.3)
    mode["v"] = "b"
    DBOS.recover_pending_workflows()
    gate.set()
    with pytest.raises(DBOSUnexpectedStepError) as info:
        DBOS.retrieve_workflow("det-1").get_result()
    msg = str(info.value)
    assert "step_a" in msg and "step_b" in msg and "1" in msg


def test_sync_api_on_running_loop_raises(dbos: type[DBOS]) -> None:
    import asyncio

    @DBOS.workflow()
    def wf() -> int:
        return 1

    async def main() -> None:
        with pytest.raises(RuntimeError, match="sleep_async"):
            DBOS.sleep(1)
        handle = DBOS.start_workflow(wf)
        with pytest.raises(RuntimeError):
            handle.get_result()

    asyncio.run(main())
