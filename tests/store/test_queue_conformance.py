"""Queue conformance of the `SystemStore` (03 §6-§9, §11, §12, §19, §21; 07 §2.2 "Queues and claims").

Runs on both backends: deduplication kinds and races, priority order, the shared limits G / L / PG / PL, the local
PW remainder, lane fairness and lane scale, the "no key" lane, delayed promotion and queue statistics. Rows are
written directly as ENQUEUED / DELAYED `NewWorkflow`s, and claims are made with explicit `ClaimRequest`s.
"""

from __future__ import annotations

import dataclasses
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from dbos._store import open_system_store
from dbos._store.base import (
    Change,
    ClaimRequest,
    ClaimResult,
    Fence,
    NewWorkflow,
    Outcome,
    ParentLink,
    Payload,
    RateLimit,
    StoreSettings,
    SystemStore,
)

# ---------------------------------------------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------------------------------------------


def _open(url: str) -> SystemStore:
    return open_system_store(url, StoreSettings(role="tool"))


@pytest.fixture
def store(db_url: str) -> Iterator[SystemStore]:
    s = _open(db_url)
    s.migrate()
    yield s
    s.close()


@pytest.fixture
def peer(db_url: str, store: SystemStore) -> Iterator[SystemStore]:
    """A second store object on the same database, as if in another process."""
    s = _open(db_url)
    yield s
    s.close()


def token() -> str:
    return secrets.token_hex(16)


def row(
    workflow_id: str | None = None, *, queue: str | None = "q", status: str = "ENQUEUED", **kw: Any
) -> NewWorkflow:
    owner = ("exec-a", 1, token()) if status == "PENDING" else None
    return NewWorkflow(
        workflow_id=workflow_id or f"wf-{token()}",
        name=kw.pop("name", "wf"),
        class_name=kw.pop("class_name", None),
        config_name=kw.pop("config_name", None),
        inputs=Payload('{"args": []}', "json"),
        receiver=None,
        status=status,  # type: ignore[arg-type]
        owner=owner,
        creator_token=kw.pop("creator_token", token()),
        queue_name=queue,
        **kw,
    )


def enqueue(store: SystemStore, queue: str = "q", **kw: Any) -> str:
    new = row(queue=queue, **kw)
    assert store.insert_workflow(new).kind == "created"
    return new.workflow_id


def req(queue: str = "q", max_rows: int = 100, **kw: Any) -> ClaimRequest:
    return ClaimRequest(
        queue_name=queue,
        executor_id=kw.pop("executor_id", "exec-a"),
        incarnation=kw.pop("incarnation", 1),
        application_name=kw.pop("application_name", None),
        application_version=kw.pop("application_version", None),
        registered=frozenset(kw.pop("names", ("wf",))),
        max_rows=max_rows,
        batch_token=token(),
        **kw,
    )


def ids(result: ClaimResult) -> list[str]:
    return [c.fence.workflow_id for c in result.claimed]


def keys(result: ClaimResult) -> list[str | None]:
    return [c.row.partition_key for c in result.claimed]


def finish(store: SystemStore, result: ClaimResult) -> None:
    for c in result.claimed:
        assert store.record_outcome(c.fence, Outcome("SUCCESS", Payload("1", "json"))).applied


class Recorder:
    def __init__(self) -> None:
        self.changes: list[Change] = []
        self.lock = threading.Lock()

    def __call__(self, change: Change) -> None:
        with self.lock:
            self.changes.append(change)

    def take(self) -> set[Change]:
        with self.lock:
            out = {c for c in self.changes if c.kind != "all"}
            self.changes.clear()
        return out


# ---------------------------------------------------------------------------------------------------------------
# Deduplication (03 §7)
# ---------------------------------------------------------------------------------------------------------------


def test_dedup_existing_names_the_holder(store: SystemStore) -> None:
    first = row("first", deduplication_id="D")
    created = store.insert_workflow(first)
    assert created.kind == "created"
    second = row("second", deduplication_id="D")
    result = store.insert_workflow(second)
    assert result.kind == "dedup_existing"
    assert result.workflow_id == "first" and result.name == "wf" and result.status == "ENQUEUED"
    assert result.queue_name == "q" and result.created_at == created.created_at
    assert store.get_workflow("second") is None
    holder = store.get_workflow("first")
    assert holder is not None and holder.deduplication_id == "D"
    # The ID is checked first: the holder's own ID reports `existing`, not a dedup kind.
    again = store.insert_workflow(dataclasses.replace(first, creator_token=token()))
    assert again.kind == "existing" and again.workflow_id == "first"
    # A retry of the very same start (same creator token) is `created`.
    assert store.insert_workflow(first).kind == "created"


def test_dedup_rejected_and_conflict_write_nothing(store: SystemStore) -> None:
    store.insert_workflow(row("holder", deduplication_id="D", class_name="C", config_name="cfg"))
    same = {"class_name": "C", "config_name": "cfg", "deduplication_id": "D"}
    rejected = store.insert_workflow(row("r1", duplication_policy="reject", **same))
    assert rejected.kind == "dedup_rejected" and rejected.workflow_id == "holder"
    assert (rejected.name, rejected.class_name, rejected.config_name) == ("wf", "C", "cfg")
    for changed in ({"name": "other"}, {"class_name": "K"}, {"config_name": "cfg2"}):
        fields = same | changed
        conflict = store.insert_workflow(row(f"c-{token()}", **fields))
        assert conflict.kind == "dedup_conflict" and conflict.workflow_id == "holder"
        assert conflict.name == "wf" and conflict.class_name == "C"
        # With "reject" and another function the verdict is still `dedup_conflict`.
        conflict = store.insert_workflow(row(f"c-{token()}", duplication_policy="reject", **fields))
        assert conflict.kind == "dedup_conflict"
    assert store.queue_stats("q")[0].enqueued == 1


def test_dedup_binding_outlives_completion(store: SystemStore) -> None:
    enqueue(store, deduplication_id="D", workflow_id="done")
    claimed = store.claim(req())
    assert ids(claimed) == ["done"]
    finish(store, claimed)
    result = store.insert_workflow(row("later", deduplication_id="D"))
    assert result.kind == "dedup_existing" and result.workflow_id == "done" and result.status == "SUCCESS"
    assert store.get_workflow("later") is None


def test_dedup_namespace_is_the_queue(store: SystemStore) -> None:
    a = store.insert_workflow(row("on-a", queue="qa", deduplication_id="D"))
    b = store.insert_workflow(row("on-b", queue="qb", deduplication_id="D"))
    assert a.kind == b.kind == "created"
    # Partition keys do not split the namespace: D under key "k2" returns the holder under key "k1".
    store.insert_workflow(row("p1", queue="pq", partition_key="k1", deduplication_id="D"))
    other_lane = store.insert_workflow(row("p2", queue="pq", partition_key="k2", deduplication_id="D"))
    assert other_lane.kind == "dedup_existing" and other_lane.workflow_id == "p1"
    # DELAYED rows hold their binding like any other.
    later = store.now_ms() + 60_000
    assert (
        store.insert_workflow(
            row("d1", queue="dq", status="DELAYED", delay_until_ms=later, deduplication_id="D")
        ).kind
        == "created"
    )
    delayed = store.insert_workflow(row("d2", queue="dq", deduplication_id="D"))
    assert delayed.kind == "dedup_existing" and delayed.workflow_id == "d1" and delayed.status == "DELAYED"
    # A row without a deduplication ID never collides.
    assert store.insert_workflow(row(queue="qa")).kind == "created"


def test_dedup_with_parent(store: SystemStore) -> None:
    parent = row("parent", queue=None, status="PENDING")
    store.insert_workflow(parent)
    assert parent.owner is not None
    fence = Fence("parent", parent.owner[2])
    store.insert_workflow(row("holder", deduplication_id="D"))
    link = ParentLink(fence, step_id=1, step_name="enqueue", write_token=token())
    result = store.insert_workflow(row("parent-1", deduplication_id="D"), parent=link)
    assert result.kind == "dedup_existing" and result.workflow_id == "holder"
    steps = store.list_steps("parent")
    assert [(s.step_id, s.name, s.child_workflow_id) for s in steps] == [(1, "enqueue", "holder")]
    assert store.get_workflow("parent-1") is None
    # A retry of that parent write (same token) is still `dedup_existing` and keeps the one step.
    again = store.insert_workflow(row("parent-1", deduplication_id="D"), parent=link)
    assert again.kind == "dedup_existing" and len(store.list_steps("parent")) == 1
    # `dedup_rejected` and `dedup_conflict` write no parent checkpoint.
    link2 = ParentLink(fence, step_id=2, step_name="enqueue", write_token=token())
    rejected = store.insert_workflow(
        row("parent-2", deduplication_id="D", duplication_policy="reject"), parent=link2
    )
    assert rejected.kind == "dedup_rejected"
    conflict = store.insert_workflow(row("parent-3", deduplication_id="D", name="other"), parent=link2)
    assert conflict.kind == "dedup_conflict"
    assert [s.step_id for s in store.list_steps("parent")] == [1]
    # A failed parent fence wins over the dedup verdict.
    bad = ParentLink(Fence("parent", "stale"), step_id=3, step_name="enqueue", write_token=token())
    assert store.insert_workflow(row("parent-4", deduplication_id="D"), parent=bad).kind == "fenced"


def test_dedup_race_one_created(store: SystemStore, peer: SystemStore) -> None:
    results: list[tuple[str, str, str]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def run(i: int) -> None:
        s = store if i % 2 else peer
        barrier.wait()
        r = s.insert_workflow(row(f"racer-{i}", deduplication_id="D"))
        with lock:
            results.append((r.kind, r.workflow_id, f"racer-{i}"))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    created = [r for r in results if r[0] == "created"]
    assert len(results) == 8 and len(created) == 1
    winner = created[0][2]
    assert created[0][1] == winner
    assert all(kind == "dedup_existing" and wid == winner for kind, wid, _ in results if _ != winner)
    assert store.queue_stats("q")[0].enqueued == 1


def test_enqueued_and_delayed_inserts_emit_queue(store: SystemStore) -> None:
    rec = Recorder()
    store.changes.subscribe(rec)
    enqueue(store, "eq")
    store.insert_workflow(row(queue="dq", status="DELAYED", delay_until_ms=store.now_ms() + 60_000))
    assert rec.take() == {Change("queue", ("eq",)), Change("queue", ("dq",))}
    enqueue(store, "eq", deduplication_id="D")
    rec.take()
    assert store.insert_workflow(row(queue="eq", deduplication_id="D")).kind == "dedup_existing"
    assert rec.take() == set()


# ---------------------------------------------------------------------------------------------------------------
# Priority (03 §6) and the queue-wide limits G and L (03 §11, §12)
# ---------------------------------------------------------------------------------------------------------------


def test_priority_order(store: SystemStore) -> None:
    none = enqueue(store)  # priority 0, oldest, still last
    p1 = enqueue(store, priority=1)
    p10 = enqueue(store, priority=10)
    p100 = enqueue(store, priority=100)
    e1 = enqueue(store, priority=5)
    e2 = enqueue(store, priority=5)
    order = [ids(store.claim(req(max_rows=1)))[0] for _ in range(6)]
    assert order == [p100, p10, e1, e2, p1, none]
    assert store.claim(req()).claimed == []


def test_global_concurrency(store: SystemStore) -> None:
    for _ in range(5):
        enqueue(store)
    first = store.claim(req(global_concurrency=2))
    assert len(first.claimed) == 2 and first.next_rate_slot_ms is None
    assert store.claim(req(global_concurrency=2)).claimed == []
    assert store.queue_stats("q")[0].pending == 2
    finish(store, dataclasses.replace(first, claimed=first.claimed[:1]))
    second = store.claim(req(global_concurrency=2))
    assert len(second.claimed) == 1
    assert store.queue_stats("q")[0].pending == 2
    # A lowered limit (below the number in flight) claims nothing and never goes negative.
    assert store.claim(req(global_concurrency=1)).claimed == []


def test_rate_limit_window(store: SystemStore) -> None:
    for _ in range(4):
        enqueue(store)
    rate = RateLimit(limit=2, period_ms=800)
    first = store.claim(req(max_rows=1, rate=rate))
    assert len(first.claimed) == 1
    first_at = first.claimed[0].row.dequeued_at
    time.sleep(0.3)
    second = store.claim(req(rate=rate))
    assert len(second.claimed) == 1
    second_at = second.claimed[0].row.dequeued_at
    assert first_at is not None and second_at is not None
    finish(store, first)  # completing does not refund the window
    blocked = store.claim(req(rate=rate))
    assert blocked.claimed == []
    assert blocked.next_rate_slot_ms is not None
    assert abs(blocked.next_rate_slot_ms - (first_at + 800)) <= 5
    time.sleep(max(0.0, (blocked.next_rate_slot_ms - store.now_ms()) / 1000 + 0.05))
    # The first claim aged out, the second has not: exactly one more claim fits.
    after = store.claim(req(rate=rate))
    assert len(after.claimed) == 1 and after.next_rate_slot_ms is None
    again = store.claim(req(rate=rate))
    assert again.claimed == [] and again.next_rate_slot_ms is not None
    assert abs(again.next_rate_slot_ms - (second_at + 800)) <= 5


def test_rate_limit_caps_one_claim(store: SystemStore) -> None:
    for _ in range(5):
        enqueue(store)
    rate = RateLimit(limit=3, period_ms=60_000)
    assert len(store.claim(req(rate=rate)).claimed) == 3
    blocked = store.claim(req(rate=rate, global_concurrency=100))
    assert blocked.claimed == [] and blocked.next_rate_slot_ms is not None


def test_expired_rows_cancelled_even_without_budget(store: SystemStore) -> None:
    enqueue(store)
    store.claim(req(max_rows=1))
    expired = enqueue(store, deadline_ms=store.now_ms() - 1)
    result = store.claim(req(global_concurrency=1))
    assert result.claimed == [] and result.cancelled == [expired]
    cancelled = store.get_workflow(expired)
    assert cancelled is not None and cancelled.status == "CANCELLED" and cancelled.cancel_reason == "deadline"


# ---------------------------------------------------------------------------------------------------------------
# Partitioned queues (03 §8)
# ---------------------------------------------------------------------------------------------------------------


def _lanes(
    store: SystemStore, spec: dict[str | None, int], queue: str = "pq", **kw: Any
) -> dict[str | None, list[str]]:
    out: dict[str | None, list[str]] = {}
    for key, n in spec.items():
        out[key] = [enqueue(store, queue, partition_key=key, **kw) for _ in range(n)]
    return out


def preq(max_rows: int = 100, **kw: Any) -> ClaimRequest:
    return req("pq", max_rows, partitioned=True, **kw)


def test_partition_concurrency_one_per_lane(store: SystemStore) -> None:
    lanes = _lanes(store, {"a": 3, "b": 2})
    first = store.claim(preq(partition_concurrency=1))
    assert ids(first) == [lanes["a"][0], lanes["b"][0]]
    assert store.claim(preq(partition_concurrency=1)).claimed == []
    finish(store, dataclasses.replace(first, claimed=first.claimed[:1]))
    second = store.claim(preq(partition_concurrency=1))
    assert ids(second) == [lanes["a"][1]]
    # PG = 2 lets a lane run its next row while one is in flight.
    third = store.claim(preq(partition_concurrency=2))
    assert sorted(ids(third)) == sorted([lanes["a"][2], lanes["b"][1]])


def test_partition_rate_limit(store: SystemStore) -> None:
    _lanes(store, {"a": 2, "b": 2})
    rate = RateLimit(limit=1, period_ms=60_000)
    first = store.claim(preq(partition_rate=rate))
    assert sorted(keys(first)) == ["a", "b"]
    blocked = store.claim(preq(partition_rate=rate))
    assert blocked.claimed == []
    claimed_at = first.claimed[0].row.dequeued_at
    assert claimed_at is not None and blocked.next_rate_slot_ms is not None
    assert abs(blocked.next_rate_slot_ms - (claimed_at + 60_000)) <= 5
    # Another lane still has its own budget.
    enqueue(store, "pq", partition_key="c")
    assert keys(store.claim(preq(partition_rate=rate))) == ["c"]


def test_partition_worker_concurrency(store: SystemStore) -> None:
    lanes = _lanes(store, {"a": 3, "b": 3, "c": 3})
    result = store.claim(preq(partition_worker_concurrency=2, partition_local_room={"a": 0, "b": 1}))
    assert ids(result) == [lanes["b"][0], lanes["c"][0], lanes["c"][1]]
    # Without PW the local room map alone limits the lanes it names.
    more = store.claim(preq(partition_local_room={"a": 1, "b": 0, "c": 0}))
    assert ids(more) == [lanes["a"][0]]


def test_fairness_one_row_per_lane_first(store: SystemStore) -> None:
    lanes = _lanes(store, {"A": 20, "B": 1, "C": 1})
    result = store.claim(preq(max_rows=3, partition_concurrency=1))
    assert ids(result) == [lanes["A"][0], lanes["B"][0], lanes["C"][0]]


def test_fairness_round_robin_passes_and_lane_order(store: SystemStore) -> None:
    lanes = _lanes(store, {"A": 20, "B": 1, "C": 1})
    result = store.claim(preq(max_rows=5))
    assert ids(result) == [lanes["A"][0], lanes["B"][0], lanes["C"][0], lanes["A"][1], lanes["A"][2]]


def test_lane_order_most_recent_last(store: SystemStore) -> None:
    _lanes(store, {"A": 3, "B": 3, "C": 3, "D": 3})
    # D is absent from lane_order, so it goes first; then C, A, B in that list's order (B served last).
    result = store.claim(preq(max_rows=4, lane_order=("C", "A", "B")))
    assert keys(result) == ["D", "C", "A", "B"]
    result = store.claim(preq(max_rows=2, lane_order=("D", "C", "A", "B")))
    assert keys(result) == ["D", "C"]


def test_head_priority_orders_lanes_before_fairness(store: SystemStore) -> None:
    _lanes(store, {"A": 2, "B": 2})
    enqueue(store, "pq", partition_key="B", priority=5)
    result = store.claim(preq(max_rows=1, lane_order=("A", "B")))
    assert keys(result) == ["B"] and result.claimed[0].row.priority == 5
    # Inside a lane, rows go by priority, then FIFO.
    enqueue(store, "pq", partition_key="A", priority=9)
    within = store.claim(preq(max_rows=1, lane_order=("B",)))
    assert keys(within) == ["A"] and within.claimed[0].row.priority == 9


def test_big_lane_does_not_starve_a_small_one(store: SystemStore) -> None:
    # 10,000 rows in one lane (03 "must be shown"), enqueued by 8 threads so that group commit batches them.
    with ThreadPoolExecutor(8) as pool:
        big = list(pool.map(lambda _: enqueue(store, "pq", partition_key="big"), range(10_000)))
    small = enqueue(store, "pq", partition_key="small")
    result = store.claim(preq(max_rows=2))
    assert keys(result) == ["big", "small"] and ids(result)[1] == small and ids(result)[0] in big
    result = store.claim(preq(max_rows=2, global_concurrency=3, partition_concurrency=1))
    assert result.claimed == []  # "big" is at PG 1, "small" is drained


def test_no_key_lane(store: SystemStore) -> None:
    lanes = _lanes(store, {None: 2, "k": 2})
    first = store.claim(preq(partition_concurrency=1))
    assert sorted(ids(first)) == sorted([lanes[None][0], lanes["k"][0]])
    assert store.claim(preq(partition_concurrency=1)).claimed == []
    finish(store, first)
    # lane_order knows the "no key" lane as None: it was served last here, so "k" comes first.
    second = store.claim(preq(partition_concurrency=1, lane_order=("k", None)))
    assert ids(second) == [lanes["k"][1], lanes[None][1]]
    # An unpartitioned claim ignores keys.
    enqueue(store, "pq", partition_key="z")
    assert len(store.claim(req("pq")).claimed) == 1


def test_partitioned_claim_respects_registration_and_version(store: SystemStore) -> None:
    enqueue(store, "pq", partition_key="a", name="unregistered")
    pinned = enqueue(store, "pq", partition_key="a", application_version="v2")
    ok = enqueue(store, "pq", partition_key="b")
    result = store.claim(preq(application_version="v1"))
    assert ids(result) == [ok]
    assert ids(store.claim(preq(application_version="v2"))) == [pinned]


# ---------------------------------------------------------------------------------------------------------------
# Delayed promotion (03 §9)
# ---------------------------------------------------------------------------------------------------------------


def test_promote_delayed(store: SystemStore) -> None:
    now = store.now_ms()
    due = row(queue="dq", status="DELAYED", delay_until_ms=now - 10)
    later = row(queue="dq", status="DELAYED", delay_until_ms=now + 60_000)
    for new in (due, later):
        assert store.insert_workflow(new).kind == "created"
    stats = store.queue_stats("dq")[0]
    assert (stats.enqueued, stats.delayed) == (0, 2)
    assert store.claim(req("dq")).claimed == []  # DELAYED rows are never claimed
    rec = Recorder()
    store.changes.subscribe(rec)
    result = store.promote_delayed()
    assert result.promoted == [(due.workflow_id, "dq")]
    assert result.next_due_ms == now + 60_000
    assert Change("queue", ("dq",)) in rec.take()
    again = store.promote_delayed()
    assert again.promoted == [] and again.next_due_ms == now + 60_000
    promoted = store.get_workflow(due.workflow_id)
    assert promoted is not None and promoted.status == "ENQUEUED"
    assert ids(store.claim(req("dq"))) == [due.workflow_id]
    late = store.get_workflow(later.workflow_id)
    assert late is not None and late.status == "DELAYED"


def test_promote_delayed_limit_and_order(store: SystemStore) -> None:
    now = store.now_ms()
    rows = [row(queue=f"q{i % 2}", status="DELAYED", delay_until_ms=now - 100 + i) for i in (3, 1, 2)]
    for new in rows:
        store.insert_workflow(new)
    first = store.promote_delayed(limit=2)
    assert first.promoted == [(rows[1].workflow_id, "q1"), (rows[2].workflow_id, "q0")]
    assert first.next_due_ms == now - 97
    second = store.promote_delayed(limit=2)
    assert second.promoted == [(rows[0].workflow_id, "q1")] and second.next_due_ms is None
    assert store.promote_delayed().promoted == []


# ---------------------------------------------------------------------------------------------------------------
# Queue statistics (03 §19)
# ---------------------------------------------------------------------------------------------------------------


def test_queue_stats(store: SystemStore) -> None:
    later = store.now_ms() + 60_000
    first = enqueue(store, "sq")
    waiting = [enqueue(store, "sq") for _ in range(3)]
    for _ in range(2):
        store.insert_workflow(row(queue="sq", status="DELAYED", delay_until_ms=later))
    assert ids(store.claim(req("sq", max_rows=1))) == [first]  # 1 PENDING
    waiting.append(enqueue(store, "sq"))
    finished = store.claim(req("sq", max_rows=1))
    assert ids(finished) == [waiting[0]]
    finish(store, finished)  # terminal rows are not counted
    store.insert_workflow(row(queue=None, status="PENDING"))  # a direct start: no queue, not counted
    # Partitions: distinct non-NULL keys among ENQUEUED and PENDING rows (DELAYED ones do not count).
    for key in ("a", "a", "b", None):
        enqueue(store, "pq", partition_key=key)
    store.claim(req("pq", max_rows=1))
    enqueue(store, "pq", partition_key="c")
    store.insert_workflow(row(queue="pq", status="DELAYED", delay_until_ms=later, partition_key="d"))

    stats = store.queue_stats(None)
    assert [s.queue_name for s in stats] == ["pq", "sq"]
    pq, sq = stats
    assert (sq.enqueued, sq.delayed, sq.pending, sq.partitions) == (3, 2, 1, 0)
    oldest = store.get_workflow(waiting[1])
    assert oldest is not None and sq.oldest_enqueued_at == oldest.created_at
    assert (pq.enqueued, pq.delayed, pq.pending, pq.partitions) == (4, 1, 1, 3)
    assert store.queue_stats("sq") == [sq]
    assert store.queue_stats("nothing-here") == []


def test_queue_stats_empty(store: SystemStore) -> None:
    assert store.queue_stats(None) == []


# ---------------------------------------------------------------------------------------------------------------
# Two store objects on one database (as two processes)
# ---------------------------------------------------------------------------------------------------------------


def test_two_stores_share_limits_and_order(store: SystemStore, peer: SystemStore) -> None:
    ordered = [enqueue(store, priority=p) for p in (1, 3, 2)]
    assert ids(peer.claim(req(max_rows=1, global_concurrency=2))) == [ordered[1]]
    assert ids(store.claim(req(max_rows=5, global_concurrency=2))) == [ordered[2]]
    assert peer.claim(req(global_concurrency=2)).claimed == []
    rate = RateLimit(limit=1, period_ms=60_000)
    enqueue(store, "rq")
    enqueue(store, "rq")
    assert len(store.claim(req("rq", rate=rate)).claimed) == 1
    assert peer.claim(req("rq", rate=rate)).next_rate_slot_ms is not None


def test_two_stores_hammer_global_concurrency(store: SystemStore, peer: SystemStore) -> None:
    total = 30
    for _ in range(total):
        enqueue(store, "hq")
    seen: list[str] = []
    over: list[int] = []
    lock = threading.Lock()

    def worker(s: SystemStore) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with lock:
                if len(seen) >= total:
                    return
            result = s.claim(req("hq", max_rows=2, global_concurrency=3, executor_id=f"ex-{id(s)}"))
            pending = s.queue_stats("hq")
            with lock:
                seen.extend(ids(result))
                if pending and pending[0].pending > 3:
                    over.append(pending[0].pending)
            finish(s, result)

    threads = [threading.Thread(target=worker, args=(s,)) for s in (store, peer, store, peer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert over == []
    assert len(seen) == total and len(set(seen)) == total


# ---------------------------------------------------------------------------------------------------------------
# SQLite: the claim's queries stay on their indexes
# ---------------------------------------------------------------------------------------------------------------


def test_sqlite_claim_plans_use_indexes(tmp_path: Path) -> None:
    from dbos._store import sqlite_queues as qs

    url = f"sqlite:///{tmp_path / 'plan.sqlite'}"
    s = _open(url)
    s.migrate()
    try:
        for i in range(50):
            enqueue(s, "pq", partition_key=f"k{i % 5}")
    finally:
        s.close()
    conn = sqlite3.connect(str(tmp_path / "plan.sqlite"))
    conn.execute("ANALYZE")
    params = {"queue": "pq", "names": '["wf"]', "app": None, "version": None, "unversioned": 1, "now": 0}
    params |= {"key": "k1", "limit": 5, "offset": 0, "since": 0}

    def plan(sql: str) -> str:
        return "\n".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall())

    lanes = plan(qs._LANES)
    assert "USING INDEX dbos_workflows_lane (queue_name=? AND partition_key>?)" in lanes
    assert "SCAN dbos_workflows" not in lanes
    assert [r[0] for r in conn.execute(qs._LANES, params)] == [f"k{i}" for i in range(5)]
    assert "dbos_workflows_lane (queue_name=? AND partition_key=?)" in plan(qs._LANE_ROWS_KEY)
    assert "dbos_workflows_lane (queue_name=? AND partition_key=?)" in plan(qs._LANE_ROWS_NULL)
    assert "dbos_workflows_claim (queue_name=?)" in plan(qs._CANDIDATES)
    assert "COVERING INDEX dbos_workflows_active (queue_name=? AND status=?)" in plan(qs._PENDING)
    assert "dbos_workflows_deadline" in plan(qs._CANCEL_EXPIRED)
    for sql in (qs._LANES, qs._CANDIDATES, qs._LANE_ROWS_KEY, qs._PENDING, qs._PENDING_BY_LANE):
        assert "TEMP B-TREE" not in plan(sql)
    conn.close()


def test_pick_lanes_fetches_lazily() -> None:
    """The dialect-independent lane selection reads O(rows claimed + lanes) rows, whatever the backlog."""
    from dbos._store import records

    backlog = {"big": [(f"big-{i}", 0, i) for i in range(100_000)], "b": [("b-0", 0, 100_001)]}
    backlog["c"] = [(f"c-{i}", 0, 200_000 + i) for i in range(3)]
    read = 0

    def fetch(key: str | None, offset: int, limit: int) -> list[tuple[str, int, int]]:
        nonlocal read
        assert key is not None
        got = backlog[key][offset : offset + limit]
        read += len(got)
        return got

    heads = {k: rows[0] for k, rows in backlog.items()}
    picked = records.pick_lanes(heads, {"c": 2}, 6, (), fetch)
    assert picked == ["big-0", "b-0", "c-0", "big-1", "c-1", "big-2"]
    assert read <= 6 + len(backlog)
    # Budget and room bounds, and an exhausted budget.
    assert records.pick_lanes(heads, {"big": 0, "b": None, "c": 0}, 5, ("b",), fetch) == ["b-0"]
    assert records.pick_lanes(heads, {}, 0, (), fetch) == []


@pytest.mark.parametrize("partitioned", [False, True])
def test_paused_queue_claims_nothing(store: SystemStore, partitioned: bool) -> None:
    kw = {"partition_key": "k"} if partitioned else {}
    wid = enqueue(store, **kw)
    store.set_queue_paused("q", True)
    extra = {"partitioned": True, "partition_concurrency": 1} if partitioned else {}
    assert store.claim(req(**extra)).claimed == []
    store.set_queue_paused("q", False)
    assert ids(store.claim(req(**extra))) == [wid]


def test_list_queued(store: SystemStore) -> None:
    a = enqueue(store)
    b = enqueue(store, queue="other")
    c = enqueue(store)
    claimed = ids(store.claim(req(max_rows=1)))
    assert claimed == [a]
    assert [r.workflow_id for r in store.list_queued("q")] == [a, c]
    assert [r.workflow_id for r in store.list_queued(None)] == [a, b, c]
    assert [r.workflow_id for r in store.list_queued(None, limit=1)] == [a]
    rows = store.list_queued("q")
    assert rows[0].status == "PENDING" and rows[0].inputs is None
