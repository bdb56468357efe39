"""Helpers shared by the store conformance suites (the `store` and `peer` fixtures live in tests/conftest.py)."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from dbos._store import open_system_store
from dbos._store.base import Change, Fence, NewWorkflow, Payload, StoreSettings, SystemStore


def open_store(url: str, role: str = "executor") -> SystemStore:
    return open_system_store(url, StoreSettings(role=role, poll_ceiling_s=0.05))  # type: ignore[arg-type]


def token() -> str:
    return secrets.token_hex(16)


def new_wf(workflow_id: str | None = None, *, status: str = "PENDING", **kw: Any) -> NewWorkflow:
    owner = ("exec-a", 1, token()) if status == "PENDING" else None
    return NewWorkflow(
        workflow_id=workflow_id or f"wf-{token()}",
        name=kw.pop("name", "wf"),
        class_name=None,
        config_name=None,
        inputs=Payload('{"args": []}', "json"),
        receiver=None,
        status=status,  # type: ignore[arg-type]
        owner=owner,
        creator_token=token(),
        **kw,
    )


def fence_of(new: NewWorkflow) -> Fence:
    assert new.owner is not None
    return Fence(new.workflow_id, new.owner[2])


def pending(store: SystemStore, workflow_id: str | None = None, **kw: Any) -> Fence:
    """Insert a PENDING workflow owned by this test and return its fence."""
    new = new_wf(workflow_id, **kw)
    assert store.insert_workflow(new).kind == "created"
    return fence_of(new)


class Recorder:
    """A change subscriber that keeps what it was given."""

    def __init__(self) -> None:
        self.changes: list[Change] = []
        self.lock = threading.Lock()

    def __call__(self, change: Change) -> None:
        with self.lock:
            self.changes.append(change)

    def seen(self) -> list[Change]:
        with self.lock:
            return list(self.changes)

    def wait_for(self, pred: Callable[[Change], bool], timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if any(pred(c) for c in self.changes):
                    return True
            time.sleep(0.005)
        return False
