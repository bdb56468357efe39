"""The PostgreSQL side of the migration runner (07 §9.2) and `reset_postgres`."""

from __future__ import annotations

import logging
import time
from typing import Any

import psycopg
from psycopg import sql

from . import base, migrate
from .postgres_conn import NOW_MS, ConnSpec, advisory_key, connect_kwargs, database_exists, parse_url
from .postgres_errors import backoff_s

_log = logging.getLogger("dbos")

Conn = psycopg.Connection[tuple[Any, ...]]

MIGRATION_SET = "postgres"
MIGRATE_LOCK_TIMEOUT = "60s"
DDL_LOCK_TIMEOUT = "5s"
DDL_LOCK_ATTEMPTS = 10


def _init_error(message: str) -> Exception:
    from ..error import DBOSInitializationError

    return DBOSInitializationError(message)


def _table_exists(conn: Conn, schema: str, table: str) -> bool:
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
        "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s)",
        (schema, table),
    ).fetchone()
    return bool(row and row[0])


def _applied(conn: Conn, schema: str) -> list[migrate.AppliedMigration]:
    query = sql.SQL(
        "SELECT version, name, checksum, compatible_from FROM {}.schema_migrations ORDER BY version"
    ).format(sql.Identifier(schema))
    return [
        migrate.AppliedMigration(
            version=int(r[0]), name=str(r[1]), checksum=str(r[2]), compatible_from=int(r[3])
        )
        for r in conn.execute(query).fetchall()
    ]


def current_plan(conn: Conn, schema: str) -> migrate.Plan:
    files = migrate.load_migrations(MIGRATION_SET)
    if not _table_exists(conn, schema, "schema_migrations"):
        return migrate.plan(files, [], table_exists=False)
    return migrate.plan(files, _applied(conn, schema))


def _setup(conn: Conn, schema: str) -> None:
    """Create the schema and `schema_migrations` if missing; no DDL when they exist."""
    if _table_exists(conn, schema, "schema_migrations"):
        return
    ident = sql.Identifier(schema)
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {}.schema_migrations (version INTEGER NOT NULL PRIMARY KEY, "
            'name TEXT COLLATE "C" NOT NULL, checksum TEXT COLLATE "C" NOT NULL, compatible_from INTEGER NOT NULL, '
            'applied_at BIGINT NOT NULL, library_version TEXT COLLATE "C" NOT NULL)'
        ).format(ident)
    )


def _record(conn: Conn, schema: str, mf: migrate.MigrationFile) -> None:
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.schema_migrations (version, name, checksum, compatible_from, applied_at, "
            "library_version) VALUES (%s, %s, %s, %s, " + NOW_MS + ", %s)"
        ).format(sql.Identifier(schema)),
        (mf.version, mf.name, mf.checksum, mf.compatible_from, migrate.library_version()),
    )


def _apply_one(conn: Conn, schema: str, mf: migrate.MigrationFile) -> None:
    """One migration in its own transaction with its row; DDL lock timeouts are retried (07 §9.2 rule 5)."""
    body = migrate.render_schema(mf.sql, schema)
    for attempt in range(DDL_LOCK_ATTEMPTS):
        try:
            if mf.transaction:
                with conn.transaction():
                    conn.execute(body.encode(), prepare=False)
                    _record(conn, schema, mf)
            else:
                conn.execute(body.encode(), prepare=False)
                _record(conn, schema, mf)
            _log.info("applied system database migration %04d_%s", mf.version, mf.name)
            return
        except psycopg.errors.LockNotAvailable:
            if attempt + 1 == DDL_LOCK_ATTEMPTS:
                raise
            time.sleep(backoff_s(attempt))


def _lock(conn: Conn, key: int) -> None:
    conn.execute("SET statement_timeout = 0")
    conn.execute(f"SET lock_timeout = '{MIGRATE_LOCK_TIMEOUT}'")
    try:
        conn.execute("SELECT pg_advisory_lock(%s)", (key,))
    except psycopg.errors.LockNotAvailable as exc:
        raise _init_error(
            "another process has held the system database migration lock for 60 s; is a migration stuck?"
        ) from exc
    conn.execute(f"SET lock_timeout = '{DDL_LOCK_TIMEOUT}'")


def run_migrations(conn: Conn, schema: str) -> base.MigrationReport:
    """Migrate on the dedicated connection `conn` (autocommit), under the migration advisory lock."""
    key = advisory_key(schema, "migrate")
    _lock(conn, key)
    try:
        _setup(conn, schema)
        p = current_plan(conn, schema)
        migrate.require_compatible(p)
        applied: list[int] = []
        for mf in p.pending:
            _apply_one(conn, schema, mf)
            applied.append(mf.version)
        return base.MigrationReport(
            before=p.current, after=applied[-1] if applied else p.current, applied=applied
        )
    finally:
        if not conn.closed and not conn.broken:
            conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


def reset_postgres(url: str, *, schema: str, truncate: bool) -> None:
    """Drop the schema (or empty its tables, keeping `schema_migrations`); a missing database is a no-op."""
    spec: ConnSpec = parse_url(url, app_label="reset")
    if not database_exists(spec):
        return
    with psycopg.connect(spec.conninfo, **connect_kwargs(spec)) as conn:
        ident = sql.Identifier(schema)
        if not truncate:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(ident))
            return
        rows = conn.execute(
            "SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND c.relname <> 'schema_migrations' "
            "ORDER BY c.relname",
            (schema,),
        ).fetchall()
        if rows:
            tables = sql.SQL(", ").join(sql.Identifier(schema, str(r[0])) for r in rows)
            conn.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(tables))
