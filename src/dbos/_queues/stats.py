"""`DBOS.queue_stats`: per-queue depth by status, merged with this process's declarations and the live
executors' published queues (03 §19)."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any, TypedDict

from .._engine.engine import Engine
from .queue import QUEUES, Queue
from .stranded import LiveExecutor, listeners, live_view, stranded_by_version


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
    """A queue's configuration in the shape executors publish it (03 §2 constructor arguments)."""
    return asdict(q.config())


def _published(name: str, live: list[LiveExecutor]) -> list[dict[str, Any]]:
    """The configurations live executors publish for a queue (this one's own included, current)."""
    return [dict(e.queues[name]) for e in live if name in e.queues and e.queues[name]]


def _mismatch(configs: list[dict[str, Any]]) -> bool:
    return len({json.dumps(c, sort_keys=True) for c in configs}) > 1


def queue_stats(engine: Engine, queue_name: str | None) -> list[QueueStats]:
    rows = {r.queue_name: r for r in engine.db.queue_stats(queue_name)}
    paused = engine.db.list_paused_queues()
    declared = {q.name: q for q in QUEUES.all() if queue_name in (None, q.name)}
    # Read after the counts, so an executor that stops in between may still be counted as live (03 §19 rule 2
    # asks one snapshot of the counts only).
    live = live_view(engine)
    served = {n for e in live for n in e.queues if queue_name in (None, n)}
    stored = engine.dispatcher.definitions if engine.dispatcher is not None else {}
    out: list[QueueStats] = []
    # 03 §19 rule 1: declared here or by a live executor, registered in the database, paused, or with rows.
    others = {n for n in (*stored, *paused) if queue_name in (None, n)}
    for name in sorted(set(rows) | set(declared) | served | others):
        row, q = rows.get(name), declared.get(name)
        published = _published(name, live)
        config = _config(q) if q is not None else (published[0] if published else None)
        if name in stored:
            config = json.loads(stored[name])
        out.append(
            QueueStats(
                name=name,
                database_backed=True if name in stored else (False if q is not None or published else None),
                paused=name in paused,
                enqueued=row.enqueued if row else 0,
                delayed=row.delayed if row else 0,
                pending=row.pending if row else 0,
                oldest_enqueued_at=row.oldest_enqueued_at if row else None,
                partitions=(row.partitions if row else 0) if (q is not None and q.partition_queue) else None,
                config=config,
                config_mismatch=_mismatch(published),
                listeners=listeners(name, live),
                stranded=sum(stranded_by_version(name, row.enqueued_by_version, live).values()) if row else 0,
            )
        )
    return out
