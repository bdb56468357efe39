"""Classification of `sqlite3` exceptions into the storage taxonomy (07 §12.1). Pure functions."""

from __future__ import annotations

import sqlite3

from . import base

# Primary result codes (the low byte of an extended code).
SQLITE_BUSY = 5
SQLITE_LOCKED = 6
SQLITE_READONLY = 8
SQLITE_CORRUPT = 11
SQLITE_FULL = 13
SQLITE_NOTADB = 26
# Extended codes.
SQLITE_CONSTRAINT_PRIMARYKEY = 1555
SQLITE_CONSTRAINT_UNIQUE = 2067
SQLITE_CONSTRAINT_FOREIGNKEY = 787

_BY_PRIMARY: dict[int, type[base.StoreError]] = {
    SQLITE_BUSY: base.Contention,
    SQLITE_LOCKED: base.Contention,
    SQLITE_READONLY: base.ReadOnly,
    SQLITE_CORRUPT: base.Corrupt,
    SQLITE_NOTADB: base.Corrupt,
    SQLITE_FULL: base.StorageFull,
}
_BY_EXTENDED: dict[int, type[base.StoreError]] = {
    SQLITE_CONSTRAINT_PRIMARYKEY: base.UniqueViolation,
    SQLITE_CONSTRAINT_UNIQUE: base.UniqueViolation,
    SQLITE_CONSTRAINT_FOREIGNKEY: base.MissingReference,
}
# The documented message texts, for Python 3.10 (no `sqlite_errorcode`). Checked in order.
_BY_MESSAGE: tuple[tuple[str, type[base.StoreError]], ...] = (
    ("database is locked", base.Contention),
    ("database table is locked", base.Contention),
    ("database schema is locked", base.Contention),
    ("unique constraint failed", base.UniqueViolation),
    ("foreign key constraint failed", base.MissingReference),
    ("database or disk is full", base.StorageFull),
    ("readonly database", base.ReadOnly),
    ("database disk image is malformed", base.Corrupt),
    ("file is not a database", base.Corrupt),
    ("no such table", base.SchemaMismatch),
    ("no such column", base.SchemaMismatch),
)


def _by_message(message: str) -> type[base.StoreError]:
    text = message.lower()
    for needle, cls in _BY_MESSAGE:
        if needle in text:
            return cls
    return base.UnknownStorageError


def classify_code(code: int, message: str) -> type[base.StoreError]:
    """The class for an extended result code; messages decide among SQLITE_ERROR (1) cases."""
    if code in _BY_EXTENDED:
        return _BY_EXTENDED[code]
    cls = _BY_PRIMARY.get(code & 0xFF)
    if cls is not None:
        return cls
    text = message.lower()
    if "no such table" in text or "no such column" in text:
        return base.SchemaMismatch
    return base.UnknownStorageError


def classify_class(exc: BaseException) -> type[base.StoreError]:
    if isinstance(exc, base.StoreError):
        return type(exc)
    if isinstance(exc, UnicodeEncodeError):
        return base.InvalidText
    if not isinstance(exc, sqlite3.Error):
        return base.UnknownStorageError
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return classify_code(code, str(exc))
    return _by_message(str(exc))


def classify_sqlite_error(exc: BaseException, op: str | None = None) -> base.StoreError:
    """The `StoreError` for a driver exception; the caller raises it `from exc`."""
    if isinstance(exc, base.StoreError):
        return exc
    cls = classify_class(exc)
    where = f" in {op}" if op else ""
    return cls(f"SQLite {cls.__name__}{where}: {exc}", op=op)
