"""Fixtures for public-API tests: a launched DBOS on a fresh database of each backend."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dbos import DBOS


@pytest.fixture
def dbos_config(db_url: str) -> dict[str, Any]:
    return {
        "name": "test-app",
        "system_database_url": db_url,
        "executor_heartbeat_interval_sec": 0.5,
        "executor_lease_sec": 3.0,
    }


@pytest.fixture
def dbos(dbos_config: dict[str, Any]) -> Iterator[type[DBOS]]:
    DBOS.destroy(destroy_registry=True)
    DBOS(config=dbos_config)  # type: ignore[arg-type]
    DBOS.launch()
    try:
        yield DBOS
    finally:
        DBOS.destroy(destroy_registry=True)


@pytest.fixture
def relaunch(dbos_config: dict[str, Any]) -> Callable[[], None]:
    """Destroy and launch again on the same database, keeping the registry (simulates a restart)."""

    def go() -> None:
        DBOS.destroy()
        DBOS(config=dbos_config)  # type: ignore[arg-type]
        DBOS.launch()

    return go
