"""Group commit (07 §8), on both backends: batches form only under load, each op keeps its own result."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from store_kit import fence_of, new_wf, pending, token

from dbos._store.base import Fence, NewStep, Outcome, Payload, StoreStats, SystemStore, Write
from dbos._store.group_commit import CommitLanes


def step(step_id: int) -> NewStep:
    return NewStep(step_id, f"step{step_id}", Payload("1", "json"), None, token())


def lanes_of(store: SystemStore) -> CommitLanes[Any]:
    if store.backend == "sqlite":
        return store._db._lanes  # type: ignore[attr-defined,no-any-return]
    return store._batcher._lanes  # type: ignore[attr-defined,no-any-return]


@contextmanager
def every_lane_held(store: SystemStore) -> Iterator[None]:
    """Occupy every commit lane, so that writes submitted meanwhile wait for one batch."""
    lanes = lanes_of(store)
    holds = [lanes.solo() for _ in range(lanes._free)]  # type: ignore[attr-defined]
    for h in holds:
        h.__enter__()
    try:
        yield
    finally:
        for h in holds:
            h.__exit__(None, None, None)


def in_threads(fns: list[Callable[[], Any]]) -> tuple[list[threading.Thread], dict[int, Any]]:
    results: dict[int, Any] = {}

    def run(i: int, fn: Callable[[], Any]) -> None:
        try:
            results[i] = fn()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(fns)]
    for t in threads:
        t.start()
    return threads, results


def wait_waiting(store: SystemStore, n: int) -> None:
    deadline = time.monotonic() + 10
    while lanes_of(store).waiting() < n:
        assert time.monotonic() < deadline, f"only {lanes_of(store).waiting()} of {n} writes are waiting"
        time.sleep(0.002)


def diff(after: StoreStats, before: StoreStats) -> dict[int, int]:
    return {
        k: v - before.batch_sizes.get(k, 0)
        for k, v in after.batch_sizes.items()
        if v != before.batch_sizes.get(k, 0)
    }


def test_sequential_steps_commit_alone(store: SystemStore) -> None:
    fence = pending(store)
    before = store.stats()
    for i in range(1, 101):
        assert store.record_step(fence, step(i)) is Write.APPLIED
    after = store.stats()
    assert diff(after, before) == {1: 100}
    assert after.commits - before.commits == 100
    assert after.lane_waits == before.lane_waits


def test_concurrent_workflows_share_commits(store: SystemStore) -> None:
    fences = [pending(store) for _ in range(200)]
    start = threading.Barrier(200)

    def ten_steps(fence: Fence) -> list[Write]:
        start.wait()
        return [store.record_step(fence, step(i)) for i in range(1, 11)]

    before = store.stats()
    threads, results = in_threads([lambda f=f: ten_steps(f) for f in fences])
    for t in threads:
        t.join()
    after = store.stats()
    assert all(r == [Write.APPLIED] * 10 for r in results.values()), results
    limit = 2000 / 3 if store.backend == "sqlite" else 2000 / 2
    assert after.commits - before.commits < limit
    assert after.batch_ops - before.batch_ops == 2000
    assert max(diff(after, before)) > 1
    for fence in fences:
        assert sorted(store.load_checkpoints([fence.workflow_id])[fence.workflow_id]) == list(range(1, 11))


def test_fenced_op_does_not_abort_its_batch(store: SystemStore) -> None:
    fences = [pending(store) for _ in range(5)]
    stale = Fence(fences[2].workflow_id, token())
    targets = fences[:2] + [stale] + fences[3:]
    before = store.stats()
    with every_lane_held(store):
        threads, results = in_threads([lambda f=f: store.record_step(f, step(1)) for f in targets])
        wait_waiting(store, 5)
    for t in threads:
        t.join()
    assert [results[i] for i in range(5)] == [Write.APPLIED] * 2 + [Write.FENCED] + [Write.APPLIED] * 2
    assert 5 in diff(store.stats(), before)
    for i, fence in enumerate(fences):
        steps = store.load_checkpoints([fence.workflow_id])[fence.workflow_id]
        assert sorted(steps) == ([] if i == 2 else [1])


def raising_op(store: SystemStore) -> Callable[[], Any]:
    """A batchable write whose statement raises (the `raise:unknown` of 07 §8's test, for this op only)."""
    if store.backend == "sqlite":
        db = store._db  # type: ignore[attr-defined]
        return lambda: db.write(
            "record_step", lambda tx: tx.execute("SELECT no_such_function()"), batchable=True
        )
    from dbos._store.postgres_batch import PgWrite

    def alone() -> Any:
        with store._pool.connection() as conn:  # type: ignore[attr-defined]
            return conn.execute("SELECT 1 / 0").fetchone()

    w = PgWrite("record_step", "zzz", "SELECT 1 / 0", {}, lambda row: row, alone)
    return lambda: store._batcher.write(w)  # type: ignore[attr-defined]


def test_an_op_that_raises_fails_alone(store: SystemStore) -> None:
    fences = [pending(store) for _ in range(4)]
    ops: list[Callable[[], Any]] = [lambda f=f: store.record_step(f, step(1)) for f in fences]
    ops.insert(2, raising_op(store))
    with every_lane_held(store):
        threads, results = in_threads(ops)
        wait_waiting(store, 5)
    for t in threads:
        t.join()
    assert isinstance(results[2], Exception)
    assert [results[i] for i in (0, 1, 3, 4)] == [Write.APPLIED] * 4
    for fence in fences:
        assert sorted(store.load_checkpoints([fence.workflow_id])[fence.workflow_id]) == [1]


@pytest.mark.parametrize("op", ["insert_workflow", "record_outcome"])
def test_workflow_writes_batch_too(store: SystemStore, op: str) -> None:
    news = [new_wf() for _ in range(6)]
    if op == "record_outcome":
        for n in news:
            assert store.insert_workflow(n).kind == "created"
        calls = [
            lambda n=n: store.record_outcome(fence_of(n), Outcome("SUCCESS", Payload("1", "json"), None))
            for n in news
        ]
    else:
        calls = [lambda n=n: store.insert_workflow(n) for n in news]
    before = store.stats()
    with every_lane_held(store):
        threads, results = in_threads(calls)
        wait_waiting(store, 6)
    for t in threads:
        t.join()
    assert 6 in diff(store.stats(), before)
    states = store.get_states([n.workflow_id for n in news])
    expected = "SUCCESS" if op == "record_outcome" else "PENDING"
    assert {s.status for s in states.values()} == {expected}, results
