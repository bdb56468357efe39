"""State of one execution of one workflow in this process: its fence, step counter and recorded steps."""

from __future__ import annotations

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
        self.waiter.notify()

    def cancel(self) -> None:
        self.cancelled = True
        self.waiter.notify()

    @property
    def stopped(self) -> bool:
        return self.fenced or self.cancelled
