"""Queues through the public API, on both backends (03)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from conftest import Overlap, wait_for
from dbos import DBOS, Queue, SetEnqueueOptions, SetWorkflowID, SetWorkflowTimeout
from dbos.error import DBOSException, DBOSQueueDeduplicatedError, DBOSValidationError


@pytest.fixture
def fresh_queues(dbos: type[DBOS]) -> Any:
    from dbos._queues.queue import QUEUES

    QUEUES.clear()
    yield dbos
    QUEUES.clear()


# --- declaration and validation -------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3"])
@pytest.mark.parametrize(
    "field", ["concurrency", "worker_concurrency", "global_concurrency", "partition_concurrency"]
)
def test_bad_concurrency_values(fresh_queues: Any, field: str, bad: Any) -> None:
    with pytest.raises(ValueError):
        Queue("q-bad", **{field: bad})
    Queue("q-bad")  # nothing was registered by the failed declaration


@pytest.mark.parametrize(
    "limiter",
    [
        {},
        {"limit": 0, "period": 1},
        {"limit": 1, "period": 0},
        {"limit": 1, "period": float("nan")},
        {"limit": 1, "period": 1, "x": 2},
    ],
)
def test_bad_limiters(fresh_queues: Any, limiter: Any) -> None:
    with pytest.raises(DBOSValidationError):
        Queue("q-lim", limiter=limiter)


@pytest.mark.parametrize("name", ["", "  ", "a\x00b", "x" * 1025, "_dbos_x"])
def test_bad_queue_names(fresh_queues: Any, name: str) -> None:
    with pytest.raises(DBOSValidationError):
        Queue(name)


def test_cross_field_rules_and_duplicates(fresh_queues: Any) -> None:
    with pytest.raises(DBOSValidationError, match="partition_worker_concurrency"):
        Queue("x1", partition_worker_concurrency=2)
    with pytest.raises(DBOSValidationError, match="worker_concurrency"):
        Queue("x2", concurrency=2, worker_concurrency=3)
    with pytest.raises(DBOSValidationError):
        Queue("x3", partition_queue=True, global_concurrency=3)
    q = Queue("x4", partition_queue=True)
    assert q.partition_concurrency == 1 and q.partition_queue
    with pytest.raises(DBOSException, match="already been declared"):
        Queue("x4")


@pytest.mark.parametrize("bad", [0, -5, 2_147_483_648, 1.0, True, "5"])
def test_priority_validation(bad: Any) -> None:
    with pytest.raises(ValueError):
        SetEnqueueOptions(priority=bad)
    SetEnqueueOptions(priority=1)
    SetEnqueueOptions(priority=2_147_483_647)


# --- the seed examples ------------------------------------------------------------------------------------------


def test_seed_priority_queue(fresh_queues: Any) -> None:
    from dbos import DBOS, Queue, SetEnqueueOptions

    priority_queue = Queue("tasks", priority_enabled=True)

    @DBOS.workflow()
    def process_task(task_id: str) -> None:
        # Task processing logic
        pass

    # High priority task
    with SetEnqueueOptions(priority=100):
        urgent_handle = priority_queue.enqueue(process_task, "urgent-task")
    # Normal priority task
    with SetEnqueueOptions(priority=10):
        normal_handle = priority_queue.enqueue(process_task, "normal-task")
    # Low priority task
    with SetEnqueueOptions(priority=1):
        low_handle = priority_queue.enqueue(process_task, "low-task")
    # urgent-task executes before normal-task, which executes before low-task

    for h in (urgent_handle, normal_handle, low_handle):
        assert h.get_result() is None
    assert urgent_handle.get_status().priority == 100


def test_priority_order_behind_a_blocker(fresh_queues: Any) -> None:
    q = Queue("prio1", concurrency=1, priority_enabled=True)
    gate = threading.Event()
    order: list[str] = []

    @DBOS.workflow()
    def blocker() -> None:
        gate.wait(10)

    @DBOS.workflow()
    def task(label: str) -> None:
        order.append(label)

    first = q.enqueue(blocker)
    wait_for(lambda: first.get_status().status == "PENDING")
    for p in (1, 10, 100):
        with SetEnqueueOptions(priority=p):
            q.enqueue(task, f"p{p}")
    with SetEnqueueOptions(priority=5):
        q.enqueue(task, "five-a")
        q.enqueue(task, "five-b")
    last = q.enqueue(task, "none")
    gate.set()
    last.get_result()
    assert order == ["p100", "p10", "five-a", "five-b", "p1", "none"]


def test_seed_deduplication(fresh_queues: Any) -> None:
    from dbos import DBOS, Queue, SetEnqueueOptions

    runs: list[str] = []
    queue = Queue("processing")

    @DBOS.workflow()
    def process_order(order_id: str) -> str:
        runs.append(order_id)
        return f"Processed {order_id}"

    order_id = "order-123"
    dedup_key = f"process-{order_id}"
    # First enqueue
    with SetEnqueueOptions(deduplication_id=dedup_key):
        handle1 = queue.enqueue(process_order, order_id)
    # Second enqueue with same dedup key - returns existing workflow
    with SetEnqueueOptions(deduplication_id=dedup_key):
        handle2 = queue.enqueue(process_order, order_id)
    assert handle1.workflow_id == handle2.workflow_id

    assert handle1.get_result() == "Processed order-123"
    # after completion the binding still holds
    with SetEnqueueOptions(deduplication_id=dedup_key):
        handle3 = queue.enqueue(process_order, order_id)
    assert handle3.workflow_id == handle1.workflow_id
    assert runs == ["order-123"]
    with SetEnqueueOptions(deduplication_id=dedup_key, duplication_policy="reject"):
        with pytest.raises(DBOSQueueDeduplicatedError) as info:
            queue.enqueue(process_order, order_id)
    assert info.value.existing_workflow_id == handle1.workflow_id


def test_dedup_returns_holder_not_requested_id(fresh_queues: Any) -> None:
    q = Queue("dedup2")

    @DBOS.workflow()
    def wf() -> str:
        return DBOS.workflow_id or ""

    with SetWorkflowID("y"):
        with SetEnqueueOptions(deduplication_id="D"):
            hy = q.enqueue(wf)
    with SetWorkflowID("x"):
        with SetEnqueueOptions(deduplication_id="D"):
            hx = q.enqueue(wf)
    assert hx.workflow_id == "y" == hy.workflow_id
    assert DBOS.get_workflow_status("x") is None


def test_dedup_race_threads(fresh_queues: Any) -> None:
    q = Queue("dedup-race")
    runs: list[int] = []

    @DBOS.workflow()
    def wf() -> int:
        runs.append(1)
        return 1

    ids: list[str] = []

    def go() -> None:
        with SetEnqueueOptions(deduplication_id="race"):
            ids.append(q.enqueue(wf).workflow_id)

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 1 and len(ids) == 8
    DBOS.retrieve_workflow(ids[0]).get_result()
    assert runs == [1]


def test_seed_partitioned_queue(fresh_queues: Any) -> None:
    from dbos import DBOS, Queue, SetEnqueueOptions

    seen: dict[str, list[int]] = {"user-123": [], "user-456": []}
    spans: list[tuple[str, float, float]] = []
    lock = threading.Lock()

    partitioned_queue = Queue("user_updates", partition_queue=True)

    @DBOS.workflow()
    def update_user(user_id: str, data: dict) -> None:
        # Update user data
        start = time.monotonic()
        time.sleep(0.05)
        with lock:
            seen[user_id].append(data["update"])
            spans.append((user_id, start, time.monotonic()))

    handles = []
    # All updates for user-123 execute in order
    for i in range(5):
        with SetEnqueueOptions(queue_partition_key="user-123"):
            handles.append(partitioned_queue.enqueue(update_user, "user-123", {"update": i}))
    # Updates for user-456 can run in parallel with user-123
    for i in range(5):
        with SetEnqueueOptions(queue_partition_key="user-456"):
            handles.append(partitioned_queue.enqueue(update_user, "user-456", {"update": i}))

    for h in handles:
        h.get_result()
    assert seen == {"user-123": [0, 1, 2, 3, 4], "user-456": [0, 1, 2, 3, 4]}
    for user in seen:
        mine = sorted((s, e) for u, s, e in spans if u == user)
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(mine, mine[1:], strict=False))
    a = [(s, e) for u, s, e in spans if u == "user-123"]
    b = [(s, e) for u, s, e in spans if u == "user-456"]
    assert any(s1 < e2 and s2 < e1 for s1, e1 in a for s2, e2 in b)  # the two users overlapped


def test_seed_combined_context_managers(fresh_queues: Any) -> None:
    from dbos import DBOS, DBOSContextSetAuth, Queue, SetEnqueueOptions, SetWorkflowID, SetWorkflowTimeout

    queue = Queue("tasks", priority_enabled=True, partition_queue=True)

    @DBOS.workflow()
    def complex_task(task_id: str) -> str:
        return f"Completed {task_id}"

    # Combine multiple context managers
    with DBOSContextSetAuth("[email protected]", ["admin"]):
        with SetWorkflowTimeout(300.0):  # 5 minute timeout
            with SetWorkflowID("unique-task-123"):
                with SetEnqueueOptions(
                    priority=100, queue_partition_key="admin-tasks", deduplication_id="task-dedup-123"
                ):
                    handle = queue.enqueue(complex_task, "task-123")
    result = handle.get_result()

    assert result == "Completed task-123"
    st = handle.get_status()
    assert st.workflow_id == "unique-task-123"
    assert st.queue_name == "tasks" and st.priority == 100
    assert st.queue_partition_key == "admin-tasks" and st.deduplication_id == "task-dedup-123"
    assert st.authenticated_user == "[email protected]" and st.authenticated_roles == ["admin"]
    assert st.workflow_timeout_ms == 300_000
    assert st.dequeued_at is not None and st.workflow_deadline_epoch_ms is not None
    assert abs(st.workflow_deadline_epoch_ms - (st.dequeued_at + 300_000)) <= 50


# --- limits ---------------------------------------------------------------------------------------------------


def test_global_concurrency_is_never_exceeded(fresh_queues: Any) -> None:
    q = Queue("conc2", concurrency=2)
    overlap = Overlap()

    @DBOS.workflow()
    def work() -> None:
        with overlap:
            time.sleep(0.03)

    handles = [q.enqueue(work) for _ in range(12)]
    for h in handles:
        h.get_result()
    assert overlap.peak == 2


def test_worker_concurrency(fresh_queues: Any) -> None:
    q = Queue("wconc", worker_concurrency=1)
    overlap = Overlap()

    @DBOS.workflow()
    def work() -> None:
        with overlap:
            time.sleep(0.02)

    for h in [q.enqueue(work) for _ in range(6)]:
        h.get_result()
    assert overlap.peak == 1


def test_rate_limiter(fresh_queues: Any) -> None:
    q = Queue("rated", limiter={"limit": 2, "period": 0.5})

    @DBOS.workflow()
    def work() -> None:
        pass

    start = time.monotonic()
    handles = [q.enqueue(work) for _ in range(6)]
    for h in handles:
        h.get_result()
    elapsed = time.monotonic() - start
    assert 0.9 <= elapsed < 3.0  # 6 claims at 2 per 0.5 s need at least two full windows
    dequeued = sorted(h.get_status().dequeued_at or 0 for h in handles)
    for i in range(len(dequeued) - 2):
        assert dequeued[i + 2] - dequeued[i] >= 500 - 5  # no window of 0.5 s holds 3 claims


def test_delayed_enqueue(fresh_queues: Any) -> None:
    q = Queue("delayed")
    started: list[float] = []

    @DBOS.workflow()
    def work() -> None:
        started.append(time.monotonic())

    t0 = time.monotonic()
    with SetEnqueueOptions(delay_seconds=1):
        h = q.enqueue(work)
    assert h.get_status().status == "DELAYED"
    h.get_result()
    assert 0.95 <= started[0] - t0 < 1.6


def test_queue_option_mismatches(fresh_queues: Any) -> None:
    plain = Queue("plain")
    parted = Queue("parted", partition_queue=True)

    @DBOS.workflow()
    def wf() -> None:
        pass

    with SetEnqueueOptions(priority=3):
        with pytest.raises(DBOSException, match="priority"):
            plain.enqueue(wf)
    with pytest.raises(DBOSException, match="partition"):
        parted.enqueue(wf)
    with SetEnqueueOptions(queue_partition_key="k"):
        with pytest.raises(DBOSException, match="partition"):
            plain.enqueue(wf)
    with SetEnqueueOptions(priority=1):
        with pytest.raises(DBOSException, match="SetEnqueueOptions"):
            DBOS.start_workflow(wf)


def test_nested_enqueue_options(fresh_queues: Any) -> None:
    q = Queue("nested", priority_enabled=True)

    @DBOS.workflow()
    def wf() -> None:
        pass

    with SetEnqueueOptions(priority=3, deduplication_id="outer"):
        with SetEnqueueOptions(priority=9):
            h = q.enqueue(wf)
        h2 = q.enqueue(wf)
    st = h.get_status()
    assert st.priority == 9 and st.deduplication_id == "outer"
    assert h2.workflow_id == h.workflow_id


def test_enqueue_inside_workflow_is_a_checkpointed_child(fresh_queues: Any) -> None:
    q = Queue("children")

    @DBOS.workflow()
    def child(i: int) -> int:
        return i * 2

    @DBOS.workflow()
    def parent() -> list[int]:
        handles = [q.enqueue(child, i) for i in range(3)]
        return [h.get_result() for h in handles]

    with SetWorkflowID("qparent"):
        assert parent() == [0, 2, 4]
    for n in (1, 2, 3):
        st = DBOS.get_workflow_status(f"qparent-{n}")
        assert st is not None and st.parent_workflow_id == "qparent" and st.queue_name == "children"


def test_enqueue_async_and_sync_on_loop(fresh_queues: Any) -> None:
    q = Queue("asyncq")

    @DBOS.workflow()
    async def wf(x: int) -> int:
        return x + 1

    async def main() -> None:
        h = await q.enqueue_async(wf, 1)
        assert await h.get_result() == 2
        h2 = q.enqueue(wf, 5)  # allowed on a running loop
        assert h2.workflow_id

    asyncio.run(main())


def test_enqueue_timeout_starts_at_claim(fresh_queues: Any) -> None:
    q = Queue("timeout-q", concurrency=1)
    gate = threading.Event()

    @DBOS.workflow()
    def blocker() -> None:
        gate.wait(10)

    @DBOS.workflow()
    def quick() -> str:
        return "ok"

    b = q.enqueue(blocker)
    wait_for(lambda: b.get_status().status == "PENDING")
    with SetWorkflowTimeout(0.5):
        h = q.enqueue(quick)
    st = h.get_status()
    assert st.workflow_timeout_ms == 500 and st.workflow_deadline_epoch_ms is None
    time.sleep(0.7)
    gate.set()
    assert h.get_result() == "ok"


def test_queue_declared_after_launch_starts_quickly(fresh_queues: Any) -> None:
    @DBOS.workflow()
    def wf() -> int:
        return 1

    q = Queue("late-queue", polling_interval_sec=60)
    start = time.monotonic()
    assert q.enqueue(wf).get_result() == 1
    assert time.monotonic() - start < 1.0


def test_listen_queues_validation() -> None:
    DBOS.destroy()
    with pytest.raises(DBOSException):
        DBOS.listen_queues(["q"])


def test_queue_stats(fresh_queues: Any) -> None:
    q = Queue("stats-q", concurrency=1)
    gate = threading.Event()

    @DBOS.workflow()
    def blocker() -> None:
        gate.wait(10)

    @DBOS.workflow()
    def wf() -> None:
        pass

    b = q.enqueue(blocker)
    wait_for(lambda: b.get_status().status == "PENDING")
    handles = [q.enqueue(wf) for _ in range(3)]
    with SetEnqueueOptions(delay_seconds=60):
        q.enqueue(wf)
        q.enqueue(wf)
    (st,) = DBOS.queue_stats("stats-q")
    assert (st["enqueued"], st["delayed"], st["pending"]) == (3, 2, 1)
    assert st["listeners"] == [DBOS.executor_id]
    assert st["config"] is not None and st["config"]["concurrency"] == 1
    gate.set()
    for h in handles:
        h.get_result()


def test_list_queued_workflows(fresh_queues: Any) -> None:
    q = Queue("listed", concurrency=1)
    gate = threading.Event()

    @DBOS.workflow()
    def blocker() -> None:
        gate.wait(10)

    @DBOS.workflow()
    def wf(i: int) -> None:
        pass

    b = q.enqueue(blocker)
    wait_for(lambda: b.get_status().status == "PENDING")
    later = [q.enqueue(wf, i) for i in range(3)]
    rows = DBOS.list_queued_workflows(queue_name="listed")
    # ordered by (created_at, workflow_id) (02 §7.1 rule 6): rows created in the same millisecond tie on the ID
    assert rows[0].workflow_id == b.workflow_id
    assert {r.workflow_id for r in rows[1:]} == {h.workflow_id for h in later}
    assert [r.status for r in rows] == ["PENDING", "ENQUEUED", "ENQUEUED", "ENQUEUED"]
    assert len(DBOS.list_queued_workflows(status="ENQUEUED", limit=2)) == 2
    # an explicit status replaces the default (02 §7.1)
    assert DBOS.list_queued_workflows(status="SUCCESS") == []
    with pytest.raises(DBOSValidationError):
        DBOS.list_queued_workflows(status="DONE")
    gate.set()
    for h in later:
        h.get_result()
    assert DBOS.list_queued_workflows(queue_name="listed") == []
    assert len(DBOS.list_queued_workflows(queue_name="listed", status="SUCCESS")) == 4
