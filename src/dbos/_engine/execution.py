"""State of one execution of one workflow in this process: its fence, step counter and recorded steps."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

from .._store.base import Fence, StepRow
from ..error import DBOSWorkflowCancelledError, DBOSWorkflowConflictIDError
from .waits import Waiter


@dataclass(eq=False)
class Execution:
    workflow_id: str
    name: str
    fence: Fence
    checkpoints: dict[int, StepRow] = field(default_factory=dict)
    deadline_ms: int | None = None
    is_async: bool = False
    cancelled: bool = False
    fenced: bool = False
    waiter: Waiter = field(default_factory=Waiter)
    _counter: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    extras: dict[str, Any] = field(default_factory=dict)
    _step_tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def next_step_id(self) -> int:
        with self._lock:
            self._counter += 1
            return self._counter

    def check_boundary(self) -> None:
        """At every DBOS boundary: stop a fenced or cancelled execution (01 §6.3 rule 9)."""
        if self.fenced:
            raise DBOSWorkflowConflictIDError(self.workflow_id)
        if self.cancelled:
            raise DBOSWorkflowCancelledError(f"Workflow {self.workflow_id} was cancelled")

    def fence_off(self) -> None:
        self.fenced = True
        self._interrupt()

    def cancel(self) -> None:
        self.cancelled = True
        self._interrupt()

    def _interrupt(self) -> None:
        """Wake every wait and cancel async step attempts in progress (01 §13 rule 4)."""
        self.waiter.notify()
        with self._lock:
            tasks = list(self._step_tasks)
        for task in tasks:
            try:
                task.get_loop().call_soon_threadsafe(task.cancel)
            except RuntimeError:  # loop closed
                pass

    def track(self, task: asyncio.Task[Any]) -> None:
        with self._lock:
            self._step_tasks.add(task)
        if self.stopped:
            task.cancel()

    def untrack(self, task: asyncio.Task[Any]) -> None:
        with self._lock:
            self._step_tasks.discard(task)

    @property
    def stopped(self) -> bool:
        return self.fenced or self.cancelled
