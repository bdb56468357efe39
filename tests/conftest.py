"""Shared fixtures: every database test runs against a fresh SQLite file and a fresh Postgres database."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

PG_ADMIN_URL = os.environ.get("DBOS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return True
    except Exception:
        return False


_PG_OK: bool | None = None


def require_pg() -> None:
    global _PG_OK
    if _PG_OK is None:
        _PG_OK = _pg_available()
    if not _PG_OK:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required under CI=true but {PG_ADMIN_URL} is not reachable")
        pytest.skip("PostgreSQL not reachable on 127.0.0.1:5432 (set up by `make test`)")


def pg_url_for(dbname: str) -> str:
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{dbname}"


def create_pg_database() -> str:
    import psycopg

    name = f"dbosx_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_pg_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres":
        require_pg()
    return str(request.param)


@pytest.fixture
def db_url(backend: str, tmp_path: os.PathLike[str]) -> Iterator[str]:
    """A URL of an empty system database on the current backend."""
    if backend == "sqlite":
        yield f"sqlite:///{os.path.join(str(tmp_path), 'test.sqlite')}"
        return
    name = create_pg_database()
    try:
        yield pg_url_for(name)
    finally:
        drop_pg_database(name)


# --- a launched DBOS on a fresh database of each backend ---------------------------------------------


@pytest.fixture
def dbos_config(db_url: str) -> dict[str, Any]:
    return {
        "name": "test-app",
        "system_database_url": db_url,
        "executor_heartbeat_interval_sec": 0.5,
        "executor_lease_sec": 3.0,
    }


def _restore_module_queues(module: Any) -> None:
    """Queues declared at a test module's top level, cleared meanwhile by another module's fixture (test order
    varies under xdist), are declared again before launch."""
    from dbos import Queue
    from dbos._queues.queue import QUEUES

    for value in vars(module).values():
        if isinstance(value, Queue) and not value.database_backed and QUEUES.get(value.name) is None:
            QUEUES.add(value)


@pytest.fixture
def dbos(dbos_config: dict[str, Any], request: pytest.FixtureRequest) -> Iterator[Any]:
    from dbos import DBOS

    DBOS.destroy()
    _restore_module_queues(request.module)
    DBOS(config=dbos_config)  # type: ignore[arg-type]
    DBOS.launch()
    try:
        yield DBOS
    finally:
        DBOS.destroy()  # the registry is process-global and kept: module-level classes stay registered


@pytest.fixture
def relaunch(dbos_config: dict[str, Any]) -> Callable[[], None]:
    """Destroy and launch again on the same database, keeping the registry (simulates a restart)."""
    from dbos import DBOS

    def go() -> None:
        DBOS.destroy()
        DBOS(config=dbos_config)  # type: ignore[arg-type]
        DBOS.launch()

    return go


# --- helpers for timing-sensitive tests (import with `from conftest import ...`) ----------------------------


def wait_for(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll `pred` every 10 ms until it holds; fail after `timeout` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.01)
    raise AssertionError("condition not reached in time")


class Overlap:
    """Counts how many bodies run at once: `with overlap:` around a workflow body; `peak` is the maximum."""

    def __init__(self) -> None:
        import threading

        self.active = 0
        self.peak = 0
        self._lock = threading.Lock()

    def __enter__(self) -> Overlap:
        with self._lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.active -= 1


# --- system stores for the conformance suites (tests/store) -------------------------------------------------


@pytest.fixture
def store(db_url: str) -> Iterator[Any]:
    """A migrated executor-role store on a fresh database."""
    from dbos._store import open_system_store
    from dbos._store.base import StoreSettings

    s = open_system_store(db_url, StoreSettings(role="executor", poll_ceiling_s=0.05))
    s.migrate()
    yield s
    s.close()


@pytest.fixture
def peer(db_url: str, store: Any) -> Iterator[Any]:
    """A second store on the same database (another origin, as if another process)."""
    from dbos._store import open_system_store
    from dbos._store.base import StoreSettings

    s = open_system_store(db_url, StoreSettings(role="executor", poll_ceiling_s=0.05))
    yield s
    s.close()


def register_remote_executor(
    app: str, executor_id: str, version: str | None, *, queues_json: str = "{}"
) -> int:
    """Register an executor record as another host's process would (a real row, no mock); its incarnation."""
    from dbos._dbos import current_engine
    from dbos._store.base import ExecutorRegistration

    reg = ExecutorRegistration(
        executor_id=executor_id,
        application_name=app,
        application_version=version,
        hostname="elsewhere",
        host_identity="elsewhere|boot",
        pid=1,
        process_start=None,
        heartbeat_interval_ms=1_000,
        lease_ms=60_000,
        queues_json=queues_json,
    )
    return current_engine().db.register_executor(reg).incarnation
