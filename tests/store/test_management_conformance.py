"""Conformance of the management methods of the `SystemStore` (02 §3-§7, §10, §11; 07 §2.2-§2.3).

Runs on both backends: `list_workflows` filters, order and paging; cancel, deadline expiry, resume, fork, delete;
GC selection and executor pruning; export / import (also across backends); the maintenance lease; `list_steps`
paging. Rows of tables without protocol writers yet (messages, events, event_history, streams) are written with
raw SQL, and some `created_at` values are set with raw SQL to make orders deterministic.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from store_kit import open_store as _open
from store_kit import token

from conftest import create_pg_database, drop_pg_database, pg_url_for, require_pg
from dbos._store.base import (
    INTERNAL_QUEUE,
    Change,
    ClaimRequest,
    ExecutorRegistration,
    Fence,
    ForkSpec,
    NewStep,
    NewWorkflow,
    Outcome,
    Payload,
    SystemStore,
    WorkflowQuery,
    WorkflowRow,
    Write,
    digest,
    topic_digest,
)
from dbos._store.manage_common import EXPORT_COLUMNS

# ---------------------------------------------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def other_url(backend: str, tmp_path: os.PathLike[str]) -> Iterator[str]:
    """A second, empty database on the same backend (the import target)."""
    if backend == "sqlite":
        yield f"sqlite:///{os.path.join(str(tmp_path), 'other.sqlite')}"
        return
    name = create_pg_database()
    try:
        yield pg_url_for(name)
    finally:
        drop_pg_database(name)


@pytest.fixture
def other(other_url: str) -> Iterator[SystemStore]:
    s = _open(other_url)
    s.migrate()
    yield s
    s.close()


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


def registration(
    executor_id: str, *, lease_ms: int = 60_000, app: str | None = "app"
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


def insert(store: SystemStore, new: NewWorkflow) -> NewWorkflow:
    result = store.insert_workflow(new)
    assert result.kind == "created", result
    return new


def pending(store: SystemStore, workflow_id: str | None = None, **kw: Any) -> NewWorkflow:
    return insert(store, new_wf(workflow_id, **kw))


def enqueued(store: SystemStore, workflow_id: str | None = None, queue: str = "q", **kw: Any) -> NewWorkflow:
    return insert(store, new_wf(workflow_id, status="ENQUEUED", queue_name=queue, **kw))


def delayed(store: SystemStore, workflow_id: str | None = None, queue: str = "q", **kw: Any) -> NewWorkflow:
    until = store.now_ms() + 3_600_000
    return insert(store, new_wf(workflow_id, status="DELAYED", queue_name=queue, delay_until_ms=until, **kw))


def finished(
    store: SystemStore, workflow_id: str | None = None, *, status: str = "SUCCESS", steps: int = 0, **kw: Any
) -> NewWorkflow:
    """A PENDING insert, `steps` checkpoints, then the outcome `status`."""
    new = pending(store, workflow_id, **kw)
    for i in range(1, steps + 1):
        assert store.record_step(fence_of(new), step(i)) is Write.APPLIED
    if status == "SUCCESS":
        outcome = Outcome("SUCCESS", output=Payload('"ok"', "json"))
    elif status == "ERROR":
        outcome = Outcome("ERROR", error=Payload('{"error": "boom"}', "json"))
    else:
        outcome = Outcome("MAX_RECOVERY_ATTEMPTS_EXCEEDED")
    assert store.record_outcome(fence_of(new), outcome).applied
    return new


def row_of(store: SystemStore, workflow_id: str) -> WorkflowRow:
    row = store.get_workflow(workflow_id)
    assert row is not None, workflow_id
    return row


def status_of(store: SystemStore, workflow_id: str) -> str | None:
    return store.get_states([workflow_id])[workflow_id].status


class Recorder:
    def __init__(self) -> None:
        self.changes: list[Change] = []
        self.lock = threading.Lock()

    def __call__(self, change: Change) -> None:
        with self.lock:
            self.changes.append(change)

    def wait_for(self, pred: Callable[[Change], bool], timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if any(pred(c) for c in self.changes):
                    return True
            time.sleep(0.005)
        return False


# --- raw SQL (tables without protocol writers yet) ------------------------------------------------------------


def _is_sqlite(db_url: str) -> bool:
    return db_url.startswith("sqlite:")


def _sqlite_path(db_url: str) -> str:
    return db_url[len("sqlite:///") :]


def raw_exec(
    db_url: str, sql_sqlite: str, sql_pg: str, params: Sequence[Any] = (), *, fetch: bool = False
) -> list[tuple[Any, ...]]:
    """Run one statement on the database behind `db_url` in its own committed transaction."""
    if _is_sqlite(db_url):
        conn = sqlite3.connect(_sqlite_path(db_url), timeout=30)
        try:
            cur = conn.execute(sql_sqlite, tuple(params))
            rows = cur.fetchall() if fetch else []
            conn.commit()
            return [tuple(r) for r in rows]
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(db_url) as pconn:
        pcur = pconn.execute(sql_pg, tuple(params))  # type: ignore[arg-type]
        prows = pcur.fetchall() if fetch else []
        pconn.commit()
        return [tuple(r) for r in prows]


def sql(
    db_url: str, template: str, params: Sequence[Any] = (), *, fetch: bool = False
) -> list[tuple[Any, ...]]:
    """`template` names tables as `{t}name` and uses `?` placeholders; both dialects are derived from it."""
    return raw_exec(
        db_url,
        template.format(t="dbos_"),
        template.format(t="dbos.").replace("?", "%s"),
        params,
        fetch=fetch,
    )


def put_event(db_url: str, wid: str, key: str, value: str, *, updated_at: int = 1_000) -> None:
    sql(
        db_url,
        "INSERT INTO {t}events (workflow_id, key, key_digest, value, serializer, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (wid, key, digest(key), value, "json", updated_at),
    )


def put_history(
    db_url: str, wid: str, step_id: int, key: str, value: str, *, created_at: int = 1_000
) -> None:
    sql(
        db_url,
        "INSERT INTO {t}event_history (workflow_id, step_id, key, key_digest, value, serializer, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (wid, step_id, key, digest(key), value, "json", created_at),
    )


def put_stream(
    db_url: str,
    wid: str,
    key: str,
    offset: int,
    value: str | None,
    *,
    writer_step_id: int,
    is_end: bool = False,
    step_seq: int | None = None,
    created_at: int = 1_000,
) -> None:
    sql(
        db_url,
        "INSERT INTO {t}streams (workflow_id, key, key_digest, stream_offset, value, serializer, is_end,"
        " writer_step_id, step_seq, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            wid,
            key,
            digest(key),
            offset,
            value,
            None if value is None else "json",
            is_end,
            writer_step_id,
            step_seq,
            created_at,
        ),
    )


def put_message(
    db_url: str,
    dest: str,
    payload: str,
    *,
    topic: str | None = None,
    consumed: bool = False,
    created_at: int = 1_000,
    message_id: str | None = None,
) -> str:
    mid = message_id or f"msg-{token()}"
    sql(
        db_url,
        "INSERT INTO {t}messages (message_id, destination_id, topic, topic_digest, payload, serializer, consumed,"
        " consumed_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            mid,
            dest,
            topic,
            topic_digest(topic),
            payload,
            "json",
            consumed,
            created_at + 5 if consumed else None,
            created_at,
        ),
    )
    return mid


def set_created(db_url: str, wid: str, created_at: int) -> None:
    sql(db_url, "UPDATE {t}workflows SET created_at = ? WHERE workflow_id = ?", (created_at, wid))


CHILD_TABLES = {
    "steps": "workflow_id",
    "messages": "destination_id",
    "events": "workflow_id",
    "event_history": "workflow_id",
    "streams": "workflow_id",
    "workflows": "workflow_id",
}


def row_counts(db_url: str, wid: str) -> dict[str, int]:
    """Rows referencing `wid` in each table that holds per-workflow data."""
    out = {}
    for table, col in CHILD_TABLES.items():
        rows = sql(db_url, f"SELECT COUNT(*) FROM {{t}}{table} WHERE {col} = ?", (wid,), fetch=True)
        out[table] = int(rows[0][0])
    return out


def attach_data(db_url: str, wid: str, *, base: int = 1_000) -> None:
    """One message, two events with history, and a closed stream of two values for `wid`."""
    put_message(db_url, wid, '"m1"', topic="t", created_at=base)
    put_history(db_url, wid, 1, "k1", '"v1"', created_at=base)
    put_history(db_url, wid, 2, "k2", '"v2"', created_at=base + 1)
    put_event(db_url, wid, "k1", '"v1"', updated_at=base)
    put_event(db_url, wid, "k2", '"v2"', updated_at=base + 1)
    put_stream(db_url, wid, "s", 0, '"a"', writer_step_id=1, created_at=base)
    put_stream(db_url, wid, "s", 1, '"b"', writer_step_id=2, created_at=base + 1)
    put_stream(db_url, wid, "s", 2, None, writer_step_id=2, is_end=True, created_at=base + 2)


def ids(rows: Sequence[WorkflowRow]) -> list[str]:
    return [r.workflow_id for r in rows]


# ---------------------------------------------------------------------------------------------------------------
# list_workflows
# ---------------------------------------------------------------------------------------------------------------

LIST_BASE = 1_600_000_000_000


def _list_fixture(store: SystemStore, db_url: str) -> list[str]:
    """~27 rows covering every filter of `WorkflowQuery`; returns the IDs in the order given distinct created_at
    values (except the `lw-tie-*` pair, which shares one)."""
    ex1 = lambda: ("ex-1", 1, token())  # noqa: E731
    ex2 = lambda: ("ex-2", 1, token())  # noqa: E731
    made: list[str] = []

    def add(new: NewWorkflow) -> None:
        made.append(new.workflow_id)

    add(
        finished(
            store,
            "lw-s1",
            owner=ex1(),
            authenticated_user="alice",
            application_version="v1",
            application_name="app1",
            inputs=Payload('{"args": [1]}', "json"),
            receiver="recv",
        )
    )
    add(
        finished(
            store,
            "lw-s2",
            name="other",
            owner=ex2(),
            authenticated_user="bob",
            application_version="v2",
            application_name="app2",
        )
    )
    add(
        finished(
            store,
            "lw-e1",
            status="ERROR",
            owner=ex2(),
            authenticated_user="alice",
            application_version="v1",
            application_name="app1",
        )
    )
    add(
        pending(
            store,
            "lw-p1",
            owner=ex1(),
            authenticated_user="bob",
            application_version="v1",
            application_name="app1",
        )
    )
    add(pending(store, "lw-p2", owner=ex2(), application_version="v2"))
    # Claimed from a queue: dequeued_at is set. lw-d1 then finishes, lw-d2 stays PENDING.
    enqueued(store, "lw-d1", "qa", application_version="v1", application_name="app1")
    d1 = store.claim(
        claim_req("qa", executor_id="ex-1", max_rows=1, application_version="v1", application_name="app1")
    )
    assert [c.fence.workflow_id for c in d1.claimed] == ["lw-d1"]
    assert store.record_outcome(d1.claimed[0].fence, Outcome("SUCCESS", Payload('"d"', "json"))).applied
    made.append("lw-d1")
    enqueued(store, "lw-d2", "qb", application_version="v2", authenticated_user="alice")
    d2 = store.claim(claim_req("qb", executor_id="ex-2", max_rows=1, application_version="v2"))
    assert [c.fence.workflow_id for c in d2.claimed] == ["lw-d2"]
    made.append("lw-d2")
    add(enqueued(store, "lw-q1", "qa", application_version="v1", application_name="app1"))
    add(enqueued(store, "lw-q2", "qb", application_version="v2", application_name="app2", name="other"))
    add(delayed(store, "lw-dl", "qa", application_name="app2"))
    add(enqueued(store, "lw-c1", "qb", authenticated_user="bob"))
    add(pending(store, "lw-c2", owner=ex1()))
    assert sorted(store.cancel_workflows(["lw-c1", "lw-c2"], cancel_children=False, reason="user")) == [
        "lw-c1",
        "lw-c2",
    ]
    add(finished(store, "lw-mrae", status="MAX_RECOVERY_ATTEMPTS_EXCEEDED", owner=ex2()))
    add(finished(store, "lw-par", owner=ex1(), application_name="app1"))
    add(finished(store, "lw-par-c1", owner=ex1(), parent_workflow_id="lw-par", application_name="app1"))
    add(pending(store, "lw-par-c2", owner=ex2(), parent_workflow_id="lw-par"))
    add(enqueued(store, "lw-par-c1-g", "qa", parent_workflow_id="lw-par-c1"))
    add(enqueued(store, "lw-sch1", "qa", schedule_name="s1", application_name="app2"))
    add(finished(store, "lw-sch2", schedule_name="s2"))
    add(finished(store, "lw-a%b"))
    add(finished(store, "lw-a_b"))
    add(finished(store, "lw-axb"))
    add(finished(store, "lw-a\\b"))
    assert (
        store.fork_workflow(ForkSpec("lw-s1", "lw-fork", start_step=1, creator_token=token())).kind
        == "created"
    )
    made.append("lw-fork")
    fork2 = ForkSpec("lw-s1", "lw-fork2", start_step=1, creator_token=token(), queue_name="qa")
    assert store.fork_workflow(fork2).kind == "created"
    made.append("lw-fork2")
    add(finished(store, "lw-tie-b"))
    add(finished(store, "lw-tie-a"))
    # Interleave: distinct created_at values in a fixed shuffled order, then a tie.
    order = made[:-2]
    shuffled = order[1::2] + order[0::2]
    for i, wid in enumerate(shuffled):
        set_created(db_url, wid, LIST_BASE + 10 * i)
    tie = LIST_BASE + 10 * (len(shuffled) // 2) + 5  # between two rows, equal to none of them
    set_created(db_url, "lw-tie-b", tie)
    set_created(db_url, "lw-tie-a", tie)
    return made


def _sorted_rows(rows: Sequence[WorkflowRow]) -> list[WorkflowRow]:
    return sorted(rows, key=lambda r: (r.created_at, r.workflow_id))


@pytest.fixture
def listed(store: SystemStore, db_url: str) -> list[WorkflowRow]:
    """The list fixture's rows (read with get_workflow), in (created_at, workflow_id) order."""
    made = _list_fixture(store, db_url)
    assert len(made) == len(set(made)) >= 25
    return _sorted_rows([row_of(store, wid) for wid in made])


def _pred(q: WorkflowQuery) -> Callable[[WorkflowRow], bool]:
    def any_of(values: Sequence[Any] | None, v: Any) -> bool:
        return values is None or v in values

    def within(lo: int | None, hi: int | None, v: int | None) -> bool:
        if lo is None and hi is None:
            return True
        if v is None:
            return False
        return (lo is None or v >= lo) and (hi is None or v <= hi)

    def ok(r: WorkflowRow) -> bool:
        return (
            any_of(q.workflow_ids, r.workflow_id)
            and any_of(q.statuses, r.status)
            and within(q.created_from, q.created_to, r.created_at)
            and within(q.completed_from, q.completed_to, r.completed_at)
            and within(q.dequeued_from, q.dequeued_to, r.dequeued_at)
            and any_of(q.names, r.name)
            and any_of(q.app_versions, r.application_version)
            and any_of(q.users, r.authenticated_user)
            and any_of(q.queue_names, r.queue_name)
            and any_of(q.executor_ids, r.executor_id)
            and any_of(q.forked_from, r.forked_from)
            and any_of(q.parent_workflow_ids, r.parent_workflow_id)
            and (q.id_prefixes is None or any(r.workflow_id.startswith(p) for p in q.id_prefixes))
            and any_of(q.application_names, r.application_name)
            and any_of(q.schedule_names, r.schedule_name)
            and (q.was_forked_from is None or r.was_forked_from == q.was_forked_from)
            and (q.has_parent is None or (r.parent_workflow_id is not None) == q.has_parent)
            and (not q.queues_only or r.queue_name is not None)
        )

    return ok


def test_list_all_rows_match_get_workflow(store: SystemStore, listed: list[WorkflowRow]) -> None:
    got = store.list_workflows(WorkflowQuery())
    assert ids(got) == ids(listed)
    assert got == listed  # every column mapped exactly as get_workflow maps it
    statuses = {r.status for r in listed}
    assert statuses == {"PENDING", "ENQUEUED", "DELAYED", "SUCCESS", "ERROR", "CANCELLED"} | {
        "MAX_RECOVERY_ATTEMPTS_EXCEEDED"
    }


def test_list_each_filter_selects_exactly(store: SystemStore, listed: list[WorkflowRow]) -> None:
    by_id = {r.workflow_id: r for r in listed}
    completed = by_id["lw-s2"].completed_at
    dequeued = by_id["lw-d1"].dequeued_at
    assert completed is not None and dequeued is not None
    mid_lo, mid_hi = listed[5].created_at, listed[15].created_at
    queries = [
        WorkflowQuery(workflow_ids=["lw-s1", "lw-q2", "missing"]),
        WorkflowQuery(statuses=["SUCCESS"]),
        WorkflowQuery(statuses=["PENDING", "CANCELLED"]),
        WorkflowQuery(statuses=["MAX_RECOVERY_ATTEMPTS_EXCEEDED", "DELAYED"]),
        WorkflowQuery(created_from=mid_lo),
        WorkflowQuery(created_to=mid_hi),
        WorkflowQuery(created_from=mid_lo, created_to=mid_hi),
        WorkflowQuery(created_from=mid_lo, created_to=mid_lo),
        WorkflowQuery(completed_from=completed),
        WorkflowQuery(completed_to=completed),
        WorkflowQuery(completed_from=completed, completed_to=completed),
        WorkflowQuery(dequeued_from=dequeued, dequeued_to=dequeued),
        WorkflowQuery(dequeued_from=0),
        WorkflowQuery(names=["other"]),
        WorkflowQuery(app_versions=["v2"]),
        WorkflowQuery(app_versions=["v1", "v2"]),
        WorkflowQuery(users=["alice"]),
        WorkflowQuery(users=["alice", "bob"]),
        WorkflowQuery(queue_names=["qa"]),
        WorkflowQuery(queue_names=["qb", INTERNAL_QUEUE]),
        WorkflowQuery(executor_ids=["ex-1"]),
        WorkflowQuery(executor_ids=["ex-2"]),
        WorkflowQuery(forked_from=["lw-s1"]),
        WorkflowQuery(parent_workflow_ids=["lw-par"]),
        WorkflowQuery(parent_workflow_ids=["lw-par", "lw-par-c1"]),
        WorkflowQuery(id_prefixes=["lw-par"]),
        WorkflowQuery(id_prefixes=["lw-par-c", "lw-tie"]),
        WorkflowQuery(application_names=["app1"]),
        WorkflowQuery(application_names=["app2", "app1"]),
        WorkflowQuery(schedule_names=["s1"]),
        WorkflowQuery(schedule_names=["s1", "s2"]),
        WorkflowQuery(was_forked_from=True),
        WorkflowQuery(was_forked_from=False),
        WorkflowQuery(has_parent=True),
        WorkflowQuery(has_parent=False),
        WorkflowQuery(queues_only=True),
        # ANDed combinations
        WorkflowQuery(statuses=["SUCCESS"], users=["alice"]),
        WorkflowQuery(queue_names=["qa"], statuses=["ENQUEUED"], has_parent=False),
        WorkflowQuery(application_names=["app1"], executor_ids=["ex-1"], app_versions=["v1"]),
        WorkflowQuery(queues_only=True, statuses=["SUCCESS", "PENDING"]),
    ]
    for q in queries:
        expected = [r.workflow_id for r in listed if _pred(q)(r)]
        assert expected, f"fixture gives no row for {q}"
        assert ids(store.list_workflows(q)) == expected, q
    # Each single filter is selective on this fixture (a proper, non-empty subset).
    assert len([r for r in listed if _pred(WorkflowQuery(has_parent=True))(r)]) == 3
    assert [r.workflow_id for r in listed if r.was_forked_from] == ["lw-s1"]


def test_list_forked_and_parent_rows(store: SystemStore, listed: list[WorkflowRow]) -> None:
    forks = store.list_workflows(WorkflowQuery(forked_from=["lw-s1"]))
    assert sorted(ids(forks)) == ["lw-fork", "lw-fork2"]
    assert ids(store.list_workflows(WorkflowQuery(was_forked_from=True))) == ["lw-s1"]
    children = store.list_workflows(WorkflowQuery(parent_workflow_ids=["lw-par"]))
    assert sorted(ids(children)) == ["lw-par-c1", "lw-par-c2"]
    assert sorted(ids(store.list_workflows(WorkflowQuery(has_parent=True)))) == [
        "lw-par-c1",
        "lw-par-c1-g",
        "lw-par-c2",
    ]


def test_list_empty_sequences_match_nothing(store: SystemStore, listed: list[WorkflowRow]) -> None:
    seq_fields = [
        "workflow_ids", "statuses", "names", "app_versions", "users", "queue_names", "executor_ids",
        "forked_from", "parent_workflow_ids", "id_prefixes", "application_names", "schedule_names",
    ]  # fmt: skip
    for f in seq_fields:
        assert store.list_workflows(WorkflowQuery(**{f: []})) == [], f


def test_list_prefixes_are_literal(store: SystemStore, listed: list[WorkflowRow]) -> None:
    def by_prefix(*prefixes: str) -> list[str]:
        return ids(store.list_workflows(WorkflowQuery(id_prefixes=list(prefixes))))

    assert by_prefix("lw-a%") == ["lw-a%b"]
    assert by_prefix("lw-a_") == ["lw-a_b"]
    assert by_prefix("lw-a\\") == ["lw-a\\b"]
    assert by_prefix("lw-a%b") == ["lw-a%b"]
    assert sorted(by_prefix("lw-a")) == sorted(["lw-a%b", "lw-a_b", "lw-axb", "lw-a\\b"])
    assert sorted(by_prefix("lw-a_", "lw-a%")) == sorted(["lw-a_b", "lw-a%b"])
    assert by_prefix("%") == [] and by_prefix("_") == [] and by_prefix("lw-_") == []
    # Literal also means case-sensitive.
    assert by_prefix("LW-") == []


def test_list_time_bounds_inclusive(store: SystemStore, listed: list[WorkflowRow]) -> None:
    r = listed[7]
    exact = store.list_workflows(WorkflowQuery(created_from=r.created_at, created_to=r.created_at))
    assert ids(exact) == [x.workflow_id for x in listed if x.created_at == r.created_at]
    assert r.workflow_id in ids(exact)
    assert (
        store.list_workflows(WorkflowQuery(created_from=r.created_at + 1, created_to=r.created_at - 1)) == []
    )
    done = [x for x in listed if x.completed_at is not None]
    c = done[0].completed_at
    assert c is not None
    got = store.list_workflows(WorkflowQuery(completed_from=c, completed_to=c))
    assert ids(got) == [x.workflow_id for x in listed if x.completed_at == c]
    # A bound excludes rows with a NULL value.
    active = store.list_workflows(WorkflowQuery(completed_to=10**15))
    assert all(x.completed_at is not None for x in active)
    assert ids(active) == [x.workflow_id for x in done]


def test_list_order_and_tiebreak(store: SystemStore, listed: list[WorkflowRow]) -> None:
    asc = ids(store.list_workflows(WorkflowQuery()))
    desc = ids(store.list_workflows(WorkflowQuery(sort_desc=True)))
    assert asc == ids(listed) and desc == list(reversed(asc))
    # The tie: same created_at, ordered by workflow_id.
    assert asc.index("lw-tie-a") + 1 == asc.index("lw-tie-b")
    assert desc.index("lw-tie-b") + 1 == desc.index("lw-tie-a")


@pytest.mark.parametrize("sort_desc", [False, True])
def test_list_after_paging_returns_each_row_once(
    store: SystemStore, listed: list[WorkflowRow], sort_desc: bool
) -> None:
    full = ids(store.list_workflows(WorkflowQuery(sort_desc=sort_desc)))
    seen: list[str] = []
    after: tuple[int, str] | None = None
    for _ in range(100):
        page = store.list_workflows(WorkflowQuery(limit=4, after=after, sort_desc=sort_desc))
        if not page:
            break
        assert len(page) <= 4
        seen.extend(ids(page))
        after = (page[-1].created_at, page[-1].workflow_id)
    assert seen == full
    # Paging with a filter
    q = WorkflowQuery(statuses=["SUCCESS", "ENQUEUED"], sort_desc=sort_desc)
    filtered = ids(store.list_workflows(q))
    first = store.list_workflows(dataclasses.replace(q, limit=3))
    rest = store.list_workflows(dataclasses.replace(q, after=(first[-1].created_at, first[-1].workflow_id)))
    assert ids(first) + ids(rest) == filtered
    # `after` on the tie: strictly after it in the order.
    tie_a = next(r for r in listed if r.workflow_id == "lw-tie-a")
    nxt = store.list_workflows(
        WorkflowQuery(limit=1, after=(tie_a.created_at, "lw-tie-a"), sort_desc=sort_desc)
    )
    expected = full[full.index("lw-tie-a") + 1 : full.index("lw-tie-a") + 2]
    assert ids(nxt) == expected


def test_list_limit_offset(store: SystemStore, listed: list[WorkflowRow]) -> None:
    full = ids(listed)
    assert ids(store.list_workflows(WorkflowQuery(limit=5))) == full[:5]
    assert ids(store.list_workflows(WorkflowQuery(limit=5, offset=3))) == full[3:8]
    assert ids(store.list_workflows(WorkflowQuery(offset=len(full) - 2))) == full[-2:]
    assert store.list_workflows(WorkflowQuery(limit=0)) == []
    assert store.list_workflows(WorkflowQuery(offset=len(full))) == []
    rev = list(reversed(full))
    assert ids(store.list_workflows(WorkflowQuery(limit=4, offset=2, sort_desc=True))) == rev[2:6]


def test_list_load_flags(store: SystemStore, listed: list[WorkflowRow]) -> None:
    loaded = {r.workflow_id: r for r in store.list_workflows(WorkflowQuery())}
    assert loaded["lw-s1"].inputs == Payload('{"args": [1]}', "json")
    assert loaded["lw-s1"].output == Payload('"ok"', "json")
    assert loaded["lw-e1"].error == Payload('{"error": "boom"}', "json")
    for load_input, load_output in ((False, True), (True, False), (False, False)):
        rows = store.list_workflows(WorkflowQuery(load_input=load_input, load_output=load_output))
        assert ids(rows) == ids(listed)
        for r in rows:
            if not load_input:
                assert r.inputs is None, r.workflow_id
            else:
                assert r.inputs is not None
            if not load_output:
                assert r.output is None and r.error is None, r.workflow_id
            # Same projection as get_workflow with the same flags.
            assert r == store.get_workflow(r.workflow_id, load_input=load_input, load_output=load_output)


# ---------------------------------------------------------------------------------------------------------------
# cancel_workflows
# ---------------------------------------------------------------------------------------------------------------


def test_cancel_workflows_statuses(store: SystemStore) -> None:
    p = pending(store, "c-pending")
    e = enqueued(store, "c-enqueued", "cq", deduplication_id="dd", partition_key="lane")
    d = delayed(store, "c-delayed", "cq")
    m = finished(store, "c-mrae", status="MAX_RECOVERY_ATTEMPTS_EXCEEDED")
    s = finished(store, "c-success")
    err = finished(store, "c-error", status="ERROR")
    success_before = row_of(store, s.workflow_id)
    error_before = row_of(store, err.workflow_id)
    listed = [
        p.workflow_id,
        e.workflow_id,
        "unknown",
        d.workflow_id,
        m.workflow_id,
        s.workflow_id,
        err.workflow_id,
    ]
    changed = store.cancel_workflows(listed, cancel_children=False, reason="user")
    assert sorted(changed) == sorted([p.workflow_id, e.workflow_id, d.workflow_id, m.workflow_id])
    assert len(changed) == 4
    for wid in changed:
        r = row_of(store, wid)
        assert r.status == "CANCELLED" and r.cancel_reason == "user" and r.completed_at is not None, wid
    # Queue, partition key and deduplication binding stay.
    er = row_of(store, e.workflow_id)
    assert er.queue_name == "cq" and er.partition_key == "lane" and er.deduplication_id == "dd"
    again = store.insert_workflow(new_wf(status="ENQUEUED", queue_name="cq", deduplication_id="dd"))
    assert again.kind == "dedup_existing" and again.workflow_id == e.workflow_id
    # The claim token is kept.
    assert row_of(store, p.workflow_id).claim_token == fence_of(p).claim_token
    # SUCCESS / ERROR unchanged, including completed_at.
    assert row_of(store, s.workflow_id) == success_before
    assert row_of(store, err.workflow_id) == error_before
    # Already cancelled: nothing changes, nothing returned.
    cancelled_row = row_of(store, p.workflow_id)
    assert store.cancel_workflows([p.workflow_id, "unknown"], cancel_children=False, reason="user") == []
    assert row_of(store, p.workflow_id) == cancelled_row
    assert store.cancel_workflows([], cancel_children=True, reason="user") == []


def test_cancel_keeps_fence_for_steps_not_outcome(store: SystemStore) -> None:
    p = pending(store)
    f = fence_of(p)
    assert store.record_step(f, step(1)) is Write.APPLIED
    assert store.cancel_workflows([p.workflow_id], cancel_children=False, reason="user") == [p.workflow_id]
    # A sync step finishing after the cancel still records its checkpoint ...
    assert store.record_step(f, step(2)) is Write.APPLIED
    assert [s.step_id for s in store.list_steps(p.workflow_id)] == [1, 2]
    # ... but no outcome is recorded.
    result = store.record_outcome(f, Outcome("SUCCESS", Payload("1", "json")))
    assert not result.applied and result.status == "CANCELLED"
    assert row_of(store, p.workflow_id).output is None


def test_cancel_reason_deadline(store: SystemStore) -> None:
    e = enqueued(store)
    assert store.cancel_workflows([e.workflow_id], cancel_children=False, reason="deadline") == [
        e.workflow_id
    ]
    r = row_of(store, e.workflow_id)
    assert r.status == "CANCELLED" and r.cancel_reason == "deadline"


def _tree(store: SystemStore, prefix: str, *, child_status: str = "PENDING") -> list[str]:
    """root -> child -> grandchild, plus a SUCCESS child of the root and an unrelated root."""
    root = pending(store, f"{prefix}-root")
    if child_status == "PENDING":
        child = pending(store, f"{prefix}-child", parent_workflow_id=root.workflow_id)
    else:
        child = enqueued(store, f"{prefix}-child", "tq", parent_workflow_id=root.workflow_id)
    grand = delayed(store, f"{prefix}-grand", "tq", parent_workflow_id=child.workflow_id)
    finished(store, f"{prefix}-done", parent_workflow_id=root.workflow_id)
    pending(store, f"{prefix}-other")
    return [root.workflow_id, child.workflow_id, grand.workflow_id]


def test_cancel_children_three_levels(store: SystemStore) -> None:
    tree = _tree(store, "ct")
    changed = store.cancel_workflows([tree[0]], cancel_children=True, reason="user")
    assert sorted(changed) == sorted(tree)
    for wid in tree:
        assert status_of(store, wid) == "CANCELLED"
        assert row_of(store, wid).cancel_reason == "user"
    assert status_of(store, "ct-done") == "SUCCESS"
    assert status_of(store, "ct-other") == "PENDING"
    # Starting from the middle cancels only that subtree.
    tree2 = _tree(store, "cm", child_status="ENQUEUED")
    assert sorted(store.cancel_workflows([tree2[1]], cancel_children=True, reason="user")) == sorted(
        tree2[1:]
    )
    assert status_of(store, tree2[0]) == "PENDING"


def test_cancel_without_children_flag(store: SystemStore) -> None:
    tree = _tree(store, "cn")
    assert store.cancel_workflows([tree[0]], cancel_children=False, reason="user") == [tree[0]]
    assert status_of(store, tree[1]) == "PENDING" and status_of(store, tree[2]) == "DELAYED"


def test_cancel_emits_changes_in_process_and_cross_store(store: SystemStore, peer: SystemStore) -> None:
    p = pending(store)
    e = enqueued(store, queue="eq")
    rec = Recorder()
    store.changes.subscribe(rec)
    remote = Recorder()
    peer.changes.subscribe(remote)
    time.sleep(0.1)  # let the peer's listener settle
    changed = store.cancel_workflows([p.workflow_id, e.workflow_id], cancel_children=False, reason="user")
    assert sorted(changed) == sorted([p.workflow_id, e.workflow_id])
    for wid in changed:  # in-process subscribers are called before the call returns
        assert Change("cancel", (wid,)) in rec.changes
        assert Change("wf", (wid,)) in rec.changes
    assert Change("queue", ("eq",)) in rec.changes
    for wid in changed:
        for kind in ("cancel", "wf"):
            want = Change(kind, (wid,))  # type: ignore[arg-type]
            assert remote.wait_for(lambda c, want=want: c == want), want


def test_cancel_children_through_terminal_parent(store: SystemStore) -> None:
    """Descendants are found through every row of the tree, terminal intermediate rows included."""
    pending(store, "cx-root")
    finished(store, "cx-mid", parent_workflow_id="cx-root")
    pending(store, "cx-leaf", parent_workflow_id="cx-mid")
    enqueued(store, "cx-leaf2", "cxq", parent_workflow_id="cx-leaf")
    changed = store.cancel_workflows(["cx-root"], cancel_children=True, reason="user")
    assert sorted(changed) == ["cx-leaf", "cx-leaf2", "cx-root"]
    assert status_of(store, "cx-mid") == "SUCCESS"
    # Listing a terminal row with cancel_children still cancels its active descendants.
    pending(store, "cy-root")
    finished(store, "cy-mid", parent_workflow_id="cy-root")
    pending(store, "cy-leaf", parent_workflow_id="cy-mid")
    assert store.cancel_workflows(["cy-mid"], cancel_children=True, reason="user") == ["cy-leaf"]
    assert status_of(store, "cy-root") == "PENDING"


# ---------------------------------------------------------------------------------------------------------------
# cancel_expired / next_deadline
# ---------------------------------------------------------------------------------------------------------------


def test_cancel_expired_and_next_deadline(store: SystemStore) -> None:
    now = store.now_ms()
    assert store.next_deadline(None) is None
    exp_pending = pending(store, "x-pending", deadline_ms=now - 5, application_name="app1")
    exp_enqueued = enqueued(store, "x-enqueued", "xq", deadline_ms=now - 3)  # no application
    exp_delayed = delayed(store, "x-delayed", "xq", deadline_ms=now - 1, application_name="app2")
    future = enqueued(store, "x-future", "xq", deadline_ms=now + 60_000, application_name="app1")
    future2 = enqueued(store, "x-future2", "xq", deadline_ms=now + 120_000, application_name="app2")
    timed = insert(
        store,
        new_wf("x-timed", timeout_ms=1, deadline_from_now=True, application_name="app1", recovery_attempts=1),
    )
    # Terminal rows with a past deadline are not touched.
    done = pending(store, "x-done", deadline_ms=now - 10, application_name="app1")
    assert store.record_outcome(fence_of(done), Outcome("SUCCESS", Payload("1", "json"))).applied
    plain = enqueued(store, "x-plain", "xq", application_name="app1")
    time.sleep(0.02)
    timed_deadline = row_of(store, timed.workflow_id).deadline_ms
    assert timed_deadline is not None

    # Scope: the application's rows and rows of none.
    assert store.next_deadline("app1") == min(now - 5, now - 3, timed_deadline)
    assert store.next_deadline("app2") == now - 3
    assert store.next_deadline(None) == now - 5

    rec = Recorder()
    store.changes.subscribe(rec)
    cancelled = store.cancel_expired("app1")
    assert sorted(cancelled) == sorted([exp_pending.workflow_id, exp_enqueued.workflow_id, timed.workflow_id])
    for wid in cancelled:
        r = row_of(store, wid)
        assert r.status == "CANCELLED" and r.cancel_reason == "deadline" and r.completed_at is not None
        assert Change("cancel", (wid,)) in rec.changes and Change("wf", (wid,)) in rec.changes
    assert Change("queue", ("xq",)) in rec.changes
    assert status_of(store, exp_delayed.workflow_id) == "DELAYED"
    assert status_of(store, future.workflow_id) == "ENQUEUED"
    assert status_of(store, plain.workflow_id) == "ENQUEUED"
    assert status_of(store, done.workflow_id) == "SUCCESS"
    assert store.next_deadline("app1") == future.deadline_ms
    assert store.next_deadline("app2") == now - 1
    assert store.cancel_expired("app1") == []

    assert store.cancel_expired(None) == [exp_delayed.workflow_id]
    assert row_of(store, exp_delayed.workflow_id).cancel_reason == "deadline"
    assert store.next_deadline(None) == future.deadline_ms
    assert store.next_deadline("app2") == future2.deadline_ms
    assert store.next_deadline("other-app") is None
    assert store.cancel_expired(None) == []


def test_cancel_expired_limit(store: SystemStore) -> None:
    now = store.now_ms()
    made = [enqueued(store, deadline_ms=now - 1 - i).workflow_id for i in range(3)]
    first = store.cancel_expired(None, limit=2)
    assert len(first) == 2 and set(first) <= set(made)
    second = store.cancel_expired(None, limit=2)
    assert len(second) == 1 and set(first) | set(second) == set(made)
    assert store.next_deadline(None) is None


# ---------------------------------------------------------------------------------------------------------------
# resume_workflows
# ---------------------------------------------------------------------------------------------------------------


def test_resume_cancelled_clears_and_keeps_dedup(store: SystemStore) -> None:
    now = store.now_ms()
    new = enqueued(store, "r-c", "rq", deduplication_id="rd", timeout_ms=5_000, deadline_ms=now + 60_000)
    claimed = store.claim(claim_req("rq", max_rows=1))
    assert [c.fence.workflow_id for c in claimed.claimed] == [new.workflow_id]
    assert store.cancel_workflows([new.workflow_id], cancel_children=False, reason="user") == [
        new.workflow_id
    ]
    before = row_of(store, new.workflow_id)
    assert (
        before.dequeued_at is not None and before.recovery_attempts == 1 and before.completed_at is not None
    )

    rec = Recorder()
    store.changes.subscribe(rec)
    result = store.resume_workflows([new.workflow_id], queue_name=None)
    assert result.missing is None and result.resumed == [new.workflow_id]
    r = row_of(store, new.workflow_id)
    assert r.status == "ENQUEUED" and r.queue_name == INTERNAL_QUEUE and r.recovery_attempts == 0
    assert r.deadline_ms is None and r.cancel_reason is None and r.completed_at is None
    assert r.dequeued_at is None and r.delay_until_ms is None and r.output is None and r.error is None
    assert r.executor_id is None and r.incarnation is None and r.claim_token is None
    assert r.deduplication_id == "rd" and r.timeout_ms == 5_000
    assert (
        Change("queue", (INTERNAL_QUEUE,)) in rec.changes and Change("wf", (new.workflow_id,)) in rec.changes
    )
    # The binding stays on the queue it was made on.
    dup = store.insert_workflow(new_wf(status="ENQUEUED", queue_name="rq", deduplication_id="rd"))
    assert dup.kind == "dedup_existing" and dup.workflow_id == new.workflow_id
    # And the resumed row can be claimed from the internal queue.
    again = store.claim(claim_req(INTERNAL_QUEUE))
    assert [c.fence.workflow_id for c in again.claimed] == [new.workflow_id]


def test_resume_statuses_and_queue(store: SystemStore) -> None:
    m = finished(store, "r-mrae", status="MAX_RECOVERY_ATTEMPTS_EXCEEDED", recovery_attempts=1)
    e = enqueued(store, "r-enq", "blocked")
    d = delayed(store, "r-del", "blocked")
    s = finished(store, "r-success")
    err = finished(store, "r-error", status="ERROR")
    s_before, err_before = row_of(store, s.workflow_id), row_of(store, err.workflow_id)
    listed = [d.workflow_id, s.workflow_id, m.workflow_id, err.workflow_id, e.workflow_id]
    result = store.resume_workflows(listed, queue_name="other")
    assert result.missing is None
    assert result.resumed == [d.workflow_id, m.workflow_id, e.workflow_id]  # input order
    for wid in result.resumed:
        r = row_of(store, wid)
        assert r.status == "ENQUEUED" and r.queue_name == "other" and r.recovery_attempts == 0, wid
        assert r.delay_until_ms is None and r.completed_at is None and r.claim_token is None
    assert row_of(store, s.workflow_id) == s_before
    assert row_of(store, err.workflow_id) == err_before


def test_resume_missing_changes_nothing(store: SystemStore) -> None:
    c = enqueued(store)
    store.cancel_workflows([c.workflow_id], cancel_children=False, reason="user")
    before = row_of(store, c.workflow_id)
    result = store.resume_workflows([c.workflow_id, "nope", "nope2"], queue_name=None)
    assert result.missing == "nope" and result.resumed == []
    assert row_of(store, c.workflow_id) == before
    assert store.resume_workflows([], queue_name=None).resumed == []


def test_resume_pending_by_owner_liveness(store: SystemStore) -> None:
    live = store.register_executor(registration("live"))
    stopped = store.register_executor(registration("stopper"))
    store.mark_stopped("stopper", stopped.incarnation)
    p_live = pending(store, "r-live", owner=("live", live.incarnation, token()), recovery_attempts=1)
    p_stopped = pending(
        store,
        "r-stopped",
        owner=("stopper", stopped.incarnation, token()),
        queue_name="sq",
        recovery_attempts=1,
    )
    p_ghost = pending(store, "r-ghost", owner=("ghost", 9, token()), recovery_attempts=1)
    live_before = row_of(store, p_live.workflow_id)
    result = store.resume_workflows(
        [p_live.workflow_id, p_stopped.workflow_id, p_ghost.workflow_id], queue_name=None
    )
    assert result.missing is None
    assert result.resumed == [p_stopped.workflow_id, p_ghost.workflow_id]
    assert row_of(store, p_live.workflow_id) == live_before
    rs = row_of(store, p_stopped.workflow_id)
    assert rs.status == "ENQUEUED" and rs.queue_name == "sq" and rs.recovery_attempts == 0
    assert rs.claim_token is None and rs.executor_id is None and rs.incarnation is None
    rg = row_of(store, p_ghost.workflow_id)
    assert rg.status == "ENQUEUED" and rg.queue_name == INTERNAL_QUEUE and rg.recovery_attempts == 0
    # The old fence no longer applies.
    assert store.record_step(fence_of(p_stopped), step(1)) is Write.FENCED


def test_resume_pending_of_lease_expired_owner(store: SystemStore) -> None:
    reg = store.register_executor(registration("lapsed", lease_ms=1))
    p = pending(
        store, "r-lapsed", owner=("lapsed", reg.incarnation, token()), queue_name="lq", recovery_attempts=2
    )
    time.sleep(0.02)
    rec = Recorder()
    store.changes.subscribe(rec)
    result = store.resume_workflows([p.workflow_id], queue_name="ignored-for-pending")
    assert result.missing is None and result.resumed == [p.workflow_id]
    r = row_of(store, p.workflow_id)
    assert r.status == "ENQUEUED" and r.queue_name == "lq" and r.recovery_attempts == 0
    assert r.claim_token is None and r.executor_id is None
    assert Change("queue", ("lq",)) in rec.changes and Change("wf", (p.workflow_id,)) in rec.changes


# ---------------------------------------------------------------------------------------------------------------
# fork_workflow
# ---------------------------------------------------------------------------------------------------------------


def _fork_source(store: SystemStore, db_url: str) -> NewWorkflow:
    src = pending(
        store,
        "f-src",
        class_name="C",
        config_name="cfg",
        inputs=Payload('{"args": [1, 2]}', "pickle"),
        receiver="recv",
        authenticated_user="alice",
        authenticated_roles=["admin", "user"],
        assumed_role="admin",
        application_name="app",
        application_version="v1",
        queue_name="q0",
        priority=5,
        deduplication_id="fd",
        timeout_ms=9_000,
        deadline_from_now=True,
        parent_workflow_id="f-parent",
        schedule_name="sched",
    )
    f = fence_of(src)
    assert store.record_step(f, step(1, output='"one"')) is Write.APPLIED
    assert (
        store.record_step(f, step(2, output=None, name="child", child_workflow_id="old-child"))
        is Write.APPLIED
    )
    assert (
        store.record_step(f, step(3, output=None, name="child2", child_workflow_id="kept-child"))
        is Write.APPLIED
    )
    assert store.record_step(f, step(4, output=None, error=Payload('"bad"', "json"))) is Write.APPLIED
    assert store.record_outcome(f, Outcome("SUCCESS", Payload('"done"', "json"))).applied
    put_history(db_url, "f-src", 1, "k1", '"a"', created_at=11)
    put_history(db_url, "f-src", 2, "k2", '"b"', created_at=12)
    put_history(db_url, "f-src", 3, "k1", '"c"', created_at=13)
    put_history(db_url, "f-src", 4, "k3", '"d"', created_at=14)
    put_event(db_url, "f-src", "k1", '"c"', updated_at=13)
    put_event(db_url, "f-src", "k2", '"b"', updated_at=12)
    put_event(db_url, "f-src", "k3", '"d"', updated_at=14)
    put_stream(db_url, "f-src", "s", 0, '"x0"', writer_step_id=1, step_seq=0, created_at=21)
    put_stream(db_url, "f-src", "s", 1, '"x1"', writer_step_id=2, step_seq=0, created_at=22)
    put_stream(db_url, "f-src", "s", 2, '"x2"', writer_step_id=3, step_seq=0, created_at=23)
    put_stream(db_url, "f-src", "s", 3, None, writer_step_id=4, is_end=True, created_at=24)
    put_stream(db_url, "f-src", "t", 0, '"y0"', writer_step_id=1, created_at=25)
    put_message(db_url, "f-src", '"msg"', topic="topic")
    return src


def _export_one(store: SystemStore, wid: str) -> dict[str, Any]:
    bundle = store.export_workflows([wid], include_children=False)
    assert len(bundle) == 1 and bundle[0]["status"]["workflow_id"] == wid
    return bundle[0]


def test_fork_created_copies(store: SystemStore, db_url: str) -> None:
    _fork_source(store, db_url)
    src_before = row_of(store, "f-src")
    assert not src_before.was_forked_from
    rec = Recorder()
    store.changes.subscribe(rec)
    ctok = token()
    spec = ForkSpec(
        "f-src",
        "f-new",
        start_step=3,
        creator_token=ctok,
        application_version="v2",
        replacement_children={"old-child": "new-child", "unused": "x"},
        timeout_ms=1_234,
    )
    result = store.fork_workflow(spec)
    assert result.kind == "created" and result.workflow_id == "f-new"
    assert Change("queue", (INTERNAL_QUEUE,)) in rec.changes
    r = row_of(store, "f-new")
    assert r.status == "ENQUEUED" and r.queue_name == INTERNAL_QUEUE and r.partition_key is None
    assert r.forked_from == "f-src" and not r.was_forked_from
    assert (r.name, r.class_name, r.config_name) == ("wf", "C", "cfg")
    assert r.inputs == Payload('{"args": [1, 2]}', "pickle") and r.receiver == "recv"
    assert r.authenticated_user == "alice" and r.authenticated_roles == ["admin", "user"]
    assert r.assumed_role == "admin" and r.application_name == "app"
    assert r.application_version == "v2" and r.timeout_ms == 1_234
    assert r.deadline_ms is None and r.deduplication_id is None and r.priority == 0
    assert r.parent_workflow_id is None and r.recovery_attempts == 0
    assert r.output is None and r.error is None and r.completed_at is None and r.claim_token is None
    src_after = row_of(store, "f-src")
    assert src_after.was_forked_from
    assert dataclasses.replace(src_after, was_forked_from=False, updated_at=0) == dataclasses.replace(
        src_before, updated_at=0
    )

    steps = store.list_steps("f-new")
    src_steps = {s.step_id: s for s in store.list_steps("f-src")}
    assert [s.step_id for s in steps] == [1, 2]
    assert steps[0].output == Payload('"one"', "json") and steps[0].name == "step1"
    assert steps[1].child_workflow_id == "new-child" and steps[1].name == "child"
    for s in steps:
        assert s.write_token == src_steps[s.step_id].write_token
        assert (s.started_at, s.completed_at) == (
            src_steps[s.step_id].started_at,
            src_steps[s.step_id].completed_at,
        )

    entry = _export_one(store, "f-new")
    st = entry["status"]
    assert st["steps_seeded"] is True and st["creator_token"] == ctok
    assert st["inputs_serializer"] == "pickle" and st["dedup_queue"] is None
    hist = [(h["step_id"], h["key"], h["value"]) for h in entry["event_history"]]
    assert sorted(hist) == [(1, "k1", '"a"'), (2, "k2", '"b"')]
    events = {e["key"]: e["value"] for e in entry["events"]}
    assert events == {"k1": '"a"', "k2": '"b"'}
    streams = sorted(
        (s["key"], s["stream_offset"], s["value"], s["writer_step_id"]) for s in entry["streams"]
    )
    assert streams == [("s", 0, '"x0"', 1), ("s", 1, '"x1"', 2), ("t", 0, '"y0"', 1)]
    assert entry["messages"] == []


def test_fork_beyond_last_step_and_queue(store: SystemStore, db_url: str) -> None:
    _fork_source(store, db_url)
    spec = ForkSpec(
        "f-src", "f-all", start_step=99, creator_token=token(), queue_name="fq", partition_key="p1"
    )
    assert store.fork_workflow(spec).kind == "created"
    r = row_of(store, "f-all")
    assert r.status == "ENQUEUED" and r.queue_name == "fq" and r.partition_key == "p1"
    assert r.application_version is None and r.timeout_ms is None
    steps = store.list_steps("f-all")
    assert [s.step_id for s in steps] == [1, 2, 3, 4]
    assert steps[1].child_workflow_id == "old-child" and steps[2].child_workflow_id == "kept-child"
    assert steps[3].error == Payload('"bad"', "json")
    entry = _export_one(store, "f-all")
    src = _export_one(store, "f-src")
    assert entry["event_history"] == src["event_history"]
    assert {e["key"]: e["value"] for e in entry["events"]} == {"k1": '"c"', "k2": '"b"', "k3": '"d"'}
    assert entry["streams"] == src["streams"]
    assert entry["messages"] == [] and len(src["messages"]) == 1

    # start_step=1 copies nothing.
    assert (
        store.fork_workflow(ForkSpec("f-src", "f-none", start_step=1, creator_token=token())).kind
        == "created"
    )
    assert store.list_steps("f-none") == []
    none = _export_one(store, "f-none")
    assert none["events"] == [] and none["event_history"] == [] and none["streams"] == []


def test_fork_existing_conflict_missing(store: SystemStore, db_url: str) -> None:
    _fork_source(store, db_url)
    other_src = finished(store, "f-src2")
    unrelated = finished(store, "f-unrelated")
    spec = ForkSpec("f-src", "f-one", start_step=2, creator_token=token())
    assert store.fork_workflow(spec).kind == "created"
    # Claim it so that a second fork would be visible if it wrote anything.
    claimed = store.claim(claim_req(INTERNAL_QUEUE, application_name="app"))
    assert [c.fence.workflow_id for c in claimed.claimed] == ["f-one"]
    before = row_of(store, "f-one")
    again = store.fork_workflow(dataclasses.replace(spec, start_step=4, creator_token=token()))
    assert again.kind == "existing" and again.workflow_id == "f-one"
    assert row_of(store, "f-one") == before and [s.step_id for s in store.list_steps("f-one")] == [1]

    conflict = store.fork_workflow(
        ForkSpec(other_src.workflow_id, "f-one", start_step=1, creator_token=token())
    )
    assert conflict.kind == "id_conflict"
    unrelated_before = row_of(store, unrelated.workflow_id)
    onto = store.fork_workflow(ForkSpec("f-src", unrelated.workflow_id, start_step=1, creator_token=token()))
    assert onto.kind == "id_conflict"
    assert row_of(store, unrelated.workflow_id) == unrelated_before
    assert not row_of(store, other_src.workflow_id).was_forked_from

    missing = store.fork_workflow(ForkSpec("no-such", "f-orphan", start_step=1, creator_token=token()))
    assert missing.kind == "source_missing"
    assert store.get_workflow("f-orphan") is None


def test_fork_of_pending_source(store: SystemStore) -> None:
    src = pending(store, "fp-src", application_version="v1", queue_name="pq", partition_key="lane")
    assert store.record_step(fence_of(src), step(1)) is Write.APPLIED
    assert store.record_step(fence_of(src), step(2)) is Write.APPLIED
    spec = ForkSpec(
        "fp-src", "fp-new", start_step=2, creator_token=token(), queue_name="pq", partition_key="p9"
    )
    assert store.fork_workflow(spec).kind == "created"
    r = row_of(store, "fp-new")
    assert r.status == "ENQUEUED" and r.queue_name == "pq" and r.partition_key == "p9"
    assert r.application_version is None
    assert [s.step_id for s in store.list_steps("fp-new")] == [1]
    # The source keeps running: its fence still applies.
    src_row = row_of(store, "fp-src")
    assert src_row.status == "PENDING" and src_row.was_forked_from
    assert store.record_step(fence_of(src), step(3)) is Write.APPLIED


# ---------------------------------------------------------------------------------------------------------------
# delete_workflows
# ---------------------------------------------------------------------------------------------------------------


def test_delete_removes_everything(store: SystemStore, db_url: str) -> None:
    w = finished(store, "d-one", steps=3)
    attach_data(db_url, "d-one")
    finished(store, "d-keep", steps=1)
    attach_data(db_url, "d-keep")
    assert all(n > 0 for n in row_counts(db_url, "d-one").values())
    rec = Recorder()
    store.changes.subscribe(rec)
    assert store.delete_workflows([w.workflow_id, "unknown"], delete_children=False) == [w.workflow_id]
    assert row_counts(db_url, "d-one") == dict.fromkeys(CHILD_TABLES, 0)
    assert store.get_workflow("d-one") is None and store.list_steps("d-one") == []
    assert store.get_states(["d-one"])["d-one"].exists is False
    assert Change("cancel", ("d-one",)) in rec.changes and Change("wf", ("d-one",)) in rec.changes
    assert all(n > 0 for n in row_counts(db_url, "d-keep").values())
    assert store.delete_workflows(["d-one"], delete_children=True) == []


def test_delete_children_three_levels(store: SystemStore, db_url: str) -> None:
    root = finished(store, "dt-root", steps=1)
    child = finished(store, "dt-child", steps=1, parent_workflow_id="dt-root")
    grand = pending(store, "dt-grand", parent_workflow_id="dt-child")
    sibling = enqueued(store, "dt-sib", "dq", parent_workflow_id="dt-root")
    attach_data(db_url, grand.workflow_id)
    tree = [root.workflow_id, child.workflow_id, grand.workflow_id, sibling.workflow_id]
    unrelated = finished(store, "dt-other")
    rec = Recorder()
    store.changes.subscribe(rec)
    deleted = store.delete_workflows([root.workflow_id], delete_children=True)
    assert sorted(deleted) == sorted(tree)
    for wid in tree:
        assert row_counts(db_url, wid) == dict.fromkeys(CHILD_TABLES, 0), wid
        assert Change("cancel", (wid,)) in rec.changes
    assert Change("queue", ("dq",)) in rec.changes
    assert store.get_workflow(unrelated.workflow_id) is not None


def test_delete_without_children_flag_keeps_children(store: SystemStore) -> None:
    finished(store, "dn-root")
    finished(store, "dn-child", parent_workflow_id="dn-root")
    pending(store, "dn-grand", parent_workflow_id="dn-child")
    assert store.delete_workflows(["dn-root"], delete_children=False) == ["dn-root"]
    assert row_of(store, "dn-child").parent_workflow_id == "dn-root"
    assert row_of(store, "dn-grand").parent_workflow_id == "dn-child"


def test_delete_only_terminal(store: SystemStore) -> None:
    finished(store, "ot-root")
    finished(store, "ot-child", parent_workflow_id="ot-root")
    pending(store, "ot-grand", parent_workflow_id="ot-child")
    finished(store, "ok-root")
    finished(store, "ok-child", status="ERROR", parent_workflow_id="ok-root")
    finished(store, "ok-grand", status="MAX_RECOVERY_ATTEMPTS_EXCEEDED", parent_workflow_id="ok-child")
    lone = enqueued(store, "ot-lone")
    deleted = store.delete_workflows(
        ["ot-root", "ok-root", lone.workflow_id], delete_children=True, only_terminal=True
    )
    assert sorted(deleted) == ["ok-child", "ok-grand", "ok-root"]
    for wid in ("ot-root", "ot-child", "ot-grand", lone.workflow_id):
        assert store.get_workflow(wid) is not None, wid
    # Without delete_children only the listed row must be terminal.
    assert store.delete_workflows(["ot-root"], delete_children=False, only_terminal=True) == ["ot-root"]
    assert store.delete_workflows(["ot-grand"], delete_children=False, only_terminal=True) == []


def test_delete_frees_dedup_and_fences(store: SystemStore) -> None:
    held = enqueued(store, "dd-held", "dq", deduplication_id="dx")
    dup = store.insert_workflow(new_wf(status="ENQUEUED", queue_name="dq", deduplication_id="dx"))
    assert dup.kind == "dedup_existing" and dup.workflow_id == held.workflow_id
    assert store.delete_workflows([held.workflow_id], delete_children=False) == [held.workflow_id]
    fresh = new_wf(status="ENQUEUED", queue_name="dq", deduplication_id="dx")
    assert store.insert_workflow(fresh).kind == "created"

    running = pending(store, "dd-running")
    assert store.record_step(fence_of(running), step(1)) is Write.APPLIED
    assert store.delete_workflows([running.workflow_id], delete_children=False) == [running.workflow_id]
    assert store.record_step(fence_of(running), step(2)) is Write.FENCED
    out = store.record_outcome(fence_of(running), Outcome("SUCCESS", Payload("1", "json")))
    assert not out.applied and out.status is None
    assert store.get_workflow(running.workflow_id) is None


# ---------------------------------------------------------------------------------------------------------------
# gc_select / prune_executors
# ---------------------------------------------------------------------------------------------------------------


def _aged(
    store: SystemStore, db_url: str, news: Sequence[NewWorkflow], base: int, step_ms: int = 1_000
) -> None:
    for i, n in enumerate(news):
        set_created(db_url, n.workflow_id, base + i * step_ms)


def test_gc_select_keep_last_and_cutoff(store: SystemStore, db_url: str) -> None:
    kinds = "SSPSESCSSQSPSCSQ"  # 10 S(UCCESS, one ERROR "E" counted as terminal), 2 P, 2 Q(ENQUEUED), 2 C
    news: list[NewWorkflow] = []
    for i, k in enumerate(kinds):
        wid = f"gc-{i:02d}"
        if k == "S":
            news.append(finished(store, wid))
        elif k == "E":
            news.append(finished(store, wid, status="ERROR"))
        elif k == "P":
            news.append(pending(store, wid))
        elif k == "Q":
            news.append(enqueued(store, wid, "gq"))
        else:
            e = enqueued(store, wid, "gq")
            store.cancel_workflows([wid], cancel_children=False, reason="user")
            news.append(e)
    base = store.now_ms() - 1_000_000
    _aged(store, db_url, news, base)
    order = [n.workflow_id for n in news]
    terminal = {wid for wid, k in zip(order, kinds, strict=True) if k in "SEC"}
    assert len(terminal) == 12 and len(order) == 16

    expected_keep3 = [wid for wid in order[:-3] if wid in terminal]
    assert store.gc_select(None, cutoff_ms=None, keep_last=3) == expected_keep3
    assert store.gc_select(None, cutoff_ms=None, keep_last=0) == [wid for wid in order if wid in terminal]
    assert store.gc_select(None, cutoff_ms=None, keep_last=100) == []
    # cutoff is strict: created_at < cutoff_ms.
    cutoff = base + 6 * 1_000  # rows 0..5 are older
    assert store.gc_select(None, cutoff_ms=cutoff, keep_last=None) == [w for w in order[:6] if w in terminal]
    assert store.gc_select(None, cutoff_ms=cutoff + 1, keep_last=None) == [
        w for w in order[:7] if w in terminal
    ]
    # Both criteria.
    assert store.gc_select(None, cutoff_ms=base + 14 * 1_000, keep_last=5) == [
        w for w in order[:11] if w in terminal
    ]
    # Limit (single-row trees): the oldest first.
    assert store.gc_select(None, cutoff_ms=None, keep_last=3, limit=4) == expected_keep3[:4]
    # Selection only: nothing deleted.
    assert all(store.get_workflow(w) is not None for w in order)


def test_gc_select_trees(store: SystemStore, db_url: str) -> None:
    news = [
        finished(store, "gt-a"),  # old SUCCESS parent ...
        pending(store, "gt-a1", parent_workflow_id="gt-a"),  # ... with a PENDING child
        pending(store, "gt-b"),  # old PENDING parent ...
        finished(store, "gt-b1", parent_workflow_id="gt-b"),  # ... keeps its SUCCESS child
        finished(store, "gt-c"),  # fully terminal 3-level tree
        finished(store, "gt-c1", parent_workflow_id="gt-c", status="ERROR"),
        finished(store, "gt-c2", parent_workflow_id="gt-c"),
        finished(store, "gt-c11", parent_workflow_id="gt-c1"),
        finished(store, "gt-d", parent_workflow_id="gt-gone"),  # parent no longer exists: a root
        finished(store, "gt-e"),  # terminal tree with a grandchild that is too young
        finished(store, "gt-e1", parent_workflow_id="gt-e"),
        finished(store, "gt-e11", parent_workflow_id="gt-e1"),
    ]
    base = store.now_ms() - 1_000_000
    _aged(store, db_url, news, base)
    set_created(db_url, "gt-e11", store.now_ms() + 60_000)
    cutoff = base + 500_000
    assert store.gc_select(None, cutoff_ms=cutoff, keep_last=None) == ["gt-c", "gt-d"]
    # Once the PENDING child finishes, the first tree becomes eligible too.
    store.cancel_workflows(["gt-a1"], cancel_children=False, reason="user")
    assert store.gc_select(None, cutoff_ms=cutoff, keep_last=None) == ["gt-a", "gt-c", "gt-d"]
    # keep_last counts descendants as rows of the scope: the youngest row (gt-e11) protects its tree.
    assert "gt-e" not in store.gc_select(None, cutoff_ms=None, keep_last=1)


def test_gc_select_limit_whole_trees(store: SystemStore, db_url: str) -> None:
    news = [
        finished(store, "gl-e"),
        finished(store, "gl-e1", parent_workflow_id="gl-e"),
        finished(store, "gl-e11", parent_workflow_id="gl-e1"),
        finished(store, "gl-f"),
        finished(store, "gl-f1", parent_workflow_id="gl-f"),
        finished(store, "gl-g"),
    ]
    base = store.now_ms() - 1_000_000
    _aged(store, db_url, news, base)
    cutoff = store.now_ms()
    assert store.gc_select(None, cutoff_ms=cutoff, keep_last=None) == ["gl-e", "gl-f", "gl-g"]
    assert store.gc_select(None, cutoff_ms=cutoff, keep_last=None, limit=6) == ["gl-e", "gl-f", "gl-g"]
    assert store.gc_select(None, cutoff_ms=cutoff, keep_last=None, limit=5) == ["gl-e", "gl-f"]
    assert store.gc_select(None, cutoff_ms=cutoff, keep_last=None, limit=4) == ["gl-e"]
    assert store.gc_select(None, cutoff_ms=cutoff, keep_last=None, limit=3) == ["gl-e"]
    assert store.gc_select(None, cutoff_ms=cutoff, keep_last=None, limit=1) == ["gl-e"]  # a larger tree alone
    # GC is select + delete of whole trees.
    roots = store.gc_select(None, cutoff_ms=cutoff, keep_last=None, limit=5)
    deleted = store.delete_workflows(roots, delete_children=True, only_terminal=True)
    assert sorted(deleted) == ["gl-e", "gl-e1", "gl-e11", "gl-f", "gl-f1"]
    assert store.gc_select(None, cutoff_ms=cutoff, keep_last=None) == ["gl-g"]


def test_gc_select_scope(store: SystemStore, db_url: str) -> None:
    news = [
        finished(store, "gs-a1", application_name="app1"),
        finished(store, "gs-n1"),
        finished(store, "gs-b1", application_name="app2"),
        finished(store, "gs-a2", application_name="app1"),
        finished(store, "gs-b2", application_name="app2"),  # the newest row overall
    ]
    base = store.now_ms() - 1_000_000
    _aged(store, db_url, news, base)
    now = store.now_ms()
    assert store.gc_select("app1", cutoff_ms=now, keep_last=None) == ["gs-a1", "gs-n1", "gs-a2"]
    assert store.gc_select("app2", cutoff_ms=now, keep_last=None) == ["gs-n1", "gs-b1", "gs-b2"]
    assert store.gc_select(None, cutoff_ms=now, keep_last=None) == [
        "gs-a1",
        "gs-n1",
        "gs-b1",
        "gs-a2",
        "gs-b2",
    ]
    # keep_last counts the rows of the scope only: gs-a2 is the newest of app1's scope.
    assert store.gc_select("app1", cutoff_ms=None, keep_last=1) == ["gs-a1", "gs-n1"]
    assert store.gc_select(None, cutoff_ms=None, keep_last=1) == ["gs-a1", "gs-n1", "gs-b1", "gs-a2"]


def test_prune_executors(store: SystemStore, db_url: str) -> None:
    idle = store.register_executor(registration("p-idle"))
    store.mark_stopped("p-idle", idle.incarnation)
    busy = store.register_executor(registration("p-busy"))
    store.mark_stopped("p-busy", busy.incarnation)
    pending(store, owner=("p-busy", busy.incarnation, token()))
    store.register_executor(registration("p-alive"))
    store.register_executor(registration("p-twice"))
    store.register_executor(registration("p-twice"))  # incarnation 1 is now DEAD
    now = store.now_ms()
    claim_sql = (
        "INSERT INTO {t}queue_claims (queue_name, partition_key, claimed_at, workflow_id) VALUES (?, ?, ?, ?)"
    )
    sql(db_url, claim_sql, ("pq", None, now - 90_000_000, "old-claim"))
    sql(db_url, claim_sql, ("pq", None, now, "new-claim"))

    def executors() -> list[tuple[str, int, str]]:
        return sorted(
            (r.executor_id, r.incarnation, r.state) for r in store.list_executors(include_inactive=True)
        )

    before = executors()
    assert store.prune_executors(0) == 0
    assert executors() == before
    assert store.prune_executors(now + 60_000) == 2
    assert executors() == [
        ("p-alive", 1, "ALIVE"),
        ("p-busy", 1, "STOPPED"),
        ("p-twice", 2, "ALIVE"),
    ]
    claims = sql(db_url, "SELECT workflow_id FROM {t}queue_claims", fetch=True)
    assert [c[0] for c in claims] == ["new-claim"]
    assert store.prune_executors(now + 60_000) == 0


# ---------------------------------------------------------------------------------------------------------------
# export_workflows / import_workflows
# ---------------------------------------------------------------------------------------------------------------


def _export_fixture(store: SystemStore, db_url: str) -> list[str]:
    """ex-root (SUCCESS, steps, events, streams, messages) -> ex-child (PENDING on "iq") -> ex-grand (PENDING,
    no queue), with distinct created_at values so that the created order differs from the ID order."""
    root = pending(
        store,
        "ex-root",
        class_name="C",
        config_name="cfg",
        receiver="recv",
        authenticated_user="alice",
        authenticated_roles=["a", "b"],
        assumed_role="a",
        application_name="app",
        application_version="v1",
        app_id="id",
        attributes='{"x": 1}',
        timeout_ms=9_000,
        deadline_ms=store.now_ms() + 3_600_000,
        max_recovery_attempts=5,
        schedule_name="sched",
    )
    f = fence_of(root)
    assert store.record_step(f, step(1, output='"one"')) is Write.APPLIED
    assert (
        store.record_step(f, step(2, output=None, name="child", child_workflow_id="ex-child"))
        is Write.APPLIED
    )
    assert store.record_step(f, step(3, output=None, error=Payload('"oops"', "pickle"))) is Write.APPLIED
    attach_data(db_url, "ex-root", base=5_000)
    put_message(db_url, "ex-root", '"m2"', topic=None, consumed=True, created_at=5_010)
    assert store.record_outcome(f, Outcome("SUCCESS", Payload('"done"', "json"))).applied
    child = pending(
        store, "ex-child", parent_workflow_id="ex-root", queue_name="iq", priority=3, partition_key="k"
    )
    assert store.record_step(fence_of(child), step(1)) is Write.APPLIED
    put_message(db_url, "ex-child", '"c1"', topic="t", consumed=True, created_at=6_000)
    grand = pending(store, "ex-grand", parent_workflow_id="ex-child", owner=("ex-9", 4, token()))
    put_event(db_url, grand.workflow_id, "g", '"gv"', updated_at=7_000)
    base = store.now_ms() - 10_000
    for i, wid in enumerate(("ex-root", "ex-child", "ex-grand")):
        set_created(db_url, wid, base + i)
    return ["ex-root", "ex-child", "ex-grand"]


ENTRY_KEYS = {"status", "steps", "events", "event_history", "streams", "messages"}


def _check_bundle_shape(bundle: list[dict[str, Any]]) -> None:
    json.dumps(bundle)
    for entry in bundle:
        assert set(entry) == ENTRY_KEYS
        assert set(entry["status"]) == set(EXPORT_COLUMNS["workflows"])
        for table in ENTRY_KEYS - {"status"}:
            assert isinstance(entry[table], list)
            for r in entry[table]:
                assert set(r) == set(EXPORT_COLUMNS[table]), table


def _as_imported(bundle: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What an export of the imported rows must look like (02 §11 rule 4); creator_token is left out."""
    out = copy.deepcopy(bundle)
    for entry in out:
        st = entry["status"]
        if st["status"] == "PENDING":
            st.update(
                status="ENQUEUED",
                queue_name=st["queue_name"] or INTERNAL_QUEUE,
                executor_id=None,
                incarnation=None,
                claim_token=None,
                claim_batch=None,
            )
        st["steps_seeded"] = True
        st.pop("creator_token")
    return out


def _without_creator(bundle: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = copy.deepcopy(bundle)
    for entry in out:
        entry["status"].pop("creator_token")
    return out


def test_export_shape_and_values(store: SystemStore, db_url: str) -> None:
    _export_fixture(store, db_url)
    bundle = store.export_workflows(["ex-root"], include_children=False)
    _check_bundle_shape(bundle)
    assert len(bundle) == 1
    e = bundle[0]
    st = e["status"]
    row = row_of(store, "ex-root")
    assert st["workflow_id"] == "ex-root" and st["status"] == "SUCCESS" and st["name"] == "wf"
    assert (st["class_name"], st["config_name"], st["receiver"]) == ("C", "cfg", "recv")
    assert st["inputs"] == '{"args": []}' and st["inputs_serializer"] == "json"
    assert st["output"] == '"done"' and st["outcome_serializer"] == "json" and st["error"] is None
    assert st["authenticated_roles"] == ["a", "b"] and st["attributes"] == {"x": 1}
    assert st["was_forked_from"] is False and st["steps_seeded"] is False
    assert (st["created_at"], st["updated_at"], st["completed_at"]) == (
        row.created_at,
        row.updated_at,
        row.completed_at,
    )
    assert (st["timeout_ms"], st["deadline_ms"], st["max_recovery_attempts"]) == (9_000, row.deadline_ms, 5)
    assert st["claim_token"] == row.claim_token and st["executor_id"] == "exec-a" and st["incarnation"] == 1
    assert st["schedule_name"] == "sched" and st["app_id"] == "id"
    assert [s["step_id"] for s in e["steps"]] == [1, 2, 3]
    assert e["steps"][0]["output"] == '"one"' and e["steps"][0]["serializer"] == "json"
    assert e["steps"][1]["child_workflow_id"] == "ex-child" and e["steps"][1]["output"] is None
    assert e["steps"][2]["error"] == '"oops"' and e["steps"][2]["serializer"] == "pickle"
    stored_steps = store.list_steps("ex-root")
    assert [s["write_token"] for s in e["steps"]] == [s.write_token for s in stored_steps]
    assert [s["started_at"] for s in e["steps"]] == [s.started_at for s in stored_steps]
    assert sorted((h["step_id"], h["key"], h["value"]) for h in e["event_history"]) == [
        (1, "k1", '"v1"'),
        (2, "k2", '"v2"'),
    ]
    assert {ev["key"]: (ev["value"], ev["updated_at"]) for ev in e["events"]} == {
        "k1": ('"v1"', 5_000),
        "k2": ('"v2"', 5_001),
    }
    assert e["events"][0]["key_digest"] == digest(e["events"][0]["key"])
    streams = [(s["stream_offset"], s["value"], s["is_end"], s["writer_step_id"]) for s in e["streams"]]
    assert streams == [(0, '"a"', False, 1), (1, '"b"', False, 2), (2, None, True, 2)]
    assert e["streams"][2]["serializer"] is None
    msgs = [(m["payload"], m["topic"], m["consumed"], m["consumed_at"]) for m in e["messages"]]
    assert msgs == [('"m1"', "t", False, None), ('"m2"', None, True, 5_015)]
    assert e["messages"][1]["topic_digest"] == topic_digest(None)


def test_export_children_order_and_unknown(store: SystemStore, db_url: str) -> None:
    tree = _export_fixture(store, db_url)
    bundle = store.export_workflows(["ex-root", "unknown"], include_children=True)
    _check_bundle_shape(bundle)
    assert [e["status"]["workflow_id"] for e in bundle] == tree  # created order, not ID order
    assert [
        e["status"]["workflow_id"] for e in store.export_workflows(["ex-child"], include_children=True)
    ] == [
        "ex-child",
        "ex-grand",
    ]
    assert store.export_workflows(["unknown"], include_children=True) == []
    assert store.export_workflows([], include_children=False) == []
    child = bundle[1]
    assert child["status"]["status"] == "PENDING" and child["status"]["queue_name"] == "iq"
    assert [(m["payload"], m["consumed"]) for m in child["messages"]] == [('"c1"', True)]
    # Listing an ID twice (directly and as a descendant) exports it once.
    both = store.export_workflows(["ex-child", "ex-root"], include_children=True)
    assert [e["status"]["workflow_id"] for e in both] == tree


def test_import_round_trip(store: SystemStore, db_url: str, other: SystemStore) -> None:
    tree = _export_fixture(store, db_url)
    bundle = store.export_workflows(["ex-root"], include_children=True)
    for _ in range(3):
        enqueued(other, queue="pre")  # target rows inserted before the import
    top_seq = max(r.seq for r in other.list_workflows(WorkflowQuery()))
    rec = Recorder()
    other.changes.subscribe(rec)
    result = other.import_workflows(copy.deepcopy(bundle), creator_token=token())
    assert result.kind == "created" and result.workflow_ids == tree and result.conflict_id is None
    assert all(row_of(other, wid).seq > top_seq for wid in tree)  # seq is new
    assert Change("queue", ("iq",)) in rec.changes and Change("queue", (INTERNAL_QUEUE,)) in rec.changes
    again = other.export_workflows(["ex-root"], include_children=True)
    _check_bundle_shape(again)
    assert _without_creator(again) == _as_imported(bundle)
    child = row_of(other, "ex-child")
    assert child.status == "ENQUEUED" and child.queue_name == "iq" and child.claim_token is None
    assert child.partition_key == "k" and child.priority == 3
    grand = row_of(other, "ex-grand")
    assert grand.status == "ENQUEUED" and grand.queue_name == INTERNAL_QUEUE and grand.executor_id is None
    # The imported rows are claimable, and their checkpoints must be loaded (steps_seeded).
    claimed = other.claim(claim_req("iq"))
    assert [c.fence.workflow_id for c in claimed.claimed] == ["ex-child"] and claimed.claimed[
        0
    ].may_have_steps
    assert [s.step_id for s in other.list_steps("ex-child")] == [1]
    # The source is unchanged by the export.
    assert store.export_workflows(["ex-root"], include_children=True) == bundle


def test_import_twice_conflicts_and_writes_nothing(
    store: SystemStore, db_url: str, other: SystemStore
) -> None:
    _export_fixture(store, db_url)
    bundle = store.export_workflows(["ex-root"], include_children=True)
    assert other.import_workflows(bundle, creator_token=token()).kind == "created"
    snapshot = other.export_workflows(["ex-root"], include_children=True)
    second = other.import_workflows(bundle, creator_token=token())
    assert second.kind == "id_conflict" and second.workflow_ids == [] and second.conflict_id == "ex-root"
    assert other.export_workflows(["ex-root"], include_children=True) == snapshot
    # A bundle whose first entry is new and whose second exists: nothing at all is written.
    mixed = copy.deepcopy(bundle[:2])
    mixed[0]["status"]["workflow_id"] = "ex-fresh"
    third = other.import_workflows(mixed, creator_token=token())
    assert third.kind == "id_conflict" and third.conflict_id == "ex-child" and third.workflow_ids == []
    assert other.get_workflow("ex-fresh") is None
    assert other.export_workflows(["ex-root"], include_children=True) == snapshot


def test_import_dedup_conflict(store: SystemStore, other: SystemStore) -> None:
    enqueued(store, "dup-src", "dq", deduplication_id="dd1")
    bundle = store.export_workflows(["dup-src"], include_children=False)
    assert bundle[0]["status"]["dedup_queue"] == "dq" and bundle[0]["status"]["deduplication_id"] == "dd1"
    enqueued(other, "holder", "dq", deduplication_id="dd1")
    result = other.import_workflows(bundle, creator_token=token())
    assert result.kind == "dedup_conflict" and result.conflict_id == "holder" and result.workflow_ids == []
    assert other.get_workflow("dup-src") is None
    # Same dedup ID on another queue does not collide.
    moved = copy.deepcopy(bundle)
    moved[0]["status"]["dedup_queue"] = "dq2"
    moved[0]["status"]["queue_name"] = "dq2"
    assert other.import_workflows(moved, creator_token=token()).kind == "created"


def test_import_export_cross_backend(tmp_path: os.PathLike[str]) -> None:
    """Export from SQLite, import into Postgres, and the reverse: identical bundles either way."""
    require_pg()
    sqlite_url = f"sqlite:///{os.path.join(str(tmp_path), 'src.sqlite')}"
    sqlite_back_url = f"sqlite:///{os.path.join(str(tmp_path), 'back.sqlite')}"
    pg_name = create_pg_database()
    pg_url = pg_url_for(pg_name)
    stores: list[SystemStore] = []
    try:
        for url in (sqlite_url, pg_url, sqlite_back_url):
            s = _open(url)
            s.migrate()
            stores.append(s)
        lite, pg, back = stores
        _export_fixture(lite, sqlite_url)
        bundle = lite.export_workflows(["ex-root"], include_children=True)
        assert pg.import_workflows(copy.deepcopy(bundle), creator_token=token()).kind == "created"
        from_pg = pg.export_workflows(["ex-root"], include_children=True)
        assert _without_creator(from_pg) == _as_imported(bundle)
        assert back.import_workflows(copy.deepcopy(from_pg), creator_token=token()).kind == "created"
        from_back = back.export_workflows(["ex-root"], include_children=True)
        assert _without_creator(from_back) == _without_creator(from_pg)
        assert [s.output for s in back.list_steps("ex-root")] == [
            s.output for s in lite.list_steps("ex-root")
        ]
    finally:
        for s in stores:
            s.close()
        drop_pg_database(pg_name)


# ---------------------------------------------------------------------------------------------------------------
# try_maintenance_lease
# ---------------------------------------------------------------------------------------------------------------


def test_maintenance_lease(store: SystemStore, peer: SystemStore) -> None:
    assert store.try_maintenance_lease("gc", "h1", 200)
    assert not peer.try_maintenance_lease("gc", "h2", 200)
    assert store.try_maintenance_lease("gc", "h1", 200)  # the holder renews
    assert peer.try_maintenance_lease("other", "h2", 200)  # leases are independent
    time.sleep(0.35)
    assert peer.try_maintenance_lease("gc", "h2", 10_000)  # expired: taken over
    assert not store.try_maintenance_lease("gc", "h1", 200)
    assert peer.try_maintenance_lease("gc", "h2", 10_000)


# ---------------------------------------------------------------------------------------------------------------
# list_steps
# ---------------------------------------------------------------------------------------------------------------


def test_list_steps_load_output_limit_offset(store: SystemStore) -> None:
    w = pending(store)
    f = fence_of(w)
    for i in range(1, 6):
        kw: dict[str, Any] = {}
        if i == 2:
            kw = {"output": None, "error": Payload('"e"', "json")}
        if i == 3:
            kw = {"output": None, "child_workflow_id": "kid"}
        assert store.record_step(f, step(i, **kw)) is Write.APPLIED
    full = store.list_steps(w.workflow_id)
    assert [s.step_id for s in full] == [1, 2, 3, 4, 5]
    assert full[0].output == Payload("1", "json") and full[1].error == Payload('"e"', "json")
    bare = store.list_steps(w.workflow_id, load_output=False)
    assert [s.step_id for s in bare] == [1, 2, 3, 4, 5]
    assert all(s.output is None and s.error is None for s in bare)
    for b, s in zip(bare, full, strict=True):
        assert dataclasses.replace(s, output=None, error=None) == b
    assert [s.step_id for s in store.list_steps(w.workflow_id, limit=2)] == [1, 2]
    assert [s.step_id for s in store.list_steps(w.workflow_id, limit=2, offset=2)] == [3, 4]
    assert [s.step_id for s in store.list_steps(w.workflow_id, offset=3)] == [4, 5]
    assert store.list_steps(w.workflow_id, offset=5) == []
    assert store.list_steps(w.workflow_id, limit=0) == []
    assert store.list_steps(w.workflow_id, limit=10, offset=1, load_output=False) == bare[1:]
    assert store.list_steps("unknown", limit=3) == []
