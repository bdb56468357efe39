"""A pool of daemon threads for workflow bodies.

`concurrent.futures.ThreadPoolExecutor` joins its (non-daemon) workers before `atexit` handlers run, so a workflow
blocked in `DBOS.sleep(60)` would hold interpreter exit for a minute. DBOS fences and wakes its workflows from an
atexit hook instead (01 §3.3 rule 9), which needs daemon workers.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

_log = logging.getLogger("dbos")
IDLE_EXIT_S = 30.0


class DaemonPool:
    def __init__(self, max_workers: int, name: str) -> None:
        self.max_workers = max_workers
        self.name = name
        self._tasks: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._workers = 0
        self._idle = 0  # workers waiting for a task
        self._pending = 0  # tasks queued and not yet taken
        self._closed = False

    def submit(self, fn: Callable[[], None]) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the workflow pool is shut down")
            self._pending += 1
            spawn = self._pending > self._idle and self._workers < self.max_workers
            if spawn:
                self._workers += 1
        self._tasks.put(fn)
        if spawn:
            threading.Thread(target=self._work, name=f"{self.name}-{self._workers}", daemon=True).start()

    def _take(self) -> Callable[[], None] | None:
        """The next task, or None when this worker should exit (idle too long, or shut down)."""
        with self._lock:
            self._idle += 1
        try:
            fn = self._tasks.get(timeout=IDLE_EXIT_S)
        except queue.Empty:
            fn = None
        with self._lock:
            self._idle -= 1
            if fn is not None:
                self._pending -= 1
                return fn
            self._workers -= 1
            return None

    def _work(self) -> None:
        while (fn := self._take()) is not None:
            try:
                fn()
            except BaseException:
                _log.exception("unhandled error in a workflow thread")

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            n = self._workers
        for _ in range(n):
            self._tasks.put(None)
