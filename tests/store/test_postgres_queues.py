"""PostgreSQL-only behaviour of queue claims, deduplication, delayed promotion and queue statistics (03 §7, §8,
§9, §11, §19, §21 rules 4-7; 07 §6.3, §6.4): advisory-lock serialization, SKIP LOCKED, plans that never scan
the backlog, round trips, ambiguous commits and cross-process notifications."""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from conftest import create_pg_database, drop_pg_database, pg_url_for, require_pg
from dbos._store import base
from dbos._store import postgres as pg_module
from dbos._store.base import (
    Change,
    ClaimRequest,
    Fence,
    NewWorkflow,
    Outcome,
    ParentLink,
    Payload,
    RateLimit,
    StoreSettings,
)
from dbos._store.postgres import PostgresStore
from dbos._store.postgres_conn import advisory_key
from dbos._store.postgres_queues import claim_params, claim_shape

# ---------------------------------------------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def pg_url() -> Iterator[str]:
    require_pg()
    name = create_pg_database()
    try:
        yield pg_url_for(name)
    finally:
        drop_pg_database(name)


@pytest.fixture
def opened() -> Iterator[Callable[..., PostgresStore]]:
    stores: list[PostgresStore] = []

    def make(url: str, *, migrate: bool = True, **kw: Any) -> PostgresStore:
        s = PostgresStore(url, StoreSettings(**kw))
        stores.append(s)
        if migrate:
            s.migrate()
        return s

    yield make
    for s in stores:
        s.close()


def token() -> str:
    return secrets.token_hex(16)


def row(
    workflow_id: str | None = None, *, queue: str | None = "q", status: str = "ENQUEUED", **kw: Any
) -> NewWorkflow:
    return NewWorkflow(
        workflow_id=workflow_id or f"wf-{token()}",
        name=kw.pop("name", "wf"),
        class_name=None,
        config_name=None,
        inputs=Payload("[]", "json"),
        receiver=None,
        status=status,  # type: ignore[arg-type]
        owner=("exec-a", 1, token()) if status == "PENDING" else None,
        creator_token=token(),
        queue_name=queue,
        **kw,
    )


def req(queue: str = "q", max_rows: int = 100, **kw: Any) -> ClaimRequest:
    return ClaimRequest(
        queue_name=queue,
        executor_id=kw.pop("executor_id", "exec-a"),
        incarnation=1,
        application_name=None,
        application_version=None,
        registered=frozenset({"wf"}),
        max_rows=max_rows,
        batch_token=token(),
        **kw,
    )


def finish(s: PostgresStore, fences: list[Fence]) -> None:
    for f in fences:
        assert s.record_outcome(f, Outcome("SUCCESS", Payload("1", "json"))).applied


def admin(url: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def bulk_enqueue(url: str, queue: str, key: str | None, n: int, prefix: str) -> None:
    """n ENQUEUED rows at once, bypassing the store (fixture data only)."""
    admin(
        url,
        "INSERT INTO dbos.workflows (workflow_id, status, name, inputs, inputs_serializer, queue_name, "
        "partition_key, creator_token, created_at, updated_at) SELECT %s || i, 'ENQUEUED', 'wf', '[]', 'json', "
        "%s, %s, 't', i, i FROM generate_series(1, %s) i",
        (prefix, queue, key, n),
    )


def generic_plan(url: str, query: str, params: dict[str, Any], *, analyze: bool = True) -> Any:
    """EXPLAIN of the store's statement as the store runs it: prepared, with a generic plan, JIT off. Runs in a
    transaction that is rolled back. Returns the JSON plan."""
    names: list[str] = []

    def number(m: re.Match[str]) -> str:
        if m.group(1) not in names:
            names.append(m.group(1))
        return f"${names.index(m.group(1)) + 1}"

    text = re.sub(r"%\((\w+)\)s", number, query)
    values = [params[n] for n in names]
    options = "-c plan_cache_mode=force_generic_plan -c jit=off"
    with psycopg.connect(url, autocommit=True, options=options, cursor_factory=psycopg.ClientCursor) as conn:
        conn.execute("BEGIN")
        conn.execute("PREPARE p AS " + text)
        args = "(" + ", ".join(["%s"] * len(values)) + ")" if values else ""
        mode = "ANALYZE, BUFFERS, " if analyze else ""
        plan = conn.execute(f"EXPLAIN ({mode}FORMAT JSON) EXECUTE p{args}", values).fetchone()
        conn.execute("ROLLBACK")
    assert plan is not None
    return plan[0][0]["Plan"] if isinstance(plan[0], list) else json.loads(plan[0])[0]["Plan"]


def nodes(plan: Any) -> Iterator[Any]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from nodes(child)


def wait_until(pred: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


# ---------------------------------------------------------------------------------------------------------------
# Advisory-lock serialization and SKIP LOCKED (03 §21 rule 5, 07 §6.4)
# ---------------------------------------------------------------------------------------------------------------


def test_two_stores_eight_threads_never_exceed_global_concurrency(
    pg_url: str, opened: Callable[..., PostgresStore]
) -> None:
    a, b = opened(pg_url, role="tool"), opened(pg_url, role="tool", migrate=False)
    total = 150
    bulk_enqueue(pg_url, "g3", None, total, "g3-")
    claimed: list[str] = []
    over: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def sampler() -> None:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            while not stop.is_set():
                row = conn.execute(
                    "SELECT count(*) FROM dbos.workflows WHERE queue_name = 'g3' AND status = 'PENDING'"
                ).fetchone()
                assert row is not None
                if row[0] > 3:
                    over.append(int(row[0]))

    def worker(s: PostgresStore, n: int) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with lock:
                if len(claimed) >= total:
                    return
            result = s.claim(req("g3", max_rows=2, global_concurrency=3, executor_id=f"ex-{n}"))
            with lock:
                claimed.extend(c.fence.workflow_id for c in result.claimed)
            time.sleep(0.001)
            finish(s, [c.fence for c in result.claimed])

    threads = [threading.Thread(target=worker, args=(a if i % 2 else b, i)) for i in range(8)]
    probe = threading.Thread(target=sampler)
    probe.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    stop.set()
    probe.join(10)
    assert over == []
    assert len(claimed) == total and len(set(claimed)) == total


def test_partitioned_lanes_stay_serial_across_stores(
    pg_url: str, opened: Callable[..., PostgresStore]
) -> None:
    a, b = opened(pg_url, role="tool"), opened(pg_url, role="tool", migrate=False)
    for key in ("a", "b", "c", None):
        bulk_enqueue(pg_url, "lanes", key, 15, f"l-{key}-")
    claimed: list[str] = []
    doubled: list[Any] = []
    lock = threading.Lock()

    def worker(s: PostgresStore, n: int) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with lock:
                if len(claimed) >= 60:
                    return
            result = s.claim(
                req("lanes", max_rows=3, partitioned=True, partition_concurrency=1, executor_id=f"e{n}")
            )
            busy = admin(
                pg_url,
                "SELECT partition_key, count(*) FROM dbos.workflows WHERE queue_name = 'lanes' "
                "AND status = 'PENDING' GROUP BY partition_key HAVING count(*) > 1",
            )
            with lock:
                claimed.extend(c.fence.workflow_id for c in result.claimed)
                doubled.extend(busy)
            finish(s, [c.fence for c in result.claimed])

    threads = [threading.Thread(target=worker, args=(a if i % 2 else b, i)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert doubled == []
    assert len(claimed) == 60 and len(set(claimed)) == 60


def test_shared_budget_claim_waits_for_the_queue_lock(
    pg_url: str, opened: Callable[..., PostgresStore]
) -> None:
    s = opened(pg_url, role="tool")
    s.insert_workflow(row(queue="locked"))
    key = advisory_key("dbos", "claim", "locked")
    done = threading.Event()
    got: list[int] = []

    def claimer() -> None:
        got.append(len(s.claim(req("locked", global_concurrency=3)).claimed))
        done.set()

    with psycopg.connect(pg_url) as holder:  # a transaction of "another process" holds the queue's lock
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
        thread = threading.Thread(target=claimer)
        thread.start()
        assert not done.wait(0.5)
        # An unlimited queue's claim takes no lock: it is not held up.
        s.insert_workflow(row(queue="free"))
        assert len(s.claim(req("free")).claimed) == 1
        holder.rollback()
    assert done.wait(5) and got == [1]
    thread.join(5)


def test_skip_locked_claimers_of_an_unlimited_queue_do_not_block(
    pg_url: str, opened: Callable[..., PostgresStore]
) -> None:
    a, b = opened(pg_url, role="tool"), opened(pg_url, role="tool", migrate=False)
    bulk_enqueue(pg_url, "free", None, 20, "f-")
    with psycopg.connect(pg_url) as other:
        # Another claimer's transaction has locked the first 5 candidates and not committed.
        locked = other.execute(
            "SELECT workflow_id FROM dbos.workflows WHERE queue_name = 'free' AND status = 'ENQUEUED' "
            "ORDER BY priority DESC, seq LIMIT 5 FOR UPDATE"
        ).fetchall()
        start = time.monotonic()
        first = a.claim(req("free", max_rows=5))
        second = b.claim(req("free", max_rows=5))
        elapsed = time.monotonic() - start
        other.rollback()
    mine = {c.fence.workflow_id for c in first.claimed + second.claimed}
    assert elapsed < 2.0
    assert len(mine) == 10 and mine.isdisjoint({r[0] for r in locked})
    # Concurrent claims from many threads never hand out a row twice.
    bulk_enqueue(pg_url, "free2", None, 200, "f2-")
    seen: list[str] = []
    lock = threading.Lock()

    def worker(s: PostgresStore) -> None:
        for _ in range(10):
            result = s.claim(req("free2", max_rows=3))
            with lock:
                seen.extend(c.fence.workflow_id for c in result.claimed)

    threads = [threading.Thread(target=worker, args=(a if i % 2 else b,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert (
        len(seen)
        == len(set(seen))
        == 200
        - admin(
            pg_url, "SELECT count(*) FROM dbos.workflows WHERE queue_name = 'free2' AND status = 'ENQUEUED'"
        )[0][0]
    )


def test_a_locked_lane_head_is_skipped_not_overtaken(
    pg_url: str, opened: Callable[..., PostgresStore]
) -> None:
    s = opened(pg_url, role="tool")
    heads = {}
    for key in ("a", "b"):
        ids = [s.insert_workflow(row(queue="lq", partition_key=key)).workflow_id for _ in range(2)]
        heads[key] = ids
    with psycopg.connect(pg_url) as other:
        other.execute("SELECT 1 FROM dbos.workflows WHERE workflow_id = %s FOR UPDATE", (heads["a"][0],))
        result = s.claim(req("lq", partitioned=True, partition_concurrency=1))
        other.rollback()
    # Lane "a"'s head is locked by someone else: nothing from "a" this time (with PG = 1 its second row must
    # not run first), while lane "b" proceeds.
    assert [c.fence.workflow_id for c in result.claimed] == [heads["b"][0]]
    again = s.claim(req("lq", partitioned=True, partition_concurrency=1))
    assert [c.fence.workflow_id for c in again.claimed] == [heads["a"][0]]


# ---------------------------------------------------------------------------------------------------------------
# Plans: lanes by loose index scan, nothing scales with the backlog (03 §8 rule 6, §21 rule 7)
# ---------------------------------------------------------------------------------------------------------------


def _partitioned_fixture(url: str, big: int) -> None:
    bulk_enqueue(url, "pq", "big", big, "big-")
    for i in range(30):
        bulk_enqueue(url, "pq", f"k{i:02d}", 1, f"k{i:02d}-")
    bulk_enqueue(url, "pq", None, big // 2, "nokey-")
    admin(
        url,
        "INSERT INTO dbos.workflows (workflow_id, status, name, inputs, inputs_serializer, queue_name, "
        "partition_key, creator_token, created_at, updated_at, completed_at) SELECT 'done-' || i, 'SUCCESS', 'wf', "
        "'[]', 'json', 'pq', 'big', 't', i, i, i FROM generate_series(1, 20000) i",
    )
    admin(url, "ANALYZE dbos.workflows")


def test_explain_partitioned_claim_uses_a_loose_index_scan(
    pg_url: str, opened: Callable[..., PostgresStore]
) -> None:
    s = opened(pg_url, role="tool")
    _partitioned_fixture(pg_url, 20_000)
    r = req("pq", max_rows=10, partitioned=True, partition_concurrency=1, global_concurrency=100)
    plan = generic_plan(pg_url, s._qsql.claim(claim_shape(r, prune=False)), claim_params(r))
    all_nodes = list(nodes(plan))
    assert not [
        n for n in all_nodes if n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "workflows"
    ]
    assert any(n["Node Type"] == "Recursive Union" for n in all_nodes)
    # The recursive step seeks the next key: one probe per lane (31 keyed lanes), not one per row.
    seeks = [n for n in all_nodes if "partition_key > lk.k" in n.get("Index Cond", "")]
    assert seeks and all(n["Actual Loops"] <= 32 and n["Actual Rows"] <= 1 for n in seeks)
    # The "no key" lane is read in index order through its `IS NULL` condition.
    null_probes = [n for n in all_nodes if "partition_key IS NULL" in n.get("Index Cond", "")]
    assert any(n.get("Index Name") == "workflows_lane" for n in null_probes)
    # Every workflow index scan reads at most a few rows per loop: no backlog walk.
    for n in all_nodes:
        if n.get("Relation Name") == "workflows" and n["Node Type"] in ("Index Scan", "Index Only Scan"):
            assert n["Actual Rows"] <= 40 and n.get("Rows Removed by Filter", 0) <= 40, n


def test_claim_cost_does_not_grow_with_the_backlog(pg_url: str, opened: Callable[..., PostgresStore]) -> None:
    s = opened(pg_url, role="tool")
    shapes = [
        req("pq", max_rows=10, partitioned=True, partition_concurrency=1),
        req(
            "pq", max_rows=10, partitioned=True, rate=RateLimit(1000, 1000), partition_rate=RateLimit(5, 1000)
        ),
        req("pq", max_rows=10, global_concurrency=50),
    ]

    def blocks(r: ClaimRequest) -> int:
        plan = generic_plan(pg_url, s._qsql.claim(claim_shape(r, prune=False)), claim_params(r))
        return int(plan["Shared Hit Blocks"]) + int(plan.get("Shared Read Blocks", 0))

    _partitioned_fixture(pg_url, 500)
    small = [blocks(r) for r in shapes]
    bulk_enqueue(pg_url, "pq", "big", 30_000, "more-big-")
    bulk_enqueue(pg_url, "pq", None, 30_000, "more-nokey-")
    admin(pg_url, "ANALYZE dbos.workflows")
    large = [blocks(r) for r in shapes]
    for before, after in zip(small, large, strict=True):
        assert after < 2 * before + 50, (small, large)


def test_explain_other_queue_statements(pg_url: str, opened: Callable[..., PostgresStore]) -> None:
    s = opened(pg_url, role="tool")
    _partitioned_fixture(pg_url, 5_000)
    for query, params in (
        (s._qsql.stats_all, {}),
        (s._qsql.stats_one, {"queue_name": "pq"}),
        (s._qsql.promote, {"limit": 1000, "internal": "_x"}),
        (s._sql.claim, claim_params(req("pq", max_rows=10))),
    ):
        plan = generic_plan(pg_url, query, params)
        for n in nodes(plan):
            assert not (n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "workflows"), query
            # Terminal rows (20,000 SUCCESS) are never visited.
            assert n.get("Rows Removed by Filter", 0) < 1000, (query, n)
            assert n["Node Type"] != "Hash Join", query


def test_sessions_run_without_jit(pg_url: str, opened: Callable[..., PostgresStore]) -> None:
    s = opened(pg_url, role="tool")
    with s._pool.connection() as conn:
        assert conn.execute("SELECT current_setting('jit')").fetchone() == ("off",)


# ---------------------------------------------------------------------------------------------------------------
# Round trips, ambiguous commits, vanished dedup holders
# ---------------------------------------------------------------------------------------------------------------


def test_round_trips(pg_url: str, opened: Callable[..., PostgresStore]) -> None:
    s = opened(pg_url, role="tool")

    def trips(fn: Callable[[], Any]) -> int:
        before = s.stats().round_trips
        fn()
        return s.stats().round_trips - before

    assert trips(lambda: s.insert_workflow(row(queue=None, status="PENDING"))) == 1
    assert trips(lambda: s.insert_workflow(row(deduplication_id="D"))) == 1
    assert trips(lambda: s.insert_workflow(row(deduplication_id="D"))) == 2  # refused, then the holder
    for _ in range(3):
        s.insert_workflow(row(queue="rt", partition_key="k"))
    assert trips(lambda: s.claim(req("rt", max_rows=1))) == 1
    assert trips(lambda: s.claim(req("rt", max_rows=1, global_concurrency=5, rate=RateLimit(9, 1000)))) == 1
    assert trips(lambda: s.claim(req("rt", max_rows=1, partitioned=True, partition_concurrency=5))) == 1
    assert trips(lambda: s.promote_delayed()) == 1
    assert trips(lambda: s.queue_stats(None)) == 1


def test_ambiguous_locked_claim_reads_its_batch_back(
    pg_url: str, opened: Callable[..., PostgresStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    s = opened(pg_url, role="tool")
    for _ in range(6):
        s.insert_workflow(row(queue="amb"))
    original = pg_module.run_locked
    fired: list[bool] = []

    def lose_reply(*args: Any) -> Any:
        rows = original(*args)
        if not fired:
            fired.append(True)
            raise psycopg.OperationalError("server closed the connection unexpectedly (simulated)")
        return rows

    monkeypatch.setattr(pg_module, "run_locked", lose_reply)
    r = req("amb", max_rows=4, global_concurrency=10, rate=RateLimit(100, 60_000))
    result = s.claim(r)
    assert fired and len(result.claimed) == 4
    batch = admin(
        pg_url,
        "SELECT workflow_id, claim_token FROM dbos.workflows WHERE status = 'PENDING' AND claim_batch = %s",
        (r.batch_token,),
    )
    assert sorted(batch) == sorted((c.fence.workflow_id, c.fence.claim_token) for c in result.claimed)
    assert admin(pg_url, "SELECT count(*) FROM dbos.queue_claims WHERE queue_name = 'amb'") == [(4,)]
    assert len(s.claim(dataclasses.replace(r, batch_token=token())).claimed) == 2


def test_vanished_dedup_holder_is_retried_then_raises(
    pg_url: str, opened: Callable[..., PostgresStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    s = opened(pg_url, role="tool")
    holder = row("holder", deduplication_id="D")
    s.insert_workflow(holder)
    original = s._all
    lookups: list[int] = []

    def vanish_once(conn: Any, op: str, q: str, params: dict[str, Any], *, write: bool) -> Any:
        if q == s._sql.conflict_rows:
            lookups.append(1)
            if len(lookups) == 1:  # the holder is deleted between the refused insert and the lookup
                admin(pg_url, "DELETE FROM dbos.workflows WHERE workflow_id = 'holder'")
                return []
        return original(conn, op, q, params, write=write)

    monkeypatch.setattr(s, "_all", vanish_once)
    assert s.insert_workflow(row("second", deduplication_id="D")).kind == "created"
    assert lookups == [1]

    def always_vanished(conn: Any, op: str, q: str, params: dict[str, Any], *, write: bool) -> Any:
        if q == s._sql.conflict_rows:
            lookups.append(1)
            return []
        return original(conn, op, q, params, write=write)

    monkeypatch.setattr(s, "_all", always_vanished)
    lookups.clear()
    with pytest.raises(base.UnknownStorageError, match="neither its ID nor its deduplication ID"):
        s.insert_workflow(row("third", deduplication_id="D"))
    assert len(lookups) == 4  # the first attempt and 3 retries


def test_child_dedup_existing_points_the_parent_step_at_the_holder(
    pg_url: str, opened: Callable[..., PostgresStore]
) -> None:
    s = opened(pg_url, role="tool")
    parent = row("parent", queue=None, status="PENDING")
    s.insert_workflow(parent)
    assert parent.owner is not None
    s.insert_workflow(row("holder", deduplication_id="D"))
    before = s.stats().round_trips
    link = ParentLink(Fence("parent", parent.owner[2]), 1, "enqueue", token())
    assert s.insert_workflow(row("child", deduplication_id="D"), parent=link).kind == "dedup_existing"
    assert s.stats().round_trips - before == 3  # insert, holder lookup, re-point + COMMIT
    assert admin(pg_url, "SELECT child_workflow_id FROM dbos.steps WHERE workflow_id = 'parent'") == [
        ("holder",)
    ]
    # Another start's step at the same step ID is a parent conflict and writes nothing.
    other = ParentLink(Fence("parent", parent.owner[2]), 1, "enqueue", token())
    assert s.insert_workflow(row("child2", deduplication_id="D"), parent=other).kind == "parent_conflict"
    # The parent's step is checked before the insert's verdict, as on SQLite (which writes it first).
    rejecting = row("child3", deduplication_id="D", duplication_policy="reject")
    assert s.insert_workflow(rejecting, parent=other).kind == "parent_conflict"
    assert admin(pg_url, "SELECT child_workflow_id FROM dbos.steps WHERE workflow_id = 'parent'") == [
        ("holder",)
    ]


# ---------------------------------------------------------------------------------------------------------------
# Notifications across processes, and claim-log pruning
# ---------------------------------------------------------------------------------------------------------------


def test_queue_notifications_reach_another_process(pg_url: str, opened: Callable[..., PostgresStore]) -> None:
    writer = opened(pg_url, role="tool")
    reader = opened(pg_url, migrate=False)  # an executor: LISTENs
    seen: list[Change] = []
    reader.changes.subscribe(seen.append)
    time.sleep(0.2)
    writer.insert_workflow(row(queue="dq", status="DELAYED", delay_until_ms=writer.now_ms() - 5))
    assert wait_until(lambda: Change("queue", ("dq",)) in seen, 2.0)
    seen.clear()
    assert writer.promote_delayed().promoted
    assert wait_until(lambda: Change("queue", ("dq",)) in seen, 2.0)
    claimed = writer.claim(req("dq")).claimed
    seen.clear()
    assert writer.release([c.fence for c in claimed], refund_attempt=True) == [claimed[0].fence.workflow_id]
    assert wait_until(lambda: Change("queue", ("dq",)) in seen, 2.0)
    seen.clear()
    writer.insert_workflow(row(queue="xq", deduplication_id="D", deadline_ms=writer.now_ms() - 1))
    assert writer.claim(req("xq")).cancelled
    assert wait_until(lambda: Change("queue", ("xq",)) in seen, 2.0)


def test_old_claim_log_rows_are_pruned_at_most_once_a_minute(
    pg_url: str, opened: Callable[..., PostgresStore]
) -> None:
    s = opened(pg_url, role="tool")
    old = s.now_ms() - 86_400_000 - 5_000
    insert_old = "INSERT INTO dbos.queue_claims VALUES ('rl', NULL, %s, 'ancient')"
    admin(pg_url, insert_old, (old,))
    admin(pg_url, "INSERT INTO dbos.queue_claims VALUES ('other', NULL, %s, 'ancient')", (old,))
    for _ in range(2):
        s.insert_workflow(row(queue="rl", partition_key="p"))
    rate = RateLimit(10, 60_000)
    assert len(s.claim(req("rl", max_rows=1, rate=rate)).claimed) == 1
    rows = admin(pg_url, "SELECT queue_name, partition_key, workflow_id FROM dbos.queue_claims ORDER BY 1")
    assert [(q, w) for q, _, w in rows] == [("other", "ancient"), ("rl", rows[1][2])]
    assert rows[1][1] == "p"  # the row's key is recorded even on an unpartitioned queue
    admin(pg_url, insert_old, (old,))
    assert len(s.claim(req("rl", max_rows=1, rate=rate)).claimed) == 1
    assert admin(pg_url, "SELECT count(*) FROM dbos.queue_claims WHERE workflow_id = 'ancient'") == [(2,)]
