"""`DBOS.queue_stats`: per-queue depth by status, merged with this process's declarations and the live
executors' published queues (03 §19)."""

from __future__ import annotations

from typing import Any, TypedDict

from .._engine.engine import Engine
from .queue import QUEUES, Queue
from .stranded import listeners, live_view, stranded_by_version


class QueueStats(TypedDict):
    name: str
    database_backed: bool | None
    paused: bool
    enqueued: int
    delayed: int
    pending: int
    oldest_enqueued_at: int | None
    partitions: int | None
    config: dict[str, Any] | None
    config_mismatch: bool
    listeners: list[str]
    stranded: int


def _config(q: Queue) -> dict[str, Any]:
    return {
        "concurrency": q.concurrency,
        "worker_concurrency": q.worker_concurrency,
        "limiter": q.limiter,
        "priority_enabled": q.priority_enabled,
        "partition_queue": q.partition_queue,
        "partition_concurrency": q.partition_concurrency,
        "global_concurrency": q.global_concurrency,
        "partition_worker_concurrency": q.partition_worker_concurrency,
        "partition_limiter": q.partition_limiter,
        "polling_interval_sec": q.polling_interval_sec,
    }


def queue_stats(engine: Engine, queue_name: str | None) -> list[QueueStats]:
    rows = {r.queue_name: r for r in engine.db.queue_stats(queue_name)}
    paused = engine.db.list_paused_queues()
    declared = {q.name: q for q in QUEUES.all() if queue_name in (None, q.name)}
    # Read after the counts, so an executor that stops in between may still be counted as live (03 §19 rule 2
    # asks one snapshot of the counts only).
    live = live_view(engine)
    served = {n for e in live for n in e.queues if queue_name in (None, n)}
    out: list[QueueStats] = []
    for name in sorted(set(rows) | set(declared) | served):
        row, q = rows.get(name), declared.get(name)
        out.append(
            QueueStats(
                name=name,
                database_backed=False if q is not None else None,
                paused=name in paused,
                enqueued=row.enqueued if row else 0,
                delayed=row.delayed if row else 0,
                pending=row.pending if row else 0,
                oldest_enqueued_at=row.oldest_enqueued_at if row else None,
                partitions=(row.partitions if row else 0) if (q is not None and q.partition_queue) else None,
                config=_config(q) if q is not None else None,
                config_mismatch=False,
                listeners=listeners(name, live),
                stranded=sum(stranded_by_version(name, row.enqueued_by_version, live).values()) if row else 0,
            )
        )
    return out
