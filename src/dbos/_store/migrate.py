"""Migration files and the backend-independent part of the runner (07 §9).

A migration set is a directory `migrations/<set>/` of files `NNNN_<name>.sql`, numbered contiguously from 0001.
Each file begins with a header:

    -- dbos-migration: 0003 add_queue_lanes
    -- compatible-from: 0002
    -- transaction: yes

This module parses and lists the files and decides, from the rows already applied, what to apply and what the
schema state is. It never touches a database: each backend reads its `schema_migrations` rows, calls `plan`, and
executes the pending files under its own lock.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Literal

from .base import SchemaTooNew

_log = logging.getLogger("dbos")

SchemaState = Literal["current", "missing", "behind", "ahead_compatible", "ahead_incompatible"]

_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_HEADER_RE = re.compile(r"^--\s*([a-z-]+)\s*:\s*(.*?)\s*$")


@dataclass(frozen=True, slots=True)
class MigrationFile:
    version: int
    name: str
    compatible_from: int  # oldest code level that still runs against a schema including this migration
    transaction: bool  # PG only: False for CREATE INDEX CONCURRENTLY files (run in autocommit)
    sql: str
    checksum: str  # hex SHA-256 of the file bytes
    filename: str


@dataclass(frozen=True, slots=True)
class AppliedMigration:
    """One `schema_migrations` row."""

    version: int
    name: str
    checksum: str
    compatible_from: int


@dataclass(frozen=True, slots=True)
class Plan:
    known: int  # L: the highest version this code knows
    current: int  # V: the highest version applied
    pending: list[MigrationFile]
    state: SchemaState


def _init_error(message: str) -> Exception:
    from ..error import DBOSInitializationError

    return DBOSInitializationError(message)


def _first_token(value: str) -> str:
    """`0002     -- a trailing comment` -> `0002`."""
    words = value.split("--", 1)[0].split()
    return words[0] if words else ""


def parse_migration(filename: str, data: bytes) -> MigrationFile:
    """Parse one migration file; the header must agree with the file name."""
    m = _FILE_RE.match(filename)
    if m is None:
        raise ValueError(f"migration file name {filename!r} is not NNNN_name.sql")
    version, name = int(m.group(1)), m.group(2)
    text = data.decode("utf-8")
    header: dict[str, str] = {}
    for line in text.splitlines():
        hm = _HEADER_RE.match(line.strip())
        if hm is None:
            break
        header[hm.group(1)] = hm.group(2)
    tag = header.get("dbos-migration", "").split()
    if len(tag) < 2 or int(tag[0]) != version or tag[1] != name:
        raise ValueError(
            f"migration {filename!r}: header must start with '-- dbos-migration: {m.group(1)} {name}'"
        )
    compat = _first_token(header.get("compatible-from", "")) or m.group(1)
    txn = (_first_token(header.get("transaction", "")) or "yes").lower()
    if txn not in ("yes", "no"):
        raise ValueError(f"migration {filename!r}: transaction must be yes or no, not {txn!r}")
    return MigrationFile(
        version=version,
        name=name,
        compatible_from=int(compat),
        transaction=txn == "yes",
        sql=text,
        checksum=hashlib.sha256(data).hexdigest(),
        filename=filename,
    )


@functools.cache
def _load(set_name: str) -> tuple[MigrationFile, ...]:
    directory = resources.files("dbos._store") / "migrations" / set_name
    files = sorted(
        (entry.name, entry.read_bytes()) for entry in directory.iterdir() if entry.name.endswith(".sql")
    )
    parsed = [parse_migration(name, data) for name, data in files]
    for expected, mf in enumerate(parsed, start=1):
        if mf.version != expected:
            raise ValueError(f"migration set {set_name!r}: expected {expected:04d}, found {mf.filename!r}")
    return tuple(parsed)


def load_migrations(set_name: str) -> list[MigrationFile]:
    """The files of `migrations/<set_name>/`, in order (`sqlite`, `postgres`, `appdb_sqlite`, `appdb_postgres`)."""
    return list(_load(set_name))


def library_version() -> str:
    try:
        from importlib.metadata import version

        return version("dbosx")
    except Exception:
        return "0.0.0"


def _check_applied(files: Sequence[MigrationFile], applied: Sequence[AppliedMigration]) -> None:
    by_version = {f.version: f for f in files}
    versions = sorted(a.version for a in applied)
    if versions != list(range(1, len(versions) + 1)):
        raise _init_error(f"system database schema_migrations has gaps: applied versions {versions}")
    for a in applied:
        f = by_version.get(a.version)
        if f is None:
            continue
        if f.name != a.name:
            raise _init_error(
                f"system database migration {a.version:04d} is named {a.name!r}, but this library knows it as "
                f"{f.name!r}"
            )
        if f.checksum != a.checksum:
            _log.warning("checksum of applied migration %04d_%s differs from its file", a.version, a.name)


def plan(
    files: Sequence[MigrationFile], applied: Sequence[AppliedMigration], *, table_exists: bool = True
) -> Plan:
    """Decide what to apply. Raises `DBOSInitializationError` on gaps or renamed versions; never raises
    for a newer schema (see `require_compatible`)."""
    _check_applied(files, applied)
    known = max((f.version for f in files), default=0)
    current = max((a.version for a in applied), default=0)
    pending = [f for f in files if f.version > current]
    state: SchemaState
    if not table_exists or not applied:
        state = "missing"
    elif current < known:
        state = "behind"
    elif current == known:
        state = "current"
    elif all(a.compatible_from <= known for a in applied if a.version > known):
        state = "ahead_compatible"
    else:
        state = "ahead_incompatible"
    return Plan(known=known, current=current, pending=pending, state=state)


def require_compatible(p: Plan) -> None:
    """Raise `SchemaTooNew` for an incompatible newer schema; log INFO for a compatible one."""
    if p.state == "ahead_incompatible":
        raise SchemaTooNew(
            f"system database schema version {p.current} is newer than this library "
            f"(it supports up to {p.known}); upgrade dbosx"
        )
    if p.state == "ahead_compatible":
        _log.info(
            "system database schema version %d is newer than this library (%d) but compatible with it",
            p.current,
            p.known,
        )


def quote_ident(name: str) -> str:
    """A PostgreSQL quoted identifier."""
    return '"' + name.replace('"', '""') + '"'


def render_schema(sql: str, schema: str) -> str:
    """Substitute the `__SCHEMA__` placeholder of PG files with the quoted schema name."""
    return sql.replace("__SCHEMA__", quote_ident(schema))
