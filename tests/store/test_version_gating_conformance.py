"""App-version gating of claims and what executors publish, on both backends (03 §13, §19; 05 §7 rules 4-5;
07 §3.2 rule 7).

Executors are registered with explicit versions; a version registered later is newer. Claims are made by a second
store object (`peer`) where it matters, as if from another process.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from store_kit import token

from dbos._store import open_system_store
from dbos._store.base import (
    ClaimRequest,
    ExecutorRegistration,
    NewWorkflow,
    Payload,
    StoreSettings,
    SystemStore,
)
from dbos.error import DBOSValidationError

APP = "shop"


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
    s = _open(db_url)
    yield s
    s.close()


def register(
    store: SystemStore,
    executor_id: str,
    version: str | None,
    *,
    app: str = APP,
    lease_ms: int = 60_000,
    **kw: Any,
) -> int:
    reg = ExecutorRegistration(
        executor_id=executor_id,
        application_name=app,
        application_version=version,
        hostname="host",
        host_identity="host:boot",
        pid=4242,
        process_start=None,
        heartbeat_interval_ms=1_000,
        lease_ms=lease_ms,
        **kw,
    )
    return store.register_executor(reg).incarnation


def enqueue(store: SystemStore, *, version: str | None = None, app: str | None = APP, **kw: Any) -> str:
    new = NewWorkflow(
        workflow_id=f"wf-{token()}",
        name="wf",
        class_name=None,
        config_name=None,
        inputs=Payload('{"args": []}', "json"),
        receiver=None,
        status=kw.pop("status", "ENQUEUED"),
        owner=None,
        creator_token=token(),
        queue_name=kw.pop("queue", "q"),
        application_name=app,
        application_version=version,
        **kw,
    )
    assert store.insert_workflow(new).kind == "created"
    return new.workflow_id


def claim(
    store: SystemStore,
    executor_id: str,
    version: str | None,
    *,
    app: str = APP,
    max_rows: int = 10,
    **kw: Any,
) -> list[str]:
    req = ClaimRequest(
        queue_name=kw.pop("queue", "q"),
        executor_id=executor_id,
        incarnation=1,
        application_name=app,
        application_version=version,
        registered=frozenset({"wf"}),
        max_rows=max_rows,
        batch_token=token(),
        **kw,
    )
    return [c.fence.workflow_id for c in store.claim(req).claimed]


# ---------------------------------------------------------------------------------------------------------------
# Version registration (05 §7 rule 4)
# ---------------------------------------------------------------------------------------------------------------


def test_registration_makes_a_new_version_the_latest(store: SystemStore) -> None:
    def latest(executor_id: str, version: str | None, app: str = APP) -> str | None:
        reg = ExecutorRegistration(executor_id, app, version, "host", "host:boot", 1, None, 1_000, 60_000)
        return store.register_executor(reg).latest_version

    assert latest("e1", "v1") == "v1"
    assert latest("e2", "v2") == "v2"  # registered within the same millisecond, still newer
    assert latest("e1", "v1") == "v2"  # a restart of a known version keeps its timestamp
    assert latest("e3", "v9", app="other-app") == "v9"  # versions are per application
    assert latest("e4", "v1") == "v2"
    assert latest("e5", None) is None


# ---------------------------------------------------------------------------------------------------------------
# Claims (03 §13 rule 2)
# ---------------------------------------------------------------------------------------------------------------


def test_version_less_row_goes_to_the_newest_live_version(store: SystemStore, peer: SystemStore) -> None:
    register(store, "old", "v1")
    register(peer, "new", "v2")
    first = enqueue(store)
    assert claim(store, "old", "v1") == []  # a newer version is live: v1 leaves version-less rows alone
    assert claim(peer, "new", "v2") == [first]
    row = store.get_workflow(first)
    assert row is not None and row.application_version == "v2"  # the claim makes the version concrete
    second = enqueue(store)
    assert claim(store, "old", "v1") == []
    peer.mark_stopped("new", 1)
    assert claim(store, "old", "v1") == [second]  # the last v2 executor stopped: v1 is the newest live


def test_a_lease_expired_newer_executor_is_not_live(store: SystemStore, peer: SystemStore) -> None:
    register(store, "old", "v1")
    register(peer, "new", "v2", lease_ms=1)  # never heartbeats
    wid = enqueue(store)
    time.sleep(0.01)
    assert claim(store, "old", "v1") == [wid]


def test_other_applications_neither_claim_nor_block(store: SystemStore, peer: SystemStore) -> None:
    register(store, "shop-1", "v1")
    register(peer, "other-1", "v7", app="other-app")  # newer, but of another application
    wid = enqueue(store)
    assert claim(peer, "other-1", "v7", app="other-app") == []
    assert claim(store, "shop-1", "v1") == [wid]


def test_pinned_rows_ignore_newer_versions(store: SystemStore, peer: SystemStore) -> None:
    register(store, "old", "v1")
    register(peer, "new", "v2")
    pinned = enqueue(store, version="v1")
    other = enqueue(store, version="v3")
    assert claim(peer, "new", "v2") == []
    assert claim(store, "old", "v1") == [pinned]
    assert store.get_workflow(other).status == "ENQUEUED"  # type: ignore[union-attr]


def test_newer_version_without_a_live_executor_does_not_block(store: SystemStore, peer: SystemStore) -> None:
    register(store, "old", "v1")
    register(peer, "new", "v2")
    peer.mark_stopped("new", 1)
    wid = enqueue(store)
    assert claim(store, "old", "v1") == [wid]


@pytest.mark.parametrize(
    "limits", [{}, {"global_concurrency": 5}, {"partitioned": True, "partition_concurrency": 5}]
)
def test_every_claim_shape_applies_the_gate(
    store: SystemStore, peer: SystemStore, limits: dict[str, Any]
) -> None:
    register(store, "old", "v1")
    register(peer, "new", "v2")
    key = {"partition_key": "k"} if limits.get("partitioned") else {}
    wid = enqueue(store, **key)
    assert claim(store, "old", "v1", **limits) == []
    assert claim(peer, "new", "v2", **limits) == [wid]


# ---------------------------------------------------------------------------------------------------------------
# Queue statistics by version (03 §19) and published queues (02 §12.1 rule 2)
# ---------------------------------------------------------------------------------------------------------------


def test_queue_stats_count_enqueued_rows_by_version(store: SystemStore) -> None:
    for _ in range(2):
        enqueue(store, version="v1")
    enqueue(store)
    enqueue(store, app=None)
    for _ in range(2):
        enqueue(store, version="v2", queue="other")
    enqueue(store, version="v1", status="DELAYED", delay_until_ms=store.now_ms() + 60_000)
    register(store, "ex", "v2")
    assert len(claim(store, "ex", "v2", queue="other", max_rows=1)) == 1  # PENDING rows are not counted
    by_queue = {r.queue_name: r for r in store.queue_stats(None)}
    assert dict(by_queue["q"].enqueued_by_version) == {(APP, "v1"): 2, (APP, None): 1, (None, None): 1}
    assert dict(by_queue["other"].enqueued_by_version) == {(APP, "v2"): 1}
    assert store.queue_stats("other")[0].enqueued_by_version == by_queue["other"].enqueued_by_version


def test_registration_and_heartbeat_publish_queues(store: SystemStore) -> None:
    declared = json.dumps({"q1": {"concurrency": 2}})
    incarnation = register(store, "ex", "v1", queues_json=declared)
    (row,) = store.list_executors(include_inactive=False)
    assert json.loads(row.queues) == {"q1": {"concurrency": 2}}
    assert store.heartbeat("ex", incarnation).alive  # without queues: unchanged
    assert store.list_executors(include_inactive=False)[0].queues == row.queues
    later = json.dumps({"q1": {"concurrency": 2}, "q2": {}})
    assert store.heartbeat("ex", incarnation, queues_json=later).alive
    assert json.loads(store.list_executors(include_inactive=True)[0].queues) == json.loads(later)
    for bad in ("[1]", "not json", "x\x00"):
        with pytest.raises(DBOSValidationError):
            store.heartbeat("ex", incarnation, queues_json=bad)
        with pytest.raises(DBOSValidationError):
            register(store, "ex2", "v1", queues_json=bad)
    assert json.loads(store.list_executors(include_inactive=True)[0].queues) == json.loads(later)
