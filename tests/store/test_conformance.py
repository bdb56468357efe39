"""The `SystemStore` conformance suite (07 §2.3): every protocol method, run the same way on both backends."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from store_kit import open_store as _open
from store_kit import token

from dbos._store.base import (
    INTERNAL_QUEUE,
    Change,
    ClaimRequest,
    ExecutorRegistration,
    Fence,
    NewStep,
    NewWorkflow,
    Outcome,
    ParentLink,
    Payload,
    SystemStore,
    Write,
)
from dbos.error import DBOSValidationError

# ---------------------------------------------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------------------------------------------


def new_wf(
    workflow_id: str | None = None,
    *,
    status: str = "PENDING",
    name: str = "wf",
    owner: tuple[str, int, str] | None = None,
    **kw: Any,
) -> NewWorkflow:
    if status == "PENDING" and owner is None:
        owner = ("exec-a", 1, token())
    return NewWorkflow(
        workflow_id=workflow_id or f"wf-{token()}",
        name=name,
        class_name=kw.pop("class_name", None),
        config_name=kw.pop("config_name", None),
        inputs=kw.pop("inputs", Payload('{"args": []}', "json")),
        receiver=kw.pop("receiver", None),
        status=status,  # type: ignore[arg-type]
        owner=owner if status == "PENDING" else None,
        creator_token=kw.pop("creator_token", token()),
        **kw,
    )


def fence_of(new: NewWorkflow) -> Fence:
    assert new.owner is not None
    return Fence(new.workflow_id, new.owner[2])


def step(step_id: int, *, write_token: str | None = None, output: str | None = "1", **kw: Any) -> NewStep:
    return NewStep(
        step_id=step_id,
        name=kw.pop("name", f"step{step_id}"),
        output=None if output is None else Payload(output, "json"),
        error=kw.pop("error", None),
        write_token=write_token or token(),
        **kw,
    )


def claim_req(
    queue: str, *, names: tuple[str, ...] = ("wf",), max_rows: int = 100, **kw: Any
) -> ClaimRequest:
    return ClaimRequest(
        queue_name=queue,
        executor_id=kw.pop("executor_id", "exec-a"),
        incarnation=kw.pop("incarnation", 1),
        application_name=kw.pop("application_name", None),
        application_version=kw.pop("application_version", None),
        registered=frozenset(names),
        max_rows=max_rows,
        batch_token=token(),
    )


def enqueue(store: SystemStore, queue: str = "q", **kw: Any) -> NewWorkflow:
    new = new_wf(status="ENQUEUED", queue_name=queue, **kw)
    assert store.insert_workflow(new).kind == "created"
    return new


def claim_one(store: SystemStore, queue: str = "q", **kw: Any) -> Fence:
    result = store.claim(claim_req(queue, max_rows=1, **kw))
    assert len(result.claimed) == 1
    return result.claimed[0].fence


def registration(
    executor_id: str = "exec-a", *, lease_ms: int = 60_000, app: str | None = "app"
) -> ExecutorRegistration:
    return ExecutorRegistration(
        executor_id=executor_id,
        application_name=app,
        application_version="v1",
        hostname="host",
        host_identity="host:boot",
        pid=4242,
        process_start="123",
        heartbeat_interval_ms=1_000,
        lease_ms=lease_ms,
    )


class Recorder:
    def __init__(self) -> None:
        self.changes: list[Change] = []
        self.event = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, change: Change) -> None:
        with self.lock:
            self.changes.append(change)
        self.event.set()

    def wait_for(self, pred: Callable[[Change], bool], timeout: float = 2.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if any(pred(c) for c in self.changes):
                    return True
            time.sleep(0.005)
        return False


# ---------------------------------------------------------------------------------------------------------------
# Lifecycle
# ---------------------------------------------------------------------------------------------------------------


def test_migrate_check_schema(db_url: str) -> None:
    s = _open(db_url)
    try:
        assert s.check_schema() == "missing"
        first = s.migrate()
        assert first.before == 0 and first.applied == list(range(1, first.after + 1)) and first.after >= 1
        again = s.migrate()
        assert again.applied == [] and again.before == again.after == first.after
        assert s.check_schema() == "current"
    finally:
        s.close()


def test_now_ms_and_stats(store: SystemStore) -> None:
    assert abs(store.now_ms() - time.time() * 1000) < 5_000
    before = store.stats()
    store.insert_workflow(new_wf())
    after = store.stats()
    assert after.commits == before.commits + 1 and after.round_trips >= before.round_trips
    assert after.by_op.get("insert_workflow", 0) == before.by_op.get("insert_workflow", 0) + 1


def test_fresh_workflow_costs_k_plus_2_writes(store: SystemStore) -> None:
    ops = ("insert_workflow", "record_step", "record_outcome")
    before = store.stats()
    new = new_wf()
    store.insert_workflow(new)
    for i in range(1, 4):
        assert store.record_step(fence_of(new), step(i)) is Write.APPLIED
    store.record_outcome(fence_of(new), Outcome("SUCCESS", Payload("1", "json")))
    after = store.stats()
    assert after.commits - before.commits == 5
    assert sum(after.by_op.get(op, 0) - before.by_op.get(op, 0) for op in ops) == 5


def test_close_is_idempotent(db_url: str) -> None:
    s = _open(db_url)
    s.migrate()
    s.close()
    s.close()


# ---------------------------------------------------------------------------------------------------------------
# insert_workflow
# ---------------------------------------------------------------------------------------------------------------


def test_insert_created_existing_conflict(store: SystemStore) -> None:
    new = new_wf("w1", class_name="C", config_name="cfg")
    created = store.insert_workflow(new)
    assert created.kind == "created" and created.status == "PENDING"
    assert (created.name, created.class_name, created.config_name) == ("wf", "C", "cfg")
    assert created.created_at is not None

    again = store.insert_workflow(dataclasses.replace(new, creator_token=token()))
    assert again.kind == "existing" and again.created_at == created.created_at

    other = store.insert_workflow(dataclasses.replace(new, creator_token=token(), name="other"))
    assert other.kind == "id_conflict" and other.name == "wf"

    # A retry of the very same start (same creator token) reports `created` (07 §7 rule 1).
    assert store.insert_workflow(new).kind == "created"


def test_insert_stores_every_field(store: SystemStore) -> None:
    new = new_wf(
        "full",
        status="ENQUEUED",
        queue_name="q",
        priority=7,
        partition_key="p",
        timeout_ms=5_000,
        application_name="app",
        application_version="v1",
        app_id="id",
        authenticated_user="alice",
        authenticated_roles=["admin", "user"],
        assumed_role="admin",
        parent_workflow_id="parent",
        schedule_name="sched",
        max_recovery_attempts=3,
        attributes='{"a": 1}',
        receiver="recv",
    )
    store.insert_workflow(new)
    row = store.get_workflow("full")
    assert row is not None
    assert row.status == "ENQUEUED" and row.queue_name == "q" and row.priority == 7
    assert row.partition_key == "p" and row.timeout_ms == 5_000 and row.deadline_ms is None
    assert row.application_name == "app" and row.application_version == "v1" and row.app_id == "id"
    assert row.authenticated_user == "alice" and row.authenticated_roles == ["admin", "user"]
    assert row.assumed_role == "admin" and row.parent_workflow_id == "parent"
    assert row.schedule_name == "sched" and row.max_recovery_attempts == 3
    assert row.inputs == new.inputs and row.receiver == "recv"
    assert row.claim_token is None and row.executor_id is None
    assert row.created_at == row.updated_at and row.recovery_attempts == 0 and not row.was_forked_from


def test_insert_pending_owner_and_deadline_from_now(store: SystemStore) -> None:
    new = new_wf(owner=("exec-z", 3, "tok-z"), timeout_ms=10_000, deadline_from_now=True, recovery_attempts=1)
    result = store.insert_workflow(new)
    row = store.get_workflow(new.workflow_id)
    assert row is not None and result.created_at is not None
    assert (row.executor_id, row.incarnation, row.claim_token) == ("exec-z", 3, "tok-z")
    assert row.deadline_ms == result.deadline_ms == result.created_at + 10_000
    assert row.recovery_attempts == 1

    inherited = new_wf(deadline_ms=123_456)
    assert store.insert_workflow(inherited).deadline_ms == 123_456


def test_insert_with_parent_writes_checkpoint(store: SystemStore) -> None:
    parent = new_wf("parent")
    store.insert_workflow(parent)
    link = ParentLink(fence_of(parent), step_id=1, step_name="child", write_token=token())
    child = new_wf("parent-1")
    assert store.insert_workflow(child, parent=link).kind == "created"
    steps = store.list_steps("parent")
    assert [(s.step_id, s.name, s.child_workflow_id) for s in steps] == [(1, "child", "parent-1")]

    # `existing` with a parent still writes the parent's checkpoint, pointing at the existing row.
    link2 = ParentLink(fence_of(parent), step_id=2, step_name="child", write_token=token())
    again = store.insert_workflow(dataclasses.replace(child, creator_token=token()), parent=link2)
    assert again.kind == "existing"
    assert store.load_checkpoints(["parent"])["parent"][2].child_workflow_id == "parent-1"


def test_insert_child_with_failed_parent_fence_writes_nothing(store: SystemStore) -> None:
    parent = new_wf("p2")
    store.insert_workflow(parent)
    bad = ParentLink(Fence("p2", "not-the-token"), step_id=1, step_name="child", write_token=token())
    result = store.insert_workflow(new_wf("p2-1"), parent=bad)
    assert result.kind == "fenced"
    assert store.get_workflow("p2-1") is None
    assert store.list_steps("p2") == []

    missing = ParentLink(Fence("nope", "x"), step_id=1, step_name="child", write_token=token())
    assert store.insert_workflow(new_wf("nope-1"), parent=missing).kind == "fenced"
    assert store.get_workflow("nope-1") is None


def test_insert_parent_conflict_writes_nothing(store: SystemStore) -> None:
    parent = new_wf("p3")
    store.insert_workflow(parent)
    assert store.record_step(fence_of(parent), step(1)) is Write.APPLIED
    link = ParentLink(fence_of(parent), step_id=1, step_name="child", write_token=token())
    result = store.insert_workflow(new_wf("p3-1"), parent=link)
    assert result.kind == "parent_conflict"
    assert store.get_workflow("p3-1") is None
    assert store.list_steps("p3")[0].child_workflow_id is None


def test_insert_id_conflict_with_parent_writes_no_checkpoint(store: SystemStore) -> None:
    parent = new_wf("p4")
    store.insert_workflow(parent)
    store.insert_workflow(new_wf("taken", name="other"))
    link = ParentLink(fence_of(parent), step_id=1, step_name="child", write_token=token())
    assert store.insert_workflow(new_wf("taken"), parent=link).kind == "id_conflict"
    assert store.list_steps("p4") == []


def test_insert_race_one_created(db_url: str, store: SystemStore, peer: SystemStore) -> None:
    results: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(16)

    def run(i: int) -> None:
        s = store if i % 2 else peer
        barrier.wait()
        kind = s.insert_workflow(new_wf("race", creator_token=f"creator-{i}")).kind
        with lock:
            results.append(kind)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == ["created"] + ["existing"] * 15


def test_insert_rejects_unstorable_text(store: SystemStore) -> None:
    for bad in ("a\x00b", "x" * 2049, "\ud800"):
        with pytest.raises(DBOSValidationError):
            store.insert_workflow(new_wf(bad))
    with pytest.raises(DBOSValidationError):
        store.insert_workflow(new_wf(name="n\x00"))
    assert store.insert_workflow(new_wf("é" * 1024)).kind == "created"  # 2048 bytes is allowed


# ---------------------------------------------------------------------------------------------------------------
# Reads
# ---------------------------------------------------------------------------------------------------------------


def test_get_workflow_payload_flags(store: SystemStore) -> None:
    new = new_wf("g1", receiver="r")
    store.insert_workflow(new)
    store.record_outcome(fence_of(new), Outcome("ERROR", error=Payload("boom", "pickle")))
    full = store.get_workflow("g1")
    assert full is not None and full.inputs == new.inputs and full.receiver == "r"
    assert full.error == Payload("boom", "pickle") and full.output is None
    bare = store.get_workflow("g1", load_input=False, load_output=False)
    assert bare is not None and bare.inputs is None and bare.receiver is None and bare.error is None
    assert bare.status == "ERROR" and bare.completed_at is not None
    assert store.get_workflow("missing") is None


def test_get_states(store: SystemStore) -> None:
    new = new_wf("s1", timeout_ms=1000, deadline_ms=99, parent_workflow_id="pp", application_version="v")
    store.insert_workflow(new)
    states = store.get_states(["s1", "s2"])
    assert set(states) == {"s1", "s2"}
    s1 = states["s1"]
    assert s1.exists and s1.status == "PENDING" and s1.timeout_ms == 1000 and s1.deadline_ms == 99
    assert s1.parent_workflow_id == "pp" and s1.application_version == "v" and s1.cancel_reason is None
    assert not states["s2"].exists and states["s2"].status is None
    assert store.get_states([]) == {}


# ---------------------------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------------------------


def test_record_step_applied_conflict_fenced(store: SystemStore) -> None:
    new = enqueue(store)
    f1 = claim_one(store)
    mine = step(1, write_token="tok-1")
    assert store.record_step(f1, mine) is Write.APPLIED
    assert store.record_step(f1, step(1, write_token="tok-2")) is Write.CONFLICT
    assert store.record_step(f1, mine) is Write.APPLIED  # the same logical write again
    assert store.release([f1], refund_attempt=False) == [new.workflow_id]
    f2 = claim_one(store)
    assert f2.claim_token != f1.claim_token
    assert store.record_step(f1, step(2)) is Write.FENCED
    assert store.record_step(f2, step(2)) is Write.APPLIED
    assert store.record_step(Fence("no-such-workflow", "t"), step(1)) is Write.FENCED
    assert [s.step_id for s in store.list_steps(new.workflow_id)] == [1, 2]


def test_record_step_payloads_and_times(store: SystemStore) -> None:
    new = new_wf()
    store.insert_workflow(new)
    f = fence_of(new)
    store.record_step(
        f, step(1, output=None, error=Payload("err", "pickle"), started_at_ms=10, completed_at_ms=20)
    )
    store.record_step(f, step(2, output=None, child_workflow_id="child"))
    store.record_step(f, step(3, output="out"))
    rows = store.load_checkpoints([new.workflow_id])[new.workflow_id]
    assert rows[1].error == Payload("err", "pickle") and rows[1].output is None
    assert (rows[1].started_at, rows[1].completed_at) == (10, 20)
    assert rows[2].output is None and rows[2].error is None and rows[2].child_workflow_id == "child"
    assert rows[3].output == Payload("out", "json") and rows[3].started_at is not None
    assert rows[3].write_token and rows[3].workflow_id == new.workflow_id


def test_load_checkpoints_batch_and_list_steps(store: SystemStore) -> None:
    a, b = new_wf("ca"), new_wf("cb")
    store.insert_workflow(a)
    store.insert_workflow(b)
    for i in (3, 1, 2):
        store.record_step(fence_of(a), step(i))
    store.record_step(fence_of(b), step(1))
    loaded = store.load_checkpoints(["ca", "cb", "cc"])
    assert sorted(loaded["ca"]) == [1, 2, 3] and list(loaded["cb"]) == [1] and loaded["cc"] == {}
    assert [s.step_id for s in store.list_steps("ca")] == [1, 2, 3]
    assert store.list_steps("cc") == []
    assert store.load_checkpoints([]) == {}


def _dbapi_connect(store: SystemStore) -> Any:
    if store.backend == "sqlite":
        import sqlite3

        from dbos._store.sqlite_conn import path_from_url

        return sqlite3.connect(path_from_url(store.url), isolation_level=None)
    import psycopg

    return psycopg.connect(store.url)


def _begin(conn: Any, store: SystemStore) -> None:
    if store.backend == "sqlite":
        conn.execute("BEGIN IMMEDIATE")


def test_record_step_in_caller_transaction(store: SystemStore) -> None:
    new = new_wf()
    store.insert_workflow(new)
    f = fence_of(new)
    conn = _dbapi_connect(store)
    try:
        _begin(conn, store)
        assert store.record_step_in(conn, f, step(1)) is Write.APPLIED
        conn.rollback() if store.backend == "postgres" else conn.execute("ROLLBACK")
        assert store.list_steps(new.workflow_id) == []
        _begin(conn, store)
        assert store.record_step_in(conn, f, step(1, write_token="t1")) is Write.APPLIED
        conn.commit() if store.backend == "postgres" else conn.execute("COMMIT")
        assert [s.write_token for s in store.list_steps(new.workflow_id)] == ["t1"]
        _begin(conn, store)
        assert store.record_step_in(conn, f, step(1, write_token="t2")) is Write.CONFLICT
        assert store.record_step_in(conn, Fence(new.workflow_id, "old"), step(2)) is Write.FENCED
        conn.rollback() if store.backend == "postgres" else conn.execute("ROLLBACK")
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------------------------
# record_outcome
# ---------------------------------------------------------------------------------------------------------------


def test_record_outcome(store: SystemStore) -> None:
    new = new_wf()
    store.insert_workflow(new)
    f = fence_of(new)
    wrong = store.record_outcome(Fence(new.workflow_id, "stale"), Outcome("SUCCESS", Payload("1", "json")))
    assert not wrong.applied and wrong.status == "PENDING"
    ok = store.record_outcome(f, Outcome("SUCCESS", Payload("1", "json")))
    assert ok.applied and ok.status == "SUCCESS"
    late = store.record_outcome(f, Outcome("ERROR", error=Payload("e", "json")))
    assert not late.applied and late.status == "SUCCESS"
    row = store.get_workflow(new.workflow_id)
    assert row is not None and row.output == Payload("1", "json") and row.error is None
    assert row.completed_at is not None
    missing = store.record_outcome(Fence("missing", "t"), Outcome("SUCCESS", Payload("1", "json")))
    assert not missing.applied and missing.status is None


def test_record_outcome_only_while_pending(store: SystemStore) -> None:
    enqueue(store, "oq")
    row = store.claim(claim_req("oq")).claimed[0]
    store.release([row.fence], refund_attempt=True)
    result = store.record_outcome(row.fence, Outcome("MAX_RECOVERY_ATTEMPTS_EXCEEDED"))
    assert not result.applied and result.status == "ENQUEUED"


def test_record_outcome_emits_wf_and_queue(store: SystemStore) -> None:
    enqueue(store, "eq")
    claimed = store.claim(claim_req("eq")).claimed[0]
    rec = Recorder()
    store.changes.subscribe(rec)
    store.record_outcome(claimed.fence, Outcome("SUCCESS", Payload("1", "json")))
    # In-process subscribers are called before the call returns.
    assert Change("wf", (claimed.fence.workflow_id,)) in rec.changes
    assert Change("queue", ("eq",)) in rec.changes


# ---------------------------------------------------------------------------------------------------------------
# claim / release
# ---------------------------------------------------------------------------------------------------------------


def test_claim_order_and_stamps(store: SystemStore) -> None:
    low = enqueue(store, "cq")
    high = enqueue(store, "cq", priority=10)
    mid = enqueue(store, "cq", priority=5)
    later = enqueue(store, "cq")
    timed = enqueue(store, "cq", timeout_ms=60_000)
    enqueue(store, "cq", name="unregistered")
    enqueue(store, "other")
    result = store.claim(claim_req("cq", executor_id="ex-1", incarnation=7, application_version="v9"))
    ids = [c.fence.workflow_id for c in result.claimed]
    assert ids == [high.workflow_id, mid.workflow_id, low.workflow_id, later.workflow_id, timed.workflow_id]
    assert result.cancelled == []
    tokens = {c.fence.claim_token for c in result.claimed}
    assert len(tokens) == 5 and all(len(t) == 32 for t in tokens)
    for c in result.claimed:
        r = c.row
        assert r.status == "PENDING" and r.executor_id == "ex-1" and r.incarnation == 7
        assert r.claim_token == c.fence.claim_token and r.recovery_attempts == 1
        assert r.dequeued_at is not None and r.application_version == "v9"
        assert r.inputs is not None and not c.may_have_steps
    timed_row = result.claimed[-1].row
    assert timed_row.deadline_ms is not None and timed_row.dequeued_at is not None
    assert timed_row.deadline_ms == timed_row.dequeued_at + 60_000
    assert result.claimed[0].row.deadline_ms is None
    assert store.claim(claim_req("cq")).claimed == []


def test_claim_max_rows_and_scope(store: SystemStore) -> None:
    for _ in range(3):
        enqueue(store, "mq")
    pinned = enqueue(store, "mq", application_version="v2")
    foreign = enqueue(store, "mq", application_name="other-app")
    first = store.claim(claim_req("mq", max_rows=2, application_name="app", application_version="v1"))
    assert len(first.claimed) == 2
    rest = store.claim(claim_req("mq", application_name="app", application_version="v1"))
    assert len(rest.claimed) == 1
    assert {c.fence.workflow_id for c in first.claimed + rest.claimed}.isdisjoint(
        {pinned.workflow_id, foreign.workflow_id}
    )
    v2 = store.claim(claim_req("mq", application_name="app", application_version="v2"))
    assert [c.fence.workflow_id for c in v2.claimed] == [pinned.workflow_id]
    other = store.claim(claim_req("mq", application_name="other-app", application_version="v1"))
    assert [c.fence.workflow_id for c in other.claimed] == [foreign.workflow_id]


def test_claim_cancels_past_deadline(store: SystemStore) -> None:
    expired = enqueue(store, "dq", deadline_ms=store.now_ms() - 1)
    fine = enqueue(store, "dq", deadline_ms=store.now_ms() + 60_000)
    rec = Recorder()
    store.changes.subscribe(rec)
    result = store.claim(claim_req("dq"))
    assert result.cancelled == [expired.workflow_id]
    assert [c.fence.workflow_id for c in result.claimed] == [fine.workflow_id]
    assert result.claimed[0].row.deadline_ms == fine.deadline_ms
    row = store.get_workflow(expired.workflow_id)
    assert row is not None and row.status == "CANCELLED" and row.cancel_reason == "deadline"
    assert row.completed_at is not None
    assert Change("wf", (expired.workflow_id,)) in rec.changes


def test_release_and_reclaim(store: SystemStore) -> None:
    new = enqueue(store, "rq")
    first = store.claim(claim_req("rq")).claimed[0]
    rec = Recorder()
    store.changes.subscribe(rec)
    assert store.release([Fence(new.workflow_id, "wrong")], refund_attempt=False) == []
    assert store.release([first.fence], refund_attempt=False) == [new.workflow_id]
    assert Change("queue", ("rq",)) in rec.changes
    row = store.get_workflow(new.workflow_id)
    assert row is not None and row.status == "ENQUEUED" and row.claim_token is None
    assert row.executor_id is None and row.incarnation is None and row.recovery_attempts == 1
    second = store.claim(claim_req("rq")).claimed[0]
    assert second.may_have_steps and second.row.recovery_attempts == 2
    assert store.release([second.fence], refund_attempt=True) == [new.workflow_id]
    row = store.get_workflow(new.workflow_id)
    assert row is not None and row.recovery_attempts == 1


def test_release_direct_start_goes_to_internal_queue(store: SystemStore) -> None:
    new = new_wf()
    store.insert_workflow(new)
    assert store.release([fence_of(new)], refund_attempt=False) == [new.workflow_id]
    row = store.get_workflow(new.workflow_id)
    assert row is not None and row.queue_name == INTERNAL_QUEUE and row.status == "ENQUEUED"
    assert store.release([], refund_attempt=False) == []


# ---------------------------------------------------------------------------------------------------------------
# Executors
# ---------------------------------------------------------------------------------------------------------------


def test_register_and_supersede(store: SystemStore) -> None:
    first = store.register_executor(registration())
    assert first.incarnation == 1 and first.superseded == [] and not first.previous_lease_valid
    second = store.register_executor(registration())
    assert second.incarnation == 2 and second.superseded == [1] and second.previous_lease_valid
    assert abs(second.db_now_ms - store.now_ms()) < 5_000
    rows = store.list_executors(include_inactive=True)
    assert [(r.executor_id, r.incarnation, r.state) for r in rows] == [
        ("exec-a", 1, "DEAD"),
        ("exec-a", 2, "ALIVE"),
    ]
    live = store.list_executors(include_inactive=False)
    assert [(r.incarnation, r.state) for r in live] == [(2, "ALIVE")]
    r = live[0]
    assert (
        r.hostname == "host" and r.host_identity == "host:boot" and r.pid == 4242 and r.process_start == "123"
    )
    assert r.application_name == "app" and r.application_version == "v1" and r.lease_ms == 60_000
    assert r.lease_expires_at == r.started_at + 60_000 and r.heartbeat_interval_ms == 1_000


def test_heartbeat(store: SystemStore) -> None:
    reg = store.register_executor(registration(lease_ms=50_000))
    hb = store.heartbeat("exec-a", reg.incarnation)
    assert hb.alive and not hb.newer_incarnation_alive
    row = store.list_executors(include_inactive=False)[0]
    assert row.lease_expires_at == row.last_heartbeat_at + 50_000 == hb.db_now_ms + 50_000
    store.register_executor(registration())
    stale = store.heartbeat("exec-a", reg.incarnation)
    assert not stale.alive and stale.newer_incarnation_alive
    assert not store.heartbeat("unknown", 1).alive


def test_find_dead_take_over(store: SystemStore) -> None:
    live = store.register_executor(registration("live"))
    dying = store.register_executor(registration("dying", lease_ms=1))
    idle = store.register_executor(registration("idle", lease_ms=1))  # owns nothing: never a candidate
    w_live = new_wf(owner=("live", live.incarnation, token()), application_name="app")
    w_dead = new_wf(owner=("dying", dying.incarnation, token()), queue_name="tq", application_name="app")
    w_direct = new_wf(owner=("dying", dying.incarnation, token()))
    for w in (w_live, w_dead, w_direct):
        store.insert_workflow(w)
    time.sleep(0.01)
    found = {c.executor.executor_id: c.certain for c in store.find_dead("app")}
    assert found == {"live": False, "dying": True}
    assert idle.incarnation == 1
    assert store.take_over("live", live.incarnation, require_expired=True) == []
    rec = Recorder()
    store.changes.subscribe(rec)
    taken = store.take_over("dying", dying.incarnation, require_expired=True)
    assert sorted(taken) == sorted([w_dead.workflow_id, w_direct.workflow_id])
    assert Change("queue", ("tq",)) in rec.changes and Change("queue", (INTERNAL_QUEUE,)) in rec.changes
    row = store.get_workflow(w_direct.workflow_id)
    assert row is not None and row.status == "ENQUEUED" and row.queue_name == INTERNAL_QUEUE
    assert row.claim_token is None and row.executor_id is None and row.recovery_attempts == 0
    assert store.take_over("dying", dying.incarnation, require_expired=True) == []
    assert not store.heartbeat("dying", dying.incarnation).alive
    # Without require_expired even a live incarnation is taken over (forced recovery).
    assert store.take_over("live", live.incarnation, require_expired=False) == [w_live.workflow_id]
    states = {r.executor_id: r.state for r in store.list_executors(include_inactive=True)}
    assert states == {"live": "DEAD", "dying": "DEAD", "idle": "ALIVE"}


def test_find_dead_scope_and_stopped(store: SystemStore) -> None:
    mine = store.register_executor(registration("mine"))
    other = store.register_executor(registration("other", app="other-app"))
    anon = store.register_executor(registration("anon", app=None))
    for ex_id, reg in (("mine", mine), ("other", other), ("anon", anon)):
        store.insert_workflow(new_wf(owner=(ex_id, reg.incarnation, token())))
    store.mark_stopped("mine", mine.incarnation)
    found = {c.executor.executor_id: c.certain for c in store.find_dead("app")}
    assert found == {"mine": True, "anon": False}
    stopped = [r for r in store.list_executors(include_inactive=True) if r.executor_id == "mine"][0]
    assert stopped.state == "STOPPED" and stopped.stopped_at is not None
    assert [r.executor_id for r in store.list_executors(include_inactive=False)] == ["anon", "other"]


def test_concurrent_take_over_one_winner(store: SystemStore, peer: SystemStore) -> None:
    reg = store.register_executor(registration("gone", lease_ms=1))
    ids = []
    for _ in range(5):
        w = new_wf(owner=("gone", reg.incarnation, token()))
        store.insert_workflow(w)
        ids.append(w.workflow_id)
    time.sleep(0.01)
    results: list[list[str]] = []
    barrier = threading.Barrier(2)

    def run(s: SystemStore) -> None:
        barrier.wait()
        results.append(s.take_over("gone", reg.incarnation, require_expired=True))

    threads = [threading.Thread(target=run, args=(s,)) for s in (store, peer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(len(r) for r in results) == [0, 5]
    winner = results[0] if results[0] else results[1]
    assert sorted(winner) == sorted(ids)


def test_requeue_orphans(store: SystemStore) -> None:
    reg = store.register_executor(registration("known"))
    known = new_wf(owner=("known", reg.incarnation, token()), application_name="app")
    orphan = new_wf(owner=("ghost", 1, token()), application_name="app", queue_name="oq")
    anon = new_wf(owner=("ghost", 2, token()))
    foreign = new_wf(owner=("ghost", 3, token()), application_name="other-app")
    for w in (known, orphan, anon, foreign):
        store.insert_workflow(w)
    assert sorted(store.requeue_orphans("app")) == sorted([orphan.workflow_id, anon.workflow_id])
    assert store.get_states([foreign.workflow_id])[foreign.workflow_id].status == "PENDING"
    assert store.get_states([known.workflow_id])[known.workflow_id].status == "PENDING"
    row = store.get_workflow(orphan.workflow_id)
    assert row is not None and row.status == "ENQUEUED" and row.queue_name == "oq"
    assert store.requeue_orphans("app") == []


# ---------------------------------------------------------------------------------------------------------------
# Change feed
# ---------------------------------------------------------------------------------------------------------------


def _settle(rec: Recorder) -> list[Change]:
    """Changes so far, after echoes from the backend's own feed (harmless duplicates) have arrived."""
    time.sleep(0.3)
    with rec.lock:
        return list(rec.changes)


def test_changes_in_process_after_commit(store: SystemStore) -> None:
    rec = Recorder()
    unsubscribe = store.changes.subscribe(rec)
    store.insert_workflow(new_wf())  # PENDING: no queue change
    new = enqueue(store, "fq")
    assert Change("queue", ("fq",)) in rec.changes  # delivered before the call returned
    seen = _settle(rec)
    assert {c for c in seen if c.kind != "all"} == {Change("queue", ("fq",))}
    # A write that changes nothing, or is rolled back, notifies nobody.
    store.insert_workflow(dataclasses.replace(new, creator_token=token(), name="x"))
    parent = ParentLink(Fence("missing", "t"), step_id=1, step_name="c", write_token=token())
    store.insert_workflow(new_wf(status="ENQUEUED", queue_name="fq"), parent=parent)
    assert _settle(rec) == seen
    unsubscribe()
    enqueue(store, "fq")
    assert _settle(rec) == seen


def test_changes_cross_store(store: SystemStore, peer: SystemStore) -> None:
    rec = Recorder()
    peer.changes.subscribe(rec)
    enqueue(store, "xq")
    assert rec.wait_for(lambda c: c == Change("queue", ("xq",)), timeout=2.0)
    new = new_wf()
    store.insert_workflow(new)
    store.record_outcome(fence_of(new), Outcome("SUCCESS", Payload("1", "json")))
    assert rec.wait_for(lambda c: c == Change("wf", (new.workflow_id,)), timeout=2.0)
    store.register_executor(registration("feed-ex"))
    assert rec.wait_for(lambda c: c == Change("ctl", ("executors",)), timeout=2.0)


def test_subscriber_that_raises_stays_subscribed(store: SystemStore) -> None:
    calls: list[Change] = []

    def bad(change: Change) -> None:
        calls.append(change)
        raise RuntimeError("subscriber bug")

    store.changes.subscribe(bad)
    enqueue(store, "bq")
    enqueue(store, "bq")
    assert len(calls) >= 2


def test_every_protocol_member_is_exercised() -> None:
    """The meta-test of 07 §2.3: each `SystemStore` member is called somewhere in this suite (this file,
    `test_queue_conformance.py` and `test_queue_defs_conformance.py`)."""
    import inspect
    import pathlib

    here = pathlib.Path(__file__)
    others = (
        "test_queue_conformance.py",
        "test_queue_defs_conformance.py",
        "test_management_conformance.py",
        "test_messages_conformance.py",
        "test_streams_conformance.py",
        "test_version_gating_conformance.py",
        "test_versions_conformance.py",
    )
    source = here.read_text() + "".join(here.with_name(name).read_text() for name in others)
    members = [
        name for name, _ in inspect.getmembers(SystemStore, inspect.isfunction) if not name.startswith("_")
    ]
    assert members
    missing = [name for name in members if f".{name}(" not in source]
    assert missing == []
