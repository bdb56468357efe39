"""Group commit (07 §8): commit lanes shared by solo writes and batches of small writes.

A write that finds an idle lane runs at once, alone: nothing is added to its latency and there is no timer. While
every lane is busy, batchable writes join one pending batch; the first of their callers to find a lane free runs the
batch (its own op and everybody else's, up to `max_ops`) in one transaction, and every caller is released once its
op is committed. A caller's added latency is therefore at most the duration of the batch running ahead of it.

The lanes know nothing about SQL: the backend passes `run_alone` (one op, its own transaction) and `run_batch`
(many ops, one transaction, each op's own result or error).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from . import base

P = TypeVar("P")

MAX_BATCH_OPS = 256
MAX_BATCH_BYTES = 8 * 1024 * 1024


class Pending(Generic[P]):
    """One op waiting in a batch: its payload and, once done, its result or its error."""

    __slots__ = ("payload", "size", "done", "result", "error")

    def __init__(self, payload: P, size: int) -> None:
        self.payload = payload
        self.size = size
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None

    def succeed(self, result: Any) -> None:
        self.result, self.done = result, True

    def fail(self, error: BaseException) -> None:
        self.error, self.done = error, True

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


class CommitLanes(Generic[P]):
    def __init__(self, lanes: int, *, max_ops: int = MAX_BATCH_OPS, max_bytes: int = MAX_BATCH_BYTES) -> None:
        self._cv = threading.Condition(threading.Lock())
        self._free = max(1, lanes)
        self._pending: deque[Pending[P]] = deque()
        self._urgent = 0  # urgent solo writes waiting: no batch starts before them (07 §8 rule 6)
        self._waiters = 0  # threads blocked on the condition: a release with none skips the notify
        self._max_ops = max_ops
        self._max_bytes = max_bytes
        self._stats = base.StoreStats()

    def add_stats(self, counts: base.StoreStats) -> base.StoreStats:
        """`counts` with this lane set's batch counters filled in."""
        with self._cv:
            s = self._stats
            counts.batches, counts.batch_ops = s.batches, s.batch_ops
            counts.batch_sizes, counts.lane_waits = dict(s.batch_sizes), s.lane_waits
        return counts

    def waiting(self) -> int:
        """Ops waiting for the next batch."""
        with self._cv:
            return len(self._pending)

    @contextmanager
    def solo(self, *, urgent: bool = False) -> Iterator[None]:
        """Hold one lane for a write that never joins a batch."""
        with self._cv:
            if self._free == 0:
                self._stats.lane_waits += 1
                self._urgent += int(urgent)
                self._waiters += 1
                try:
                    while self._free == 0:
                        self._cv.wait()
                finally:
                    self._waiters -= 1
                    self._urgent -= int(urgent)
            self._free -= 1
        try:
            yield
        finally:
            self._release(0)

    def submit(
        self,
        payload: P,
        run_alone: Callable[[P], Any],
        run_batch: Callable[[Sequence[Pending[P]]], None],
        *,
        size: int = 0,
    ) -> Any:
        """Run one batchable op, alone on an idle lane or as part of a batch; returns its result or raises."""
        item = Pending(payload, size)
        with self._cv:
            alone = self._free > 0 and not self._pending and not self._urgent
            if alone:
                self._free -= 1
            else:
                self._stats.lane_waits += 1
                self._pending.append(item)
        if alone:
            try:
                return run_alone(payload)
            finally:
                self._release(1)
        while True:
            with self._cv:
                self._waiters += 1
                while not item.done and not (self._free > 0 and self._pending and not self._urgent):
                    self._cv.wait()
                self._waiters -= 1
                if item.done:
                    return item.outcome()
                self._free -= 1
                batch = self._take()
            try:
                self._run(batch, run_alone, run_batch)
            finally:
                self._release(len(batch))

    def _take(self) -> list[Pending[P]]:
        batch = [self._pending.popleft()]
        size = batch[0].size
        while self._pending and len(batch) < self._max_ops:
            nxt = self._pending[0]
            if size + nxt.size > self._max_bytes:
                break
            size += nxt.size
            batch.append(self._pending.popleft())
        return batch

    @staticmethod
    def _run(
        batch: list[Pending[P]],
        run_alone: Callable[[P], Any],
        run_batch: Callable[[Sequence[Pending[P]]], None],
    ) -> None:
        try:
            if len(batch) == 1:
                batch[0].succeed(run_alone(batch[0].payload))
            else:
                run_batch(batch)
        except Exception as exc:
            for it in batch:
                if not it.done:
                    it.fail(exc)
        except BaseException as exc:
            # The runner itself was interrupted: its own op sees the interruption, the others an unknown outcome.
            lost = base.UnknownStorageError(f"the batch was interrupted: {exc!r}", op="group_commit")
            for it in batch:
                if not it.done:
                    it.fail(lost)
            raise

    def _release(self, ops: int) -> None:
        with self._cv:
            self._free += 1
            if ops:
                s = self._stats
                s.batches += 1
                s.batch_ops += ops
                s.batch_sizes[ops] = s.batch_sizes.get(ops, 0) + 1
            if self._waiters:
                self._cv.notify_all()
