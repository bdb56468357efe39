"""Helpers shared by the store conformance suites (the `store` and `peer` fixtures live in tests/conftest.py)."""

from __future__ import annotations

import secrets
from typing import Any

from dbos._store import open_system_store
from dbos._store.base import Fence, NewWorkflow, Payload, StoreSettings, SystemStore


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
