"""In-process wake-up registry: waits block on a Waiter registered under keys such as ("wf", id).

Writers in this process and the store's change feed (NOTIFY on Postgres, the data_version detector on SQLite)
signal keys; cancellation, fencing and destroy signal an execution's own waiter. A Waiter serves both a
blocking thread and an asyncio task, so sync and async waits share one mechanism.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable

from .._store.base import Change

Key = tuple[str | None, ...]


class Waiter:
    def __init__(self) -> None:
        self._event = threading.Event()
        self._async: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None
        self._lock = threading.Lock()

    def notify(self) -> None:
        self._event.set()
        with self._lock:
            target = self._async
        if target is not None:
            loop, event = target
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # loop closed
                pass

    def wait(self, timeout: float | None) -> bool:
        """Block until notified or timeout; returns True if notified. Clears the signal."""
        fired = self._event.wait(timeout)
        self._event.clear()
        return fired

    async def wait_async(self, timeout: float | None) -> bool:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._async is None or self._async[0] is not loop:
                self._async = (loop, asyncio.Event())
            event = self._async[1]
        if self._event.is_set():
            self._event.clear()
            return True
        try:
            await asyncio.wait_for(event.wait(), timeout)
            fired = True
        except asyncio.TimeoutError:
            fired = False
        event.clear()
        self._event.clear()
        return fired


class WakeRegistry:
    def __init__(self) -> None:
        self._by_key: dict[Key, set[Waiter]] = {}
        self._lock = threading.Lock()

    def register(self, keys: Iterable[Key], waiter: Waiter) -> None:
        with self._lock:
            for key in keys:
                self._by_key.setdefault(key, set()).add(waiter)

    def unregister(self, keys: Iterable[Key], waiter: Waiter) -> None:
        with self._lock:
            for key in keys:
                waiters = self._by_key.get(key)
                if waiters is not None:
                    waiters.discard(waiter)
                    if not waiters:
                        del self._by_key[key]

    def signal(self, key: Key) -> None:
        with self._lock:
            waiters = list(self._by_key.get(key, ()))
        for w in waiters:
            w.notify()

    def signal_kind(self, kind: str) -> None:
        with self._lock:
            waiters = [w for k, ws in self._by_key.items() if k and k[0] == kind for w in ws]
        for w in waiters:
            w.notify()

    def signal_all(self) -> None:
        with self._lock:
            waiters = [w for ws in self._by_key.values() for w in ws]
        for w in waiters:
            w.notify()

    def on_change(self, change: Change) -> None:
        """Change-feed callback: never blocks."""
        if change.kind == "all":
            self.signal_all()
        elif not change.key:
            self.signal_kind(change.kind)
        else:
            self.signal((change.kind, *change.key))
