"""Deadline enforcement (02 §2 rule 6): local timers for executions in this process, and the application's
deadline sweeper for everything else (queued rows, workflows of dead executors), in one thread.

Local timers fire at `deadline - database now` measured at arming time, so host clock skew does not move the
cancellation instant. The sweeper keeps the database's earliest deadline and refreshes it at least once per
heartbeat interval; it cancels with the database clock (`cancel_expired`). Cancellation is a store write that
publishes `cancel`, which stops local executions and wakes their waits (Engine.on_change)."""

from __future__ import annotations

import heapq
import logging
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .engine import Engine

_log = logging.getLogger("dbos")
_RETRY_S = 0.5  # after a failed store call


class DeadlineKeeper:
    def __init__(self, engine: Engine, refresh_s: float) -> None:
        self._engine = engine
        self._refresh_s = max(0.05, refresh_s)
        self._heap: list[tuple[float, str]] = []  # (monotonic due time, workflow_id)
        self._cond = threading.Condition()
        self._db_next_ms: int | None = None
        self._refresh_at = 0.0
        self._thread = threading.Thread(target=self._run, name="dbos-deadlines", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._engine.background.append(self._thread)

    def arm(self, workflow_id: str, deadline_ms: int) -> None:
        remaining_s = (deadline_ms - self._engine.db.now_ms()) / 1000
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + remaining_s, workflow_id))
            self._cond.notify()

    def refresh_soon(self) -> None:
        """A row with a deadline may have appeared in the database (e.g. a queued child with an inherited one)."""
        with self._cond:
            self._refresh_at = 0.0
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._cond.notify()

    # --- the thread -----------------------------------------------------------------------------------------
    def _run(self) -> None:
        engine = self._engine
        while not engine.stopping.is_set():
            try:
                timeout = self._tick()
            except Exception:
                if engine.stopping.is_set():
                    return
                _log.exception("deadline enforcement failed; retrying")
                timeout = _RETRY_S
            with self._cond:
                if not engine.stopping.is_set():
                    self._cond.wait(timeout)

    def _due_local(self) -> list[str]:
        now = time.monotonic()
        due: list[str] = []
        with self._cond:
            while self._heap and self._heap[0][0] <= now:
                due.append(heapq.heappop(self._heap)[1])
        return [wid for wid in due if self._engine.is_running_here(wid)]

    def _tick(self) -> float:
        """Cancel what is due; return the seconds until the next thing to do."""
        engine = self._engine
        db = engine.db
        app = engine.settings.name
        due = self._due_local()
        if due:
            db.cancel_workflows(due, cancel_children=False, reason="deadline")
        if time.monotonic() >= self._refresh_at:
            self._db_next_ms = db.next_deadline(app)
            self._refresh_at = time.monotonic() + self._refresh_s
        if self._db_next_ms is not None and self._db_next_ms <= db.now_ms():
            db.cancel_expired(app)
            self._db_next_ms = db.next_deadline(app)
        return self._wait_s()

    def _wait_s(self) -> float:
        now = time.monotonic()
        waits = [self._refresh_at - now]
        with self._cond:
            if self._heap:
                waits.append(self._heap[0][0] - now)
        if self._db_next_ms is not None:
            waits.append((self._db_next_ms - self._engine.db.now_ms()) / 1000)
        return max(0.002, min(waits))  # never spin while the database clock catches up
