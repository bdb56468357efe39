"""Queue definitions and pauses on SQLite (03 §18; 07 §2.2 "Queues and claims").

Each write is one `BEGIN IMMEDIATE` transaction of `SQLiteDB.write`; `update_queue` reads, validates and writes
inside it, so concurrent updates serialize on the file's write lock. A write that changed nothing writes nothing
(no change_log row), so the transaction is rolled back and counts as a read.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from typing import Any

from . import base
from .queue_defs import CTL_KEY, DEF_COLUMNS, def_row, merged_config
from .sqlite_conn import WriteTx

_COLS = ", ".join(DEF_COLUMNS)
_GET = f"SELECT {_COLS} FROM dbos_queue_defs WHERE name = ?"


def _emit(tx: WriteTx, name: str) -> None:
    tx.emit("ctl", CTL_KEY)
    tx.emit("queue", name)


def _returned(cur: sqlite3.Cursor) -> base.QueueDefRow:
    row = cur.fetchone()
    assert row is not None
    return def_row(row)


def upsert_queue(
    tx: WriteTx, name: str, config: str, overwrite: bool, application_name: str | None
) -> base.QueueDefRow:
    current = tx.execute(_GET, (name,)).fetchone()
    if current is None:
        cur = tx.execute(
            f"INSERT INTO dbos_queue_defs ({_COLS}) VALUES (?, ?, 1, ?, ?, ?) RETURNING {_COLS}",
            (name, config, application_name, tx.now, tx.now),
        )
    elif not overwrite:
        return def_row(current)
    else:
        return _replace_config(tx, name, config)
    row = _returned(cur)
    _emit(tx, name)
    return row


def _replace_config(tx: WriteTx, name: str, config: str) -> base.QueueDefRow:
    cur = tx.execute(
        "UPDATE dbos_queue_defs SET config = ?, revision = revision + 1, updated_at = ? WHERE name = ? "
        f"RETURNING {_COLS}",
        (config, tx.now, name),
    )
    row = _returned(cur)
    _emit(tx, name)
    return row


def update_queue(
    tx: WriteTx,
    name: str,
    patch: Mapping[str, Any],
    validate: Callable[[Mapping[str, Any]], None],
    max_bytes: int,
) -> base.QueueDefRow | None:
    current = tx.execute(_GET, (name,)).fetchone()
    if current is None:
        return None
    return _replace_config(tx, name, merged_config(current["config"], patch, validate, max_bytes))


def delete_queue(tx: WriteTx, name: str) -> bool:
    deleted = tx.execute("DELETE FROM dbos_queue_defs WHERE name = ?", (name,)).rowcount > 0
    if deleted:
        _emit(tx, name)
    return deleted


def set_queue_paused(tx: WriteTx, name: str, paused: bool) -> None:
    if paused:
        cur = tx.execute(
            "INSERT INTO dbos_queue_pauses (queue_name, paused_at) VALUES (?, ?) "
            "ON CONFLICT (queue_name) DO NOTHING",
            (name, tx.now),
        )
    else:
        cur = tx.execute("DELETE FROM dbos_queue_pauses WHERE queue_name = ?", (name,))
    if cur.rowcount > 0:
        _emit(tx, name)


def get_queue(conn: sqlite3.Connection, name: str) -> base.QueueDefRow | None:
    row = conn.execute(_GET, (name,)).fetchone()
    return None if row is None else def_row(row)


def list_queues(conn: sqlite3.Connection) -> list[base.QueueDefRow]:
    return [def_row(r) for r in conn.execute(f"SELECT {_COLS} FROM dbos_queue_defs ORDER BY name")]


def list_paused_queues(conn: sqlite3.Connection) -> frozenset[str]:
    return frozenset(str(r[0]) for r in conn.execute("SELECT queue_name FROM dbos_queue_pauses"))
