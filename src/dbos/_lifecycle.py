"""Launch, shutdown, reset and forced recovery: the engine-side halves of DBOS's lifecycle methods (01 §3)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from ._appdb import AppDatabase
from ._config import Settings
from ._engine.deadlines import DeadlineKeeper
from ._engine.engine import Engine
from ._engine.recovery import Recovery
from ._engine.retention import Retention
from ._queues.dispatcher import Dispatcher
from ._registry import Registry
from ._store import reset_system_store
from ._store.base import SchemaTooNew, StoreError
from .error import DBOSInitializationError

_log = logging.getLogger("dbos")
LIBRARY_VERSION = "0.1.0"


def _mask(url: str) -> str:
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url


def _open(engine: Engine) -> None:
    s = engine.settings
    try:
        store = engine.open_store()
        if s.run_migrations:
            store.migrate()
        else:
            state = store.check_schema()
            if state in ("missing", "behind", "ahead_incompatible"):
                raise DBOSInitializationError(
                    f"system database schema is {state} and run_migrations=False; run `dbos migrate` first"
                )
    except DBOSInitializationError:
        engine.shutdown(1.0)
        raise
    except (StoreError, SchemaTooNew) as e:
        engine.shutdown(1.0)
        raise DBOSInitializationError(
            f"cannot open the system database {_mask(s.system_database_url)}: {e}"
        ) from e


def launch(settings: Settings, registry: Registry, listen: list[str] | None = None) -> Engine:
    engine = Engine(settings, registry)
    _open(engine)
    if engine.application_version is None:
        engine.application_version = registry.version_digest(LIBRARY_VERSION, settings.name)
    try:
        engine.app_db = AppDatabase(
            settings.application_database_url,
            schema=settings.schema,
            separate=not settings.app_db_is_system_db,
            engine_kwargs=settings.db_engine_kwargs,
        )
        engine.app_db.prepare()
    except Exception as e:
        engine.shutdown(1.0)
        raise DBOSInitializationError(
            f"cannot open the application database {_mask(settings.application_database_url)}: {e}"
        ) from e
    try:
        engine.adopted_loop = asyncio.get_running_loop()
    except RuntimeError:
        pass
    engine.deadlines = DeadlineKeeper(engine, settings.heartbeat_interval_s)
    recovery = Recovery(engine)
    # The dispatcher exists before the registration, which publishes the queues it dispatches.
    engine.dispatcher = Dispatcher(engine, listen)
    try:
        recovery.register()
    except BaseException:
        engine.dispatcher.stop()
        raise
    engine.on_capacity = engine.wake_dispatcher
    recovery.scan()
    recovery.start()
    engine.deadlines.start()
    Retention(engine).start()
    engine.dispatcher.start()
    engine.recovery = recovery
    return engine


def shutdown(engine: Engine, *, grace_s: float = 0.0, total_timeout_s: float = 5.0) -> None:
    """Stop claiming, wait up to `grace_s`, fence what still runs, mark this executor STOPPED, close."""
    engine.stopping.set()
    deadline = time.monotonic() + grace_s
    while engine.active_executions() and time.monotonic() < deadline:
        time.sleep(0.01)
    for ex in engine.active_executions():
        ex.fence_off()
    _mark_stopped(engine, timeout_s=min(2.0, total_timeout_s / 2))
    if engine.dispatcher is not None:
        engine.dispatcher.stop()
    engine.shutdown(total_timeout_s)


def _mark_stopped(engine: Engine, *, timeout_s: float) -> None:
    """Record this executor as STOPPED so peers take over at once (01 §3.3 rule 5); bounded, because the store
    retries an unreachable database for much longer than destroy() may take."""
    store = engine.store
    if store is None or not engine.incarnation:
        return
    done = threading.Event()

    def mark() -> None:
        try:
            store.mark_stopped(engine.executor_id, engine.incarnation)
            done.set()
        except Exception:
            pass

    threading.Thread(target=mark, name="dbos-mark-stopped", daemon=True).start()
    if not done.wait(timeout_s):
        _log.warning("could not mark executor %s as stopped (database unreachable?)", engine.executor_id)


def reset_databases(settings: Settings | None, url: str | None, schema: str | None, truncate: bool) -> None:
    target = url or (settings.system_database_url if settings else None)
    if target is None:
        return
    from ._config import _check_url

    target = _check_url("system_database_url", target)
    reset_system_store(target, schema=schema or (settings.schema if settings else "dbos"), truncate=truncate)
    if settings is not None and not settings.app_db_is_system_db and url is None:
        app = AppDatabase(
            settings.application_database_url, schema=settings.schema, separate=True, engine_kwargs={}
        )
        try:
            app.reset()
        finally:
            app.dispose()


def force_recover(engine: Engine, executor_ids: list[str] | None) -> list[str]:
    """Re-enqueue PENDING workflows of the given executors (default: this one) (02 §12.7 rule 19)."""
    if executor_ids is None:
        running = engine.active_executions()
        for ex in running:
            ex.fence_off()
        released: list[str] = engine.db.release([ex.fence for ex in running], refund_attempt=False)
        engine.wake_dispatcher()
        return released
    from ._validation import check_id_list

    wanted = set(check_id_list(executor_ids, "executor_ids"))
    ids: list[str] = []
    for row in engine.db.list_executors(include_inactive=True):
        if row.executor_id in wanted:
            if row.state == "ALIVE" and row.lease_expires_at > engine.db.now_ms():
                _log.warning("forced recovery of a live executor %s", row.executor_id)
            ids += engine.db.take_over(row.executor_id, row.incarnation, require_expired=False)
    engine.wake_dispatcher()
    return ids
