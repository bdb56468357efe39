"""One group-commit batch on the SQLite writer (07 §8 rule 3): every op in its own savepoint inside one
`BEGIN IMMEDIATE ... COMMIT`, so a refusal or an error of one op never undoes another op's write."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import base
from .sqlite_errors import classify_sqlite_error

_SAVEPOINT = "dbos_op"


@dataclass(slots=True)
class OpDone:
    op: str
    wrote: bool
    changes: list[base.Change]
    result: Any = None
    error: BaseException | None = None


def run_in_savepoint(conn: sqlite3.Connection, tx: Any, op: str, fn: Callable[[Any], Any]) -> OpDone:
    """Run one op of a batch. Raises only when the whole transaction is lost (or on contention, which retries
    the batch); any other error is the op's own result."""
    before = conn.total_changes
    conn.execute(f"SAVEPOINT {_SAVEPOINT}")
    try:
        result = fn(tx)
    except Exception as exc:
        if not conn.in_transaction:
            raise  # SQLite rolled the whole transaction back (I/O error, disk full): the batch fails
        conn.execute(f"ROLLBACK TO {_SAVEPOINT}")
        conn.execute(f"RELEASE {_SAVEPOINT}")
        err: BaseException = exc
        if isinstance(exc, (sqlite3.Error, UnicodeEncodeError)):
            err = classify_sqlite_error(exc, op)
        if isinstance(err, base.Contention):
            raise err from exc
        return OpDone(op, False, [], error=err)
    wrote = not tx.rollback_only and conn.total_changes != before
    if not wrote:
        conn.execute(f"ROLLBACK TO {_SAVEPOINT}")
    conn.execute(f"RELEASE {_SAVEPOINT}")
    return OpDone(op, wrote, list(tx.changes) if wrote else [], result)
