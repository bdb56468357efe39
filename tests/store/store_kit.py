"""Helpers shared by the store conformance suites (the `store` and `peer` fixtures live in tests/conftest.py)."""

from __future__ import annotations

import secrets

from dbos._store import open_system_store
from dbos._store.base import StoreSettings, SystemStore


def open_store(url: str, role: str = "executor") -> SystemStore:
    return open_system_store(url, StoreSettings(role=role, poll_ceiling_s=0.05))  # type: ignore[arg-type]


def token() -> str:
    return secrets.token_hex(16)
