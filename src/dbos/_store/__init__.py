"""System-database access. Callers use `open_system_store` and the records of `dbos._store.base` only."""

from __future__ import annotations

from .base import StoreSettings, SystemStore


def backend_of(url: str) -> str:
    """'sqlite' or 'postgres' for a validated system-database URL."""
    if url.startswith("sqlite:"):
        return "sqlite"
    return "postgres"


def open_system_store(url: str, settings: StoreSettings) -> SystemStore:
    """Open (and for executors and tools, create if missing) the system database at `url`."""
    if backend_of(url) == "sqlite":
        from .sqlite import SQLiteStore

        return SQLiteStore(url, settings)
    from .postgres import PostgresStore

    return PostgresStore(url, settings)


def reset_system_store(url: str, *, schema: str, truncate: bool) -> None:
    """Drop (or with `truncate`, empty) DBOS's own objects at `url`; user tables are never touched."""
    if backend_of(url) == "sqlite":
        from .sqlite import reset_sqlite

        reset_sqlite(url, truncate=truncate)
    else:
        from .postgres import reset_postgres

        reset_postgres(url, schema=schema, truncate=truncate)
