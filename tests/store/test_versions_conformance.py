"""Application versions (05 §7 rules 4-5), on both backends: registration, listing newest first, promotion."""

from __future__ import annotations

import threading

from test_version_gating_conformance import register

from dbos._store.base import Change, SystemStore


def names(store: SystemStore, app: str | None = "shop") -> list[str]:
    return [v.version_name for v in store.list_app_versions(app)]


def test_registered_versions_are_listed_newest_first(store: SystemStore) -> None:
    assert store.list_app_versions("shop") == []
    register(store, "e1", "v1")
    register(store, "e2", "v2")
    register(store, "e3", "v1")  # a known version keeps its timestamp
    listed = store.list_app_versions("shop")
    assert [v.version_name for v in listed] == ["v2", "v1"]
    assert listed[0].version_timestamp > listed[1].version_timestamp
    assert all(v.version_id and v.created_at > 0 for v in listed)
    assert len({v.version_id for v in listed}) == 2


def test_versions_are_scoped_per_application(store: SystemStore) -> None:
    register(store, "e1", "v1", app="shop")
    register(store, "e2", "v9", app="billing")
    assert names(store, "shop") == ["v1"] and names(store, "billing") == ["v9"]
    assert store.set_latest_app_version("billing", "v1") is False


def test_set_latest_promotes_an_older_version(store: SystemStore) -> None:
    register(store, "e1", "v1")
    register(store, "e2", "v2")
    assert store.set_latest_app_version("shop", "v1") is True
    assert names(store) == ["v1", "v2"]
    assert store.set_latest_app_version("shop", "v1") is True  # already the latest: stays the latest
    assert names(store) == ["v1", "v2"]
    assert store.set_latest_app_version("shop", "nope") is False
    assert names(store) == ["v1", "v2"]


def test_a_single_version_can_be_set_latest(store: SystemStore) -> None:
    register(store, "e1", "only")
    before = store.list_app_versions("shop")[0].version_timestamp
    assert store.set_latest_app_version("shop", "only") is True
    assert store.list_app_versions("shop")[0].version_timestamp >= before


def test_set_latest_wakes_dispatchers_in_other_processes(store: SystemStore, peer: SystemStore) -> None:
    register(store, "e1", "v1")
    register(store, "e2", "v2")
    seen = threading.Event()
    peer.changes.subscribe(lambda c: seen.set() if c == Change("ctl", ("versions",)) else None)
    assert store.set_latest_app_version("shop", "v1") is True
    assert seen.wait(10)
