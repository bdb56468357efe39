"""Who serves which queue, and stranded work (03 §13 rule 5, §19; 05 §7 rule 7).

Both are derived from the live executor rows (ALIVE, lease not expired) with the queues each one publishes, and
from the ENQUEUED counts by (application, version) that `queue_stats` returns. An ENQUEUED row is stranded when
no live executor may claim it:
- a row pinned to a version: no live executor of its application runs that version *and* dispatches its queue;
- a version-less row: no live executor of its application dispatches its queue.
Rows without an application name may be claimed by executors of any application, like the claim itself allows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .._engine.engine import Engine
from .._management import published_queues
from .._store.base import INTERNAL_QUEUE, ExecutorRow

_log = logging.getLogger("dbos")
WARN_EVERY_S = 600.0  # one WARNING per (queue, version) per 10 minutes

VersionKey = tuple[str | None, str | None]  # (application_name, application_version) of ENQUEUED rows


@dataclass(frozen=True)
class LiveExecutor:
    executor_id: str
    application_name: str | None
    application_version: str | None
    queues: Mapping[
        str, Any
    ]  # published: queue name -> declared configuration (the internal queue is implicit)

    def dispatches(self, queue_name: str) -> bool:
        return queue_name == INTERNAL_QUEUE or queue_name in self.queues


def live_executors(rows: Iterable[ExecutorRow], now_ms: int, own: LiveExecutor | None) -> list[LiveExecutor]:
    """ALIVE rows whose lease has not expired. `own` replaces this executor's row: its in-memory view is current,
    while its published queues lag by up to one heartbeat after a queue is declared."""
    out = [own] if own is not None else []
    for r in rows:
        if r.state != "ALIVE" or r.lease_expires_at < now_ms:
            continue
        if own is not None and r.executor_id == own.executor_id:
            continue
        out.append(
            LiveExecutor(r.executor_id, r.application_name, r.application_version, published_queues(r.queues))
        )
    return out


def live_view(engine: Engine) -> list[LiveExecutor]:
    d = engine.dispatcher
    own = LiveExecutor(
        engine.executor_id,
        engine.settings.name,
        engine.application_version,
        d.published_queues() if d is not None else {},
    )
    return live_executors(engine.db.list_executors(include_inactive=False), engine.db.now_ms(), own)


def listeners(queue_name: str, live: Iterable[LiveExecutor]) -> list[str]:
    return sorted({e.executor_id for e in live if e.dispatches(queue_name)})


def _claimable(queue_name: str, key: VersionKey, live: Iterable[LiveExecutor]) -> bool:
    app, version = key
    for e in live:
        if app is not None and e.application_name != app:
            continue
        if e.dispatches(queue_name) and (version is None or e.application_version == version):
            return True
    return False


def stranded_by_version(
    queue_name: str, counts: Mapping[VersionKey, int], live: Iterable[LiveExecutor]
) -> dict[str | None, int]:
    """ENQUEUED rows of the queue that no live executor may claim, by version (None: version-less)."""
    executors = list(live)
    out: dict[str | None, int] = {}
    for key, n in counts.items():
        if n > 0 and not _claimable(queue_name, key, executors):
            out[key[1]] = out.get(key[1], 0) + n
    return out


def find_stranded(engine: Engine) -> dict[tuple[str, str | None], int]:
    """Stranded rows of every queue, by (queue, version)."""
    live = live_view(engine)
    out: dict[tuple[str, str | None], int] = {}
    for row in engine.db.queue_stats(None):
        for version, n in stranded_by_version(row.queue_name, row.enqueued_by_version, live).items():
            out[(row.queue_name, version)] = n
    return out


class StrandedWarnings:
    """At most one WARNING per (queue, version) per `every_s` seconds (03 §13 rule 5)."""

    def __init__(self, every_s: float = WARN_EVERY_S) -> None:
        self.every_s = every_s
        self._last: dict[tuple[str, str | None], float] = {}

    def report(self, found: Mapping[tuple[str, str | None], int], now: float) -> list[tuple[str, str | None]]:
        """Log what is due; returns the (queue, version) pairs warned about."""
        warned: list[tuple[str, str | None]] = []
        for key in sorted(found, key=lambda k: (k[0], k[1] or "")):
            last = self._last.get(key)
            if last is not None and now - last < self.every_s:
                continue
            self._last[key] = now
            warned.append(key)
            _log.warning("%s", _message(key[0], key[1], found[key]))
        return warned


def _message(queue_name: str, version: str | None, n: int) -> str:
    if version is None:
        return (
            f"{n} version-less workflow(s) on queue {queue_name!r} are stranded: no live executor of their "
            "application dispatches the queue. Run one that does, or resume them onto another queue."
        )
    return (
        f"{n} workflow(s) on queue {queue_name!r} pinned to application version {version!r} are stranded: no live "
        "executor of their application runs that version and dispatches the queue. Run one, or fork them onto "
        "another version."
    )
