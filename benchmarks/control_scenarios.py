"""Control-plane scenarios (issue 4, 02 §2, §3, §7.1), imported by scenarios.py; dbosx only (run.py skips the
reference: it does not wake a sleeping workflow on cancel or timeout at all, so there is nothing to compare).

- cancel_to_wake: a workflow parked in DBOS.sleep(60) is cancelled; time from the cancel call's start until the
  workflow's own thread has left the sleep.
- deadline_to_wake: a workflow under SetWorkflowTimeout(0.2) parked in DBOS.sleep(60); time from its stored
  deadline (database clock) until its thread has left the sleep.
- list_100_of_100k: 100,000 stored workflows (one created through the API, the rest bulk-copied from it in SQL,
  with a mix of statuses and names); median of several list_workflows(limit=100) shapes, each by an index.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

from dbos import DBOS, SetWorkflowID, SetWorkflowTimeout

Launch = Callable[[str], None]

WOKE: dict[str, float] = {}
PARKED: dict[str, threading.Event] = {}
_lock = threading.Lock()


@DBOS.step()
def control_mark_parked(key: str) -> None:
    PARKED[key].set()


@DBOS.workflow()
def control_parked(key: str) -> None:
    control_mark_parked(key)
    try:
        DBOS.sleep(60)
    finally:  # a cancellation reaches here as DBOSWorkflowCancelledError raised by the sleep
        with _lock:
            WOKE[key] = time.perf_counter(), time.time()  # type: ignore[assignment]


@DBOS.workflow()
def control_seed() -> int:
    return 0


def _median_ms(xs: list[float]) -> dict[str, Any]:
    ms = sorted(x * 1000 for x in xs)
    return {"value": statistics.median(ms), "unit": "ms", "n": len(ms), "p90": ms[(len(ms) * 9) // 10],
            "max": ms[-1]}  # fmt: skip


def _park(key: str, timeout: float | None) -> Any:
    PARKED[key] = threading.Event()
    if timeout is None:
        handle = DBOS.start_workflow(control_parked, key)
    else:
        with SetWorkflowTimeout(timeout):
            handle = DBOS.start_workflow(control_parked, key)
    if not PARKED[key].wait(10):
        raise RuntimeError("workflow never reached its sleep")
    time.sleep(0.02)  # let it enter the wait
    return handle


def _woke(key: str, timeout: float = 10.0) -> tuple[float, float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with _lock:
            got = WOKE.get(key)
        if got is not None:
            return got  # type: ignore[return-value]
        time.sleep(0.0005)
    raise RuntimeError(f"workflow {key} did not wake")


def scenario_cancel_to_wake(launch: Launch, backend: str, db_url: str, n: int, warmup: int) -> dict[str, Any]:
    launch(db_url)
    samples: list[float] = []
    try:
        for i in range(n + warmup):
            key = f"c{i}"
            handle = _park(key, None)
            t0 = time.perf_counter()
            DBOS.cancel_workflow(handle.workflow_id)
            t1 = _woke(key)[0]
            if i >= warmup:
                samples.append(t1 - t0)
    finally:
        DBOS.destroy()
    return {"figures": {"cancel_to_wake_ms": _median_ms(samples)}}


def scenario_deadline_to_wake(
    launch: Launch, backend: str, db_url: str, n: int, warmup: int
) -> dict[str, Any]:
    launch(db_url)
    samples: list[float] = []
    try:
        for i in range(n + warmup):
            key = f"d{i}"
            handle = _park(key, 0.2)
            wall = _woke(key)[1]
            deadline_ms = handle.get_status().workflow_deadline_epoch_ms
            if i >= warmup:
                samples.append(max(0.0, wall - deadline_ms / 1000))
    finally:
        DBOS.destroy()
    return {"figures": {"deadline_to_wake_ms": _median_ms(samples)}}


_SQLITE_COPY = """
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count)
INSERT INTO dbos_workflows (workflow_id, status, name, inputs, inputs_serializer, output, error,
    outcome_serializer, application_name, application_version, authenticated_user, queue_name,
    creator_token, created_at, updated_at, completed_at, executor_id)
SELECT printf('bulk-%07d', i),
    CASE WHEN i % 10 = 0 THEN 'ERROR' WHEN i % 10 = 1 THEN 'CANCELLED' ELSE 'SUCCESS' END,
    CASE WHEN i % 3 = 0 THEN 'process_payment' ELSE w.name END, w.inputs, w.inputs_serializer,
    CASE WHEN i % 10 IN (0, 1) THEN NULL ELSE w.output END, CASE WHEN i % 10 = 0 THEN w.output END,
    w.outcome_serializer, w.application_name, w.application_version, 'user-' || (i % 50),
    CASE WHEN i % 4 = 0 THEN 'tasks' END, w.creator_token, w.created_at + i, w.created_at + i,
    w.created_at + i + 5, w.executor_id
FROM n, dbos_workflows w WHERE w.workflow_id = :seed
"""
_PG_COPY = """
INSERT INTO dbos.workflows (workflow_id, status, name, inputs, inputs_serializer, output, error,
    outcome_serializer, application_name, application_version, authenticated_user, queue_name,
    creator_token, created_at, updated_at, completed_at, executor_id)
SELECT 'bulk-' || lpad(i::text, 7, '0'),
    CASE WHEN i %% 10 = 0 THEN 'ERROR' WHEN i %% 10 = 1 THEN 'CANCELLED' ELSE 'SUCCESS' END,
    CASE WHEN i %% 3 = 0 THEN 'process_payment' ELSE w.name END, w.inputs, w.inputs_serializer,
    CASE WHEN i %% 10 IN (0, 1) THEN NULL ELSE w.output END, CASE WHEN i %% 10 = 0 THEN w.output END,
    w.outcome_serializer, w.application_name, w.application_version, 'user-' || (i %% 50),
    CASE WHEN i %% 4 = 0 THEN 'tasks' END, w.creator_token, w.created_at + i, w.created_at + i,
    w.created_at + i + 5, w.executor_id
FROM generate_series(1, %(count)s) AS i, dbos.workflows w WHERE w.workflow_id = %(seed)s
"""


def _bulk_copy(backend: str, db_url: str, seed: str, count: int) -> None:
    if backend == "sqlite":
        import sqlite3

        con = sqlite3.connect(db_url.split("///", 1)[1])
        with con:
            con.execute(_SQLITE_COPY, {"count": count, "seed": seed})
        con.execute("ANALYZE")
        con.close()
        return
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as con:
        con.execute(_PG_COPY, {"count": count, "seed": seed})
        con.execute("ANALYZE dbos.workflows")


def scenario_list_100_of_100k(
    launch: Launch, backend: str, db_url: str, n: int, warmup: int
) -> dict[str, Any]:
    launch(db_url)
    try:
        with SetWorkflowID("seed-row"):
            control_seed()
        _bulk_copy(backend, db_url, "seed-row", 100_000 - 1)
        page = DBOS.list_workflows(limit=100)
        shapes: dict[str, Any] = {
            "first_page": lambda: DBOS.list_workflows(limit=100),
            "newest_first": lambda: DBOS.list_workflows(limit=100, sort_desc=True),
            "next_page": lambda: DBOS.list_workflows(limit=100, cursor=page.next_cursor),
            "status_error": lambda: DBOS.list_workflows(status="ERROR", limit=100),
            "status_and_name": lambda: DBOS.list_workflows(
                status="SUCCESS", name="process_payment", limit=100
            ),
            "queue": lambda: DBOS.list_workflows(queue_name="tasks", limit=100, load_input=False),
            "user": lambda: DBOS.list_workflows(user="user-7", limit=100),
        }
        samples: dict[str, list[float]] = {k: [] for k in shapes}
        for i in range(n + warmup):
            for k, fn in shapes.items():
                t0 = time.perf_counter()
                rows = fn()
                dt = time.perf_counter() - t0
                if len(rows) != 100:
                    raise RuntimeError(f"{k}: {len(rows)} rows")
                if i >= warmup:
                    samples[k].append(dt)
    finally:
        DBOS.destroy()
    medians = {k: statistics.median(v) * 1000 for k, v in samples.items()}
    worst = max(medians, key=lambda k: medians[k])
    return {
        "figures": {
            "list_100_of_100k_ms": {
                "value": medians[worst],
                "unit": "ms",
                "n": n,
                "worst_shape": worst,
                "median_ms_by_shape": medians,
            }
        }
    }


CONTROL_SCENARIOS = {
    "cancel_to_wake": scenario_cancel_to_wake,
    "deadline_to_wake": scenario_deadline_to_wake,
    "list_100_of_100k": scenario_list_100_of_100k,
}
