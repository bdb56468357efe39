"""Queue definitions and pauses on PostgreSQL (03 §18; 07 §2.2 "Queues and claims", §6.6).

Every write but `update_queue` is one autocommit statement that notifies the `ctl` and `queue` channels itself
when it changed a row (07 §6.6 rule 2). `update_queue` is one transaction: the row is read `FOR UPDATE`, the
merged config is validated in Python, and the update (with its notifications) commits, or nothing does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from . import base
from .postgres_conn import NOW_MS
from .postgres_rows import Conn, Row
from .postgres_sql import render, templates
from .queue_defs import CTL_KEY, DEF_COLUMNS, def_row, merged_config

_T = f"_t AS (SELECT {NOW_MS} AS ms)"
_COLS = ", ".join(DEF_COLUMNS)


def _sql(schema: str) -> dict[str, str]:
    t = templates(schema)
    ctl = t["ctl_notify"].replace("KEY", f"'{CTL_KEY}'")

    def q(alias: str, column: str) -> str:
        return t["queue_notify"].replace("KEY", f"{alias}.{column}")

    insert = (
        f"WITH {_T}, i AS (INSERT INTO {{s}}.queue_defs ({_COLS}) SELECT %(name)s::text, %(config)s::text, 1, "
        "%(application_name)s::text, _t.ms, _t.ms FROM _t ON CONFLICT (name) DO {action} "
        f"RETURNING {_COLS}) SELECT {_COLS}, {ctl}, {q('i', 'name')} FROM i"
    )
    return {
        "create": insert.replace("{action}", "NOTHING"),
        "overwrite": insert.replace(
            "{action}",
            "UPDATE SET config = EXCLUDED.config, revision = {s}.queue_defs.revision + 1, "
            "updated_at = EXCLUDED.updated_at",
        ),
        "get": f"SELECT {_COLS} FROM {{s}}.queue_defs WHERE name = %(name)s",
        "get_for_update": f"SELECT {_COLS} FROM {{s}}.queue_defs WHERE name = %(name)s FOR UPDATE",
        "update": (
            f"WITH {_T}, u AS (UPDATE {{s}}.queue_defs d SET config = %(config)s::text, "
            "revision = d.revision + 1, updated_at = _t.ms FROM _t WHERE d.name = %(name)s "
            f"RETURNING {', '.join('d.' + c for c in DEF_COLUMNS)}) "
            f"SELECT {_COLS}, {ctl}, {q('u', 'name')} FROM u"
        ),
        "delete": (
            "WITH d AS (DELETE FROM {s}.queue_defs WHERE name = %(name)s RETURNING name) "
            f"SELECT {ctl}, {q('d', 'name')} FROM d"
        ),
        "pause": (
            f"WITH {_T}, i AS (INSERT INTO {{s}}.queue_pauses (queue_name, paused_at) "
            "SELECT %(name)s::text, _t.ms FROM _t ON CONFLICT (queue_name) DO NOTHING RETURNING queue_name) "
            f"SELECT {ctl}, {q('i', 'queue_name')} FROM i"
        ),
        "resume": (
            "WITH d AS (DELETE FROM {s}.queue_pauses WHERE queue_name = %(name)s RETURNING queue_name) "
            f"SELECT {ctl}, {q('d', 'queue_name')} FROM d"
        ),
        "list": f"SELECT {_COLS} FROM {{s}}.queue_defs ORDER BY name",
        "list_paused": "SELECT queue_name FROM {s}.queue_pauses",
    }


@dataclass(frozen=True)
class DefStatements:
    create: str  # insert, or nothing if the name exists
    overwrite: str  # insert, or replace the config (revision + 1)
    get: str
    get_for_update: str
    update: str
    delete: str
    pause: str
    resume: str
    list: str
    list_paused: str


def build_def_statements(schema: str) -> DefStatements:
    ident = sql.Identifier(schema)
    return DefStatements(**{name: render(text, ident) for name, text in _sql(schema).items()})


Count = Callable[..., None]  # PostgresStore._count


def upsert_once(
    conn: Conn, st: DefStatements, params: dict[str, Any], overwrite: bool, count: Count
) -> tuple[base.QueueDefRow, bool]:
    """The row as stored and whether this call wrote it. Without `overwrite`, an existing row is read back; if it
    vanished in between (a concurrent delete), the insert is tried again."""
    while True:
        row: Row | None = conn.execute(st.overwrite if overwrite else st.create, params).fetchone()
        count("upsert_queue", commit=True)
        if row is not None:
            return def_row(row), True
        existing = conn.execute(st.get, params).fetchone()
        count("upsert_queue", read=True)
        if existing is not None:
            return def_row(existing), False


def update_once(
    conn: Conn,
    st: DefStatements,
    name: str,
    patch: Mapping[str, Any],
    validate: Callable[[Mapping[str, Any]], None],
    max_bytes: int,
    count: Count,
) -> base.QueueDefRow | None:
    """BEGIN, SELECT ... FOR UPDATE, validate, UPDATE (notifying), COMMIT; a refusal or a missing row rolls back."""
    trips = 2  # BEGIN + COMMIT / ROLLBACK
    wrote = False
    try:
        with conn.transaction():
            current = conn.execute(st.get_for_update, {"name": name}).fetchone()
            trips += 1
            if current is None:
                return None
            config = merged_config(str(current[1]), patch, validate, max_bytes)
            row = conn.execute(st.update, {"name": name, "config": config}).fetchone()
            trips += 1
            assert row is not None
            wrote = True
            return def_row(row)
    finally:
        count("update_queue", round_trips=trips, commit=wrote, read=not wrote)
