"""Database-backed queues and pauses (03 §18): definitions are rows shared by every process of the database."""

from __future__ import annotations

from typing import Any, Literal

from .._management import runs_latest_version
from .._validation import check_identifier
from ..error import DBOSException, DBOSValidationError
from .queue import QUEUES, Queue, QueueConfig, check_queue_name

OnConflict = Literal["update_if_latest_version", "always_update", "never_update"]
_ON_CONFLICT = ("update_if_latest_version", "always_update", "never_update")


def _engine() -> Any:
    from .._dbos import current_engine

    return current_engine()


def refuse_if_registered(name: str) -> None:
    """`Queue(name)` in a launched process for a name registered in the database is a conflict (§18 rule 3)."""
    from .._dbos import current_engine_or_none

    engine = current_engine_or_none()
    if engine is not None and engine.db.get_queue(name) is not None:
        raise DBOSException(
            f"queue {name!r} is registered in the database; use DBOS.retrieve_queue({name!r})"
        )


def stored_config(name: str) -> QueueConfig:
    row = _engine().db.get_queue(name)
    if row is None:
        raise DBOSException(f"database-backed queue {name!r} no longer exists (it was deleted)")
    return QueueConfig.from_json(row.config)


def _remember(engine: Any, name: str, config: str | None) -> None:
    """Keep the dispatcher's copy of the definitions current for this process's own changes."""
    if engine.dispatcher is None:
        return
    if config is None:
        engine.dispatcher.definitions.pop(name, None)
    else:
        engine.dispatcher.definitions[name] = config


def update_stored(name: str, patch: dict[str, Any]) -> None:
    engine = _engine()
    row = engine.db.update_queue(name, patch, lambda merged: QueueConfig.validated(merged))
    if row is None:
        raise DBOSException(f"database-backed queue {name!r} no longer exists (it was deleted)")
    _remember(engine, name, row.config)


def register_queue(name: str, on_conflict: str, settings: dict[str, Any]) -> Queue:
    checked = check_queue_name(name)
    if on_conflict not in _ON_CONFLICT:
        raise DBOSValidationError(f"on_conflict must be one of {_ON_CONFLICT}, got {on_conflict!r}")
    config = QueueConfig.validated(settings)
    engine = _engine()
    if QUEUES.get(checked) is not None:
        raise DBOSException(
            f"queue {checked!r} is declared in memory in this process; it cannot also be registered"
        )
    overwrite = on_conflict == "always_update" or (
        on_conflict == "update_if_latest_version"
        and runs_latest_version(engine.db, engine.settings.name, engine.application_version)
    )
    row = engine.db.upsert_queue(
        checked, config.to_json(), overwrite=overwrite, application_name=engine.settings.name
    )
    _remember(engine, checked, row.config)
    return Queue._database_backed(checked)


def retrieve_queue(name: str) -> Queue | None:
    checked = check_identifier(name, "queue name")
    return Queue._database_backed(checked) if _engine().db.get_queue(checked) is not None else None


def delete_queue(name: str) -> None:
    engine = _engine()
    checked = check_identifier(name, "queue name")
    engine.db.delete_queue(checked)
    _remember(engine, checked, None)


def list_queues() -> list[Queue]:
    return [Queue._database_backed(row.name) for row in _engine().db.list_queues()]


def set_paused(name: str, paused: bool) -> None:
    from .._store.base import INTERNAL_QUEUE

    checked = check_identifier(name, "queue name")
    if checked == INTERNAL_QUEUE:
        raise DBOSException("the internal queue cannot be paused: it carries recovery")
    _engine().db.set_queue_paused(checked, paused)
