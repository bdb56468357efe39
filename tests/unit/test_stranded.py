"""Who serves a queue and which ENQUEUED rows are stranded, from live executor records (03 §13 rule 5, §19)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from dbos._queues.stranded import (
    LiveExecutor,
    StrandedWarnings,
    VersionKey,
    listeners,
    live_executors,
    stranded_by_version,
)
from dbos._store.base import INTERNAL_QUEUE, ExecutorRow


def ex(executor_id: str, version: str | None, *queues: str, app: str | None = "app") -> LiveExecutor:
    return LiveExecutor(executor_id, app, version, {q: {} for q in queues})


def row(executor_id: str, *, state: str = "ALIVE", lease: int = 2_000, queues: Any = None) -> ExecutorRow:
    return ExecutorRow(
        executor_id=executor_id,
        incarnation=1,
        state=state,  # type: ignore[arg-type]
        application_name="app",
        application_version="v1",
        hostname="h",
        host_identity="h:b",
        pid=1,
        process_start=None,
        started_at=0,
        last_heartbeat_at=0,
        lease_expires_at=lease,
        heartbeat_interval_ms=1_000,
        lease_ms=2_000,
        stopped_at=None,
        queues=json.dumps(queues if queues is not None else {"q": {}}),
    )


def test_live_executors_drop_stopped_and_expired_and_prefer_the_own_view() -> None:
    own = ex("me", "v1", "fresh")
    rows = [
        row("a"),
        row("b", state="STOPPED"),
        row("c", lease=999),
        row("me", queues={}),
        row("d", queues="x"),
    ]
    live = live_executors(rows, 1_000, own)
    assert [e.executor_id for e in live] == ["me", "a", "d"]
    assert live[0] is own and dict(live[1].queues) == {"q": {}} and dict(live[2].queues) == {}


def test_listeners_include_every_live_executor_on_the_internal_queue() -> None:
    live = [ex("b", "v1", "q1"), ex("a", "v2", "q1", "q2")]
    assert listeners("q1", live) == ["a", "b"]
    assert listeners("q2", live) == ["a"]
    assert listeners("q3", live) == []
    assert listeners(INTERNAL_QUEUE, live) == ["a", "b"]


@pytest.mark.parametrize(
    "live, expected",
    [
        # A v1 executor dispatching q claims rows pinned to v1 and version-less rows; v2 rows are stranded.
        ([ex("a", "v1", "q")], {"v2": 3}),
        # A live v2 executor that does not dispatch q does not help.
        ([ex("a", "v1", "q"), ex("b", "v2", "other")], {"v2": 3}),
        ([ex("a", "v1", "q"), ex("b", "v2", "q")], {}),
        # Nobody dispatches q: everything is stranded, version-less rows too.
        ([ex("a", "v1", "other")], {"v1": 1, None: 2, "v2": 3}),
        # Executors of another application claim none of the application's rows.
        ([ex("a", "v1", "q", app="other-app")], {"v1": 1, None: 2, "v2": 3}),
        ([], {"v1": 1, None: 2, "v2": 3}),
    ],
)
def test_stranded_by_version(live: list[LiveExecutor], expected: dict[str | None, int]) -> None:
    counts: dict[VersionKey, int] = {("app", "v1"): 1, ("app", None): 2, ("app", "v2"): 3}
    assert stranded_by_version("q", counts, live) == expected


def test_rows_without_an_application_can_be_claimed_by_any_application() -> None:
    counts: dict[VersionKey, int] = {(None, None): 1, (None, "v1"): 1}
    assert stranded_by_version("q", counts, [ex("a", "v1", "q", app="other-app")]) == {}
    assert stranded_by_version("q", counts, [ex("a", "v9", "q", app="other-app")]) == {"v1": 1}


def test_internal_queue_is_dispatched_by_every_executor() -> None:
    counts: dict[VersionKey, int] = {("app", "v1"): 1, ("app", "v2"): 4}
    assert stranded_by_version(INTERNAL_QUEUE, counts, [ex("a", "v1")]) == {"v2": 4}


def test_one_warning_per_queue_and_version_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    w = StrandedWarnings(every_s=600)
    found = {("q", "v2"): 3, ("q", None): 1}
    with caplog.at_level(logging.WARNING, logger="dbos"):
        assert w.report(found, now=100.0) == [("q", None), ("q", "v2")]
        assert w.report(found, now=699.0) == []
        assert w.report({("q", "v2"): 3, ("q2", "v2"): 1}, now=701.0) == [("q", "v2"), ("q2", "v2")]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 4
    assert "'q'" in messages[1] and "'v2'" in messages[1] and "3 workflow(s)" in messages[1]
    assert "version-less" in messages[0]
