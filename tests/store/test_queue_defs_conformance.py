"""Conformance of database-backed queue definitions and pauses (03 §18; 07 §2.2 "Queues and claims", §3.2
`queue_defs` / `queue_pauses`), run the same way on both backends: create / overwrite / keep, the validated
read-merge-write of `update_queue`, ordering, deletion, idempotent pauses, the storable-text guard, and the
`ctl` / `queue` changes, in-process and on a second store object (as if another process)."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from dbos._store import open_system_store
from dbos._store.base import Change, NewWorkflow, Payload, StoreSettings, SystemStore
from dbos.error import DBOSValidationError

QUEUES = Change("ctl", ("queues",))

# ---------------------------------------------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------------------------------------------


def _open(url: str) -> SystemStore:
    return open_system_store(url, StoreSettings(role="executor", poll_ceiling_s=0.05))


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


class Recorder:
    def __init__(self) -> None:
        self.changes: list[Change] = []
        self.lock = threading.Lock()

    def __call__(self, change: Change) -> None:
        with self.lock:
            self.changes.append(change)

    def snapshot(self) -> list[Change]:
        with self.lock:
            return list(self.changes)

    def clear(self) -> None:
        """Forget the changes so far, after the echoes of earlier writes have arrived."""
        time.sleep(0.3)
        with self.lock:
            self.changes.clear()

    def wait_for(self, *wanted: Change, timeout: float = 2.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.snapshot()
            if all(w in got for w in wanted):
                return True
            time.sleep(0.005)
        return False

    def settle(self) -> list[Change]:
        """Changes so far, after echoes from the backend's own feed (harmless duplicates) have arrived."""
        time.sleep(0.3)
        return self.snapshot()


def cfg(**kw: Any) -> str:
    return json.dumps(kw, sort_keys=True)


def accept(_: Mapping[str, Any]) -> None:
    return None


class Refused(Exception):
    pass


def refuse(_: Mapping[str, Any]) -> None:
    raise Refused("no")


def subscribed(store: SystemStore) -> Recorder:
    """A recorder of the store's changes from now on (after the echoes of earlier writes have arrived)."""
    time.sleep(0.3)
    rec = Recorder()
    store.changes.subscribe(rec)
    return rec


# ---------------------------------------------------------------------------------------------------------------
# upsert_queue / get_queue
# ---------------------------------------------------------------------------------------------------------------


def test_upsert_creates_revision_one(store: SystemStore) -> None:
    assert store.get_queue("q") is None
    before = store.now_ms()
    row = store.upsert_queue("q", cfg(concurrency=3), overwrite=False, application_name="app")
    assert row.name == "q"
    assert json.loads(row.config) == {"concurrency": 3}
    assert row.config == cfg(concurrency=3)  # stored as given
    assert row.revision == 1
    assert row.application_name == "app"
    assert row.created_at == row.updated_at
    assert before - 1000 <= row.created_at <= store.now_ms() + 1000
    assert store.get_queue("q") == row


def test_upsert_without_application_name(store: SystemStore) -> None:
    row = store.upsert_queue("q", "{}", overwrite=True, application_name=None)
    assert row.revision == 1 and row.application_name is None and row.config == "{}"
    assert store.get_queue("q") == row


def test_upsert_overwrite_false_keeps_the_row(store: SystemStore) -> None:
    first = store.upsert_queue("q", cfg(concurrency=1), overwrite=False, application_name="app")
    rec = subscribed(store)
    again = store.upsert_queue("q", cfg(concurrency=9), overwrite=False, application_name="other")
    assert again == first
    assert store.get_queue("q") == first
    assert rec.settle() == []  # nothing written, nothing emitted


def test_upsert_overwrite_true_replaces_config(store: SystemStore) -> None:
    first = store.upsert_queue("q", cfg(concurrency=1), overwrite=False, application_name="app")
    time.sleep(0.005)
    second = store.upsert_queue("q", cfg(concurrency=2), overwrite=True, application_name="app")
    assert second.revision == 2
    assert second.config == cfg(concurrency=2)
    assert second.created_at == first.created_at
    assert second.updated_at >= first.updated_at
    assert second.application_name == "app"
    third = store.upsert_queue("q", cfg(concurrency=3), overwrite=True, application_name="app")
    assert third.revision == 3 and third.config == cfg(concurrency=3)
    assert store.get_queue("q") == third


def test_upsert_emits_ctl_and_queue(store: SystemStore) -> None:
    rec = subscribed(store)
    store.upsert_queue("eq", "{}", overwrite=False, application_name=None)
    got = rec.snapshot()  # published before the call returned
    assert QUEUES in got and Change("queue", ("eq",)) in got
    rec.clear()
    store.upsert_queue("eq", cfg(a=1), overwrite=True, application_name=None)
    got = rec.snapshot()
    assert QUEUES in got and Change("queue", ("eq",)) in got


def test_upsert_config_must_be_a_json_object(store: SystemStore) -> None:
    for bad in ("not json", "[1, 2]", "3", ""):
        with pytest.raises(DBOSValidationError):
            store.upsert_queue("q", bad, overwrite=True, application_name=None)
    assert store.get_queue("q") is None


# ---------------------------------------------------------------------------------------------------------------
# update_queue
# ---------------------------------------------------------------------------------------------------------------


def test_update_merges_validates_and_bumps_revision(store: SystemStore) -> None:
    first = store.upsert_queue(
        "q", cfg(concurrency=1, priority_enabled=False), overwrite=False, application_name="a"
    )
    seen: list[dict[str, Any]] = []

    def validate(merged: Mapping[str, Any]) -> None:
        seen.append(dict(merged))

    rec = subscribed(store)
    time.sleep(0.005)
    row = store.update_queue("q", {"concurrency": 5, "worker_concurrency": 2}, validate)
    assert row is not None
    assert seen == [{"concurrency": 5, "priority_enabled": False, "worker_concurrency": 2}]
    assert json.loads(row.config) == seen[0]
    assert row.revision == 2
    assert row.created_at == first.created_at and row.updated_at >= first.updated_at
    assert row.application_name == "a"
    assert store.get_queue("q") == row
    got = rec.snapshot()
    assert QUEUES in got and Change("queue", ("q",)) in got


def test_update_patch_can_set_null(store: SystemStore) -> None:
    store.upsert_queue("q", cfg(concurrency=1), overwrite=False, application_name=None)
    row = store.update_queue("q", {"concurrency": None}, accept)
    assert row is not None and json.loads(row.config) == {"concurrency": None}


def test_update_missing_queue_is_none(store: SystemStore) -> None:
    calls: list[Mapping[str, Any]] = []
    rec = subscribed(store)
    assert store.update_queue("nope", {"concurrency": 1}, calls.append) is None
    assert calls == []
    assert store.get_queue("nope") is None
    assert rec.settle() == []


def test_update_refused_by_validate_leaves_row_unchanged(store: SystemStore) -> None:
    first = store.upsert_queue("q", cfg(concurrency=1), overwrite=False, application_name="app")
    rec = subscribed(store)
    with pytest.raises(Refused):
        store.update_queue("q", {"concurrency": 0}, refuse)

    def invalid(merged: Mapping[str, Any]) -> None:
        raise DBOSValidationError(f"bad concurrency {merged['concurrency']}")

    with pytest.raises(DBOSValidationError, match="bad concurrency 0"):
        store.update_queue("q", {"concurrency": 0}, invalid)
    assert store.get_queue("q") == first
    assert rec.settle() == []
    # the store stays usable after a refusal
    row = store.update_queue("q", {"concurrency": 2}, accept)
    assert row is not None and row.revision == 2


def test_concurrent_updates_lose_nothing(store: SystemStore, peer: SystemStore) -> None:
    """Read, merge and write are one transaction: concurrent patches of different keys all survive."""
    store.upsert_queue("q", "{}", overwrite=False, application_name=None)
    n = 8
    errors: list[BaseException] = []

    def run(i: int) -> None:
        s = store if i % 2 else peer
        try:

            def slow(_: Mapping[str, Any]) -> None:
                time.sleep(0.01)  # widen the read-write window

            assert s.update_queue("q", {f"k{i}": i}, slow) is not None
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    row = store.get_queue("q")
    assert row is not None
    assert json.loads(row.config) == {f"k{i}": i for i in range(n)}
    assert row.revision == 1 + n


# ---------------------------------------------------------------------------------------------------------------
# list_queues / delete_queue
# ---------------------------------------------------------------------------------------------------------------


def test_list_queues_ordered_by_name(store: SystemStore) -> None:
    assert store.list_queues() == []
    names = ["b", "a", "B", "a_2", "é", "a-1", "Z", "zz", "日本"]
    for i, name in enumerate(names):
        store.upsert_queue(name, cfg(i=i), overwrite=False, application_name=None)
    rows = store.list_queues()
    assert [r.name for r in rows] == sorted(names)  # code point order = UTF-8 byte order on both backends
    assert all(r.revision == 1 for r in rows)
    assert {r.name: json.loads(r.config)["i"] for r in rows} == {n: i for i, n in enumerate(names)}
    assert store.get_queue("é") == next(r for r in rows if r.name == "é")


def test_delete_queue(store: SystemStore) -> None:
    store.upsert_queue("q", "{}", overwrite=False, application_name=None)
    store.upsert_queue("keep", "{}", overwrite=False, application_name=None)
    new = NewWorkflow(
        workflow_id=f"wf-{secrets.token_hex(8)}",
        name="wf",
        class_name=None,
        config_name=None,
        inputs=Payload('{"args": []}', "json"),
        receiver=None,
        status="ENQUEUED",
        owner=None,
        creator_token=secrets.token_hex(8),
        queue_name="q",
    )
    assert store.insert_workflow(new).kind == "created"
    rec = subscribed(store)
    assert store.delete_queue("q") is True
    got = rec.snapshot()
    assert QUEUES in got and Change("queue", ("q",)) in got
    assert store.get_queue("q") is None
    assert [r.name for r in store.list_queues()] == ["keep"]
    wf = store.get_workflow(new.workflow_id)  # workflows on the queue are untouched
    assert wf is not None and wf.status == "ENQUEUED" and wf.queue_name == "q"
    rec.clear()
    assert store.delete_queue("q") is False
    assert store.delete_queue("never") is False
    assert rec.settle() == []
    again = store.upsert_queue("q", cfg(x=1), overwrite=False, application_name=None)
    assert again.revision == 1  # a fresh definition


# ---------------------------------------------------------------------------------------------------------------
# set_queue_paused / list_paused_queues
# ---------------------------------------------------------------------------------------------------------------


def test_pause_is_idempotent_and_independent_of_definitions(store: SystemStore) -> None:
    assert store.list_paused_queues() == frozenset()
    rec = subscribed(store)
    store.set_queue_paused("p", True)
    got = rec.snapshot()
    assert QUEUES in got and Change("queue", ("p",)) in got
    rec.clear()
    store.set_queue_paused("p", True)  # already paused: nothing written
    assert rec.settle() == []
    assert store.list_paused_queues() == frozenset({"p"})
    store.set_queue_paused("other", True)
    assert store.list_paused_queues() == frozenset({"p", "other"})

    store.upsert_queue("p", "{}", overwrite=False, application_name=None)
    assert store.delete_queue("p") is True  # deleting the definition keeps the pause
    assert store.list_paused_queues() == frozenset({"p", "other"})

    rec.clear()
    store.set_queue_paused("p", False)
    got = rec.snapshot()
    assert QUEUES in got and Change("queue", ("p",)) in got
    rec.clear()
    store.set_queue_paused("p", False)
    store.set_queue_paused("never-paused", False)
    assert rec.settle() == []
    assert store.list_paused_queues() == frozenset({"other"})


def test_pause_survives_reopen(db_url: str, store: SystemStore) -> None:
    store.set_queue_paused("p", True)
    store.upsert_queue("d", cfg(a=1), overwrite=False, application_name="app")
    other = _open(db_url)
    try:
        assert other.list_paused_queues() == frozenset({"p"})
        assert other.get_queue("d") == store.get_queue("d")
    finally:
        other.close()


# ---------------------------------------------------------------------------------------------------------------
# The storable-text guard
# ---------------------------------------------------------------------------------------------------------------

_BAD_NAMES = ["nul\x00name", "lone\ud800surrogate", "x" * 1025, 7]


@pytest.mark.parametrize("bad", _BAD_NAMES, ids=["nul", "surrogate", "too-long", "not-str"])
def test_names_are_checked_before_sql(store: SystemStore, bad: Any) -> None:
    calls: list[Callable[[], object]] = [
        lambda: store.upsert_queue(bad, "{}", overwrite=True, application_name=None),
        lambda: store.update_queue(bad, {}, accept),
        lambda: store.get_queue(bad),
        lambda: store.delete_queue(bad),
        lambda: store.set_queue_paused(bad, True),
        lambda: store.set_queue_paused(bad, False),
    ]
    for call in calls:
        with pytest.raises(DBOSValidationError):
            call()
    assert store.list_queues() == []
    assert store.list_paused_queues() == frozenset()


def test_config_and_application_name_are_checked(store: SystemStore) -> None:
    with pytest.raises(DBOSValidationError):
        store.upsert_queue("q", '{"a": "\x00"}', overwrite=True, application_name=None)
    with pytest.raises(DBOSValidationError):
        store.upsert_queue("q", '{"a": "\ud800"}', overwrite=True, application_name=None)
    with pytest.raises(DBOSValidationError):
        store.upsert_queue("q", "{}", overwrite=True, application_name="bad\x00app")
    assert store.get_queue("q") is None
    unicode = cfg(label="日本 é")
    assert store.upsert_queue("q", unicode, overwrite=True, application_name="ü").config == unicode


# ---------------------------------------------------------------------------------------------------------------
# The change feed across store objects (another process)
# ---------------------------------------------------------------------------------------------------------------


def test_changes_reach_another_store(store: SystemStore, peer: SystemStore) -> None:
    rec = subscribed(peer)
    store.upsert_queue("xq", "{}", overwrite=False, application_name=None)
    assert rec.wait_for(QUEUES, Change("queue", ("xq",)), timeout=2.0)
    assert peer.get_queue("xq") == store.get_queue("xq")

    rec.clear()
    store.update_queue("xq", {"concurrency": 4}, accept)
    assert rec.wait_for(QUEUES, Change("queue", ("xq",)), timeout=2.0)
    row = peer.get_queue("xq")
    assert row is not None and row.revision == 2 and json.loads(row.config) == {"concurrency": 4}

    rec.clear()
    store.set_queue_paused("xp", True)
    assert rec.wait_for(QUEUES, Change("queue", ("xp",)), timeout=2.0)
    assert peer.list_paused_queues() == frozenset({"xp"})

    rec.clear()
    store.set_queue_paused("xp", False)
    assert rec.wait_for(QUEUES, Change("queue", ("xp",)), timeout=2.0)
    assert peer.list_paused_queues() == frozenset()

    rec.clear()
    store.delete_queue("xq")
    assert rec.wait_for(QUEUES, Change("queue", ("xq",)), timeout=2.0)
    assert peer.list_queues() == []
