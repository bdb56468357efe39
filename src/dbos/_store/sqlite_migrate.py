"""The SQLite migration runner and `reset_sqlite` (07 §9.2).

All pending migrations commit together in one `BEGIN IMMEDIATE` transaction on the writer, acquired with
retries for up to 60 s. Files are split into statements with `sqlite3.complete_statement`, which keeps trigger
bodies whole; `executescript` is never used because it commits the open transaction.
"""

from __future__ import annotations

import json
import os
import sqlite3

from . import base, migrate
from .sqlite_conn import MIGRATION_LOCK_BUDGET_S, SQLiteDB, WriteTx, path_from_url
from .sqlite_errors import classify_sqlite_error

MIGRATION_SET = "sqlite"
MIGRATIONS_TABLE = "dbos_schema_migrations"

_CREATE_MIGRATIONS = f"""
CREATE TABLE {MIGRATIONS_TABLE} (
    version INTEGER NOT NULL PRIMARY KEY,
    name TEXT NOT NULL,
    checksum TEXT NOT NULL,
    compatible_from INTEGER NOT NULL,
    applied_at INTEGER NOT NULL,
    library_version TEXT NOT NULL
)
"""


def _only_comments(text: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in text.splitlines())


def split_statements(sql: str) -> list[str]:
    """Split a script into complete statements (a `;` inside a string, comment or trigger body does not end
    one). Raises ValueError on a trailing incomplete statement."""
    statements: list[str] = []
    buf = ""
    for piece in sql.split(";"):
        buf = piece if not buf else buf + piece
        candidate = buf + ";"
        if sqlite3.complete_statement(candidate):
            if not _only_comments(buf):
                statements.append(candidate.strip())
            buf = ""
        else:
            buf = candidate
    rest = buf[:-1] if buf.endswith(";") else buf
    if rest and not _only_comments(rest):
        raise ValueError(f"incomplete SQL statement at the end of a migration: {rest.strip()[:80]!r}")
    return statements


def _table_exists(conn: sqlite3.Connection, name: str) -> bool:
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone()
    return row is not None


def _applied(conn: sqlite3.Connection) -> list[migrate.AppliedMigration]:
    if not _table_exists(conn, MIGRATIONS_TABLE):
        return []
    cur = conn.execute(
        f"SELECT version, name, checksum, compatible_from FROM {MIGRATIONS_TABLE} ORDER BY version"
    )
    return [migrate.AppliedMigration(int(r[0]), str(r[1]), str(r[2]), int(r[3])) for r in cur.fetchall()]


def _apply(tx: WriteTx, files: list[migrate.MigrationFile]) -> base.MigrationReport:
    if not _table_exists(tx.conn, MIGRATIONS_TABLE):
        tx.execute(_CREATE_MIGRATIONS)
    p = migrate.plan(files, _applied(tx.conn))
    migrate.require_compatible(p)
    lib = migrate.library_version()
    for mf in p.pending:
        for statement in split_statements(mf.sql):
            tx.execute(statement)
        tx.execute(
            f"INSERT INTO {MIGRATIONS_TABLE} (version, name, checksum, compatible_from, applied_at, library_version) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (mf.version, mf.name, mf.checksum, mf.compatible_from, tx.now, lib),
        )
    applied = [mf.version for mf in p.pending]
    return base.MigrationReport(before=p.current, after=max([p.current, *applied]), applied=applied)


def run_migrations(db: SQLiteDB) -> base.MigrationReport:
    files = migrate.load_migrations(MIGRATION_SET)
    return db.write("migrate", lambda tx: _apply(tx, files), budget_s=MIGRATION_LOCK_BUDGET_S)


def schema_state(db: SQLiteDB) -> migrate.SchemaState:
    files = migrate.load_migrations(MIGRATION_SET)

    def read(conn: sqlite3.Connection) -> migrate.SchemaState:
        exists = _table_exists(conn, MIGRATIONS_TABLE)
        return migrate.plan(files, _applied(conn), table_exists=exists).state

    return db.read("check_schema", read, snapshot=True)


def reset_sqlite(url: str, *, truncate: bool) -> None:
    """Drop (or empty) every `dbos_` table of the file; other tables are never touched."""
    path = path_from_url(url)
    if not os.path.exists(path):
        return
    conn = sqlite3.connect(path, isolation_level=None, timeout=10.0)
    try:
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("PRAGMA foreign_keys=OFF")  # drop order then does not matter
        conn.execute("BEGIN IMMEDIATE")
        try:
            _reset_tables(conn, truncate)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise classify_sqlite_error(exc, "reset") from exc
    finally:
        conn.close()


def _reset_tables(conn: sqlite3.Connection, truncate: bool) -> None:
    # substr() compares bytes exactly; LIKE would also match DBOS_ or dbosx.
    names = [
        str(r[0])
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND substr(name, 1, 5) = 'dbos_'"
        ).fetchall()
    ]
    if truncate:  # keep the schema and its migration state (01 §3.4 rule 4)
        names = [n for n in names if n not in ("dbos_schema_migrations", "dbos_app_schema_migrations")]
    for name in names:
        quoted = '"' + name.replace('"', '""') + '"'
        conn.execute(f"DELETE FROM {quoted}" if truncate else f"DROP TABLE {quoted}")
    if names and _table_exists(conn, "sqlite_sequence"):
        conn.execute(
            "DELETE FROM sqlite_sequence WHERE name IN (SELECT value FROM json_each(?))",
            (json.dumps(names),),
        )
