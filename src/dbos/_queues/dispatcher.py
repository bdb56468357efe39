"""The dispatcher: one thread per process that claims and starts queued workflows (03 §21).

It examines a queue when something may have changed: an in-process signal or a change-feed event for the queue
(Postgres NOTIFY, the SQLite detector), a finished local workflow of the queue, a rate-limit window or delay
expiring, or the queue's fallback poll (`polling_interval_sec`, jittered). There is no fixed polling floor.
"""

from __future__ import annotations

import json
import logging
import random
import secrets
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import _failpoints as fp
from .._engine.engine import Engine
from .._engine.waits import Waiter
from .._store.base import INTERNAL_QUEUE, Change, ClaimedWorkflow, ClaimRequest, RateLimit
from .limits import local_budget, partition_room
from .queue import QUEUES, Limits, Queue, QueueRateLimit
from .starter import start_claimed
from .stranded import StrandedWarnings, find_stranded

_log = logging.getLogger("dbos")
PROMOTE_EVERY_S = 1.0
DEFINITIONS_EVERY_S = 5.0
COALESCE_S = 0.002
MAX_BACKOFF_S = 30.0
STRANDED_EVERY_S = 60.0  # how often one executor of the application looks for stranded work (03 §13 rule 5)


def _rate(r: QueueRateLimit | None) -> RateLimit | None:
    return None if r is None else RateLimit(r["limit"], int(r["period"] * 1000))


@dataclass
class QueueState:
    name: str
    limits: Limits
    polling_s: float
    declared: dict[str, Any] = field(default_factory=dict)  # the configuration published for this queue
    in_flight: int = 0
    lanes: Counter[str | None] = field(default_factory=Counter)
    lane_order: list[str | None] = field(default_factory=list)  # most recently served last
    dirty: bool = True
    next_poll: float = 0.0
    rate_retry_at: float | None = None
    paused: bool = False
    database_backed: bool = False
    coalesce_at: float | None = None  # claim after completions, batched (see Dispatcher._finished)

    def served(self, lane: str | None) -> None:
        self.in_flight += 1
        self.lanes[lane] += 1
        if lane in self.lane_order:
            self.lane_order.remove(lane)
        self.lane_order.append(lane)

    def finished(self, lane: str | None) -> None:
        self.in_flight -= 1
        self.lanes[lane] -= 1
        if self.lanes[lane] <= 0:
            del self.lanes[lane]

    def due(self, now: float) -> bool:
        return (
            self.dirty
            or now >= self.next_poll
            or (self.rate_retry_at is not None and now >= self.rate_retry_at)
        )


class Dispatcher:
    def __init__(self, engine: Engine, listen: list[str] | None) -> None:
        self.engine = engine
        self.listen = None if listen is None else set(listen)
        self.waiter = Waiter()
        self.states: dict[str, QueueState] = {}
        self.lock = threading.Lock()
        self.next_promote = 0.0
        self.next_definitions = 0.0  # database-backed queues and pauses are re-read on `ctl` changes
        self.definitions: dict[str, str] = {}  # every database-backed queue -> its config JSON (for enqueue)
        self._published: str | None = None  # the queues JSON last written to this executor's record
        self.next_stranded = time.monotonic() + STRANDED_EVERY_S  # not at once: peers may still be starting
        self.stranded_warnings = StrandedWarnings()
        self._unsubscribe = engine.db.changes.subscribe(self._on_change)
        self._state_for(INTERNAL_QUEUE, Limits(), 1.0)
        for q in QUEUES.all():
            self.declare(q)
        QUEUES.on_declare = self.declare

    # --- registration and signals -----------------------------------------------------------------------------
    def declare(self, queue: Queue) -> None:
        if self.listen is not None and queue.name not in self.listen:
            return
        self._state_for(queue.name, queue.limits, queue.polling_interval_sec, asdict(queue.config()))
        self.wake()

    def _state_for(
        self, name: str, limits: Limits, polling_s: float, declared: dict[str, Any] | None = None
    ) -> QueueState:
        with self.lock:
            st = self.states.get(name)
            if st is None:
                st = self.states[name] = QueueState(name, limits, polling_s, declared or {})
            return st

    # --- the queues published in this executor's record (02 §12.1 rule 2, 03 §17 rule 5) --------------------
    def published_queues(self) -> dict[str, dict[str, Any]]:
        """The queues this process dispatches -> their configuration; the internal queue is implicit."""
        with self.lock:
            return {n: dict(st.declared) for n, st in self.states.items() if n != INTERNAL_QUEUE}

    def queues_json(self) -> str:
        return json.dumps(self.published_queues(), sort_keys=True)

    def queues_to_publish(self) -> str | None:
        """The queues JSON if it changed since it was last published, else None (the heartbeat sends it)."""
        text = self.queues_json()
        return None if text == self._published else text

    def mark_published(self, text: str) -> None:
        self._published = text

    def wake(self, queue_name: str | None = None) -> None:
        with self.lock:
            targets = [self.states[queue_name]] if queue_name in self.states else []
            if queue_name is None:
                targets = list(self.states.values())
        for st in targets:
            st.dirty = True
        self.waiter.notify()

    def note_delay(self, until_ms: int) -> None:
        """An in-process DELAYED enqueue: promote it on time (03 §9 rule 2)."""
        at = time.monotonic() + max(0.0, (until_ms - self.engine.db.now_ms()) / 1000)
        self.next_promote = min(self.next_promote, at) if self.next_promote > time.monotonic() else at
        self.waiter.notify()

    def _on_change(self, change: Change) -> None:
        if change.kind in ("all", "ctl"):
            self.next_definitions = 0.0
            self.wake()
        elif change.kind == "queue":
            self.wake(change.key[0] if change.key else None)

    def start(self) -> None:
        t = threading.Thread(target=self._loop, name="dbos-dispatcher", daemon=True)
        t.start()
        self.engine.background.append(t)

    def stop(self) -> None:
        self._unsubscribe()
        if QUEUES.on_declare == self.declare:
            QUEUES.on_declare = None
        self.waiter.notify()  # the loop sees `stopping` at once instead of at its next timer

    # --- the loop -----------------------------------------------------------------------------------------
    def _loop(self) -> None:
        e = self.engine
        failures = 0
        while not e.stopping.is_set():
            try:
                wait_s = self._cycle()
                failures = 0
            except Exception:
                if e.stopping.is_set():
                    return
                if failures == 0:
                    _log.warning("dispatcher could not reach the system database; backing off", exc_info=True)
                wait_s = min(MAX_BACKOFF_S, 0.05 * 2**failures) * random.uniform(0.5, 1.0)
                failures += 1
            self.waiter.wait(wait_s)
        self.stop()

    def _cycle(self) -> float:
        """Claim on every due queue; returns how long to wait for the next reason to look."""
        now = time.monotonic()
        if now >= self.next_definitions:
            self._refresh_definitions(now)
        if now >= self.next_promote:
            self._promote()
        if now >= self.next_stranded:
            self.check_stranded(now)
        with self.lock:
            states = list(self.states.values())
        next_at = self.next_promote
        for st in states:
            if st.due(now):
                st.dirty = False
                st.coalesce_at = None
                st.next_poll = now + st.polling_s * random.uniform(0.95, 1.05)
                if self._claim(st) > 0:
                    st.dirty = True  # there may be more to claim
            next_at = min(next_at, st.next_poll, st.rate_retry_at or next_at, st.coalesce_at or next_at)
            if st.dirty:
                next_at = now
        return max(0.0, next_at - time.monotonic())

    def _refresh_definitions(self, now: float) -> None:
        """Adopt database-backed queues (new, changed, deleted) and pauses (03 §18 rule 4, rule 8)."""
        from .queue import QueueConfig

        self.next_definitions = now + DEFINITIONS_EVERY_S
        db = self.engine.db
        paused = db.list_paused_queues()
        rows = {r.name: r for r in db.list_queues()}
        self.definitions = {name: row.config for name, row in rows.items()}
        for name, row in rows.items():
            if QUEUES.get(name) is not None or (self.listen is not None and name not in self.listen):
                continue
            cfg = QueueConfig.from_json(row.config)
            st = self._state_for(name, cfg.limits, cfg.polling_interval_sec)
            st.limits, st.polling_s, st.database_backed, st.dirty = (
                cfg.limits,
                cfg.polling_interval_sec,
                True,
                True,
            )
            st.declared = asdict(cfg)
        with self.lock:
            for name, st in list(self.states.items()):
                if st.database_backed and name not in rows:
                    del self.states[name]  # deleted: its rows wait, stranded, until it is defined again
                else:
                    was, st.paused = st.paused, name in paused
                    st.dirty = st.dirty or (was and not st.paused)

    def check_stranded(self, now: float) -> None:
        """Warn about stranded work; one executor of the application looks per interval (a maintenance lease),
        so the cost of counting ENQUEUED rows by version does not grow with the number of executors."""
        self.next_stranded = now + STRANDED_EVERY_S
        e = self.engine
        holder = f"{e.executor_id}/{e.incarnation}"
        ttl_ms = int(STRANDED_EVERY_S * 1000 * 0.9)  # under one interval: the winner looks once per interval
        if e.db.try_maintenance_lease(f"stranded:{e.settings.name}", holder, ttl_ms):
            self.stranded_warnings.report(find_stranded(e), now)

    def _promote(self) -> None:
        res = self.engine.db.promote_delayed()
        now = time.monotonic()
        self.next_promote = now + PROMOTE_EVERY_S
        if res.next_due_ms is not None:
            due = now + max(0.0, (res.next_due_ms - self.engine.db.now_ms()) / 1000)
            self.next_promote = min(self.next_promote, due)

    def _claim(self, st: QueueState) -> int:
        e = self.engine
        lim = st.limits
        budget = local_budget(e.free_threads, lim.worker_concurrency, st.in_flight)
        names = e.registry.workflow_names()
        if budget == 0 or not names:
            return 0
        result = e.db.claim(
            ClaimRequest(
                queue_name=st.name,
                executor_id=e.executor_id,
                incarnation=e.incarnation,
                application_name=e.settings.name,
                application_version=e.application_version,
                registered=names,
                max_rows=budget,
                batch_token=secrets.token_hex(16),
                global_concurrency=lim.global_concurrency,
                rate=_rate(lim.rate),
                partitioned=lim.partitioned,
                partition_concurrency=lim.partition_concurrency,
                partition_rate=_rate(lim.partition_rate),
                partition_local_room=partition_room(lim.partition_worker_concurrency, st.lanes),
                partition_worker_concurrency=lim.partition_worker_concurrency,
                lane_order=tuple(st.lane_order),
            )
        )
        fp.failpoint("claim.after_commit")
        st.rate_retry_at = None
        if result.next_rate_slot_ms is not None:
            st.rate_retry_at = time.monotonic() + max(0.0, (result.next_rate_slot_ms - e.db.now_ms()) / 1000)
        with self.lock:
            for c in result.claimed:
                st.served(c.row.partition_key)
        start_claimed(e, result.claimed, lambda c: self._finished(st, c))
        return len(result.claimed)

    def _finished(self, st: QueueState, c: ClaimedWorkflow) -> None:
        """A local slot is free. On a busy queue, claim once a quarter of its slots are free or within
        COALESCE_S, whichever comes first: one claim statement then serves many completions."""
        with self.lock:
            st.finished(c.row.partition_key)
            cap = st.limits.worker_concurrency or st.limits.global_concurrency
            free = None if cap is None else cap - st.in_flight
            if free is None or st.in_flight == 0 or free >= max(1, cap // 4):  # type: ignore[operator]
                st.dirty = True
            elif st.coalesce_at is None:
                st.coalesce_at = time.monotonic() + COALESCE_S
        self.waiter.notify()
