"""PostgreSQL error classification (07 §12.1) and the retry policy (07 §7 rules 3-4)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg
import psycopg_pool

from . import base

T = TypeVar("T")

# Total time a foreground op keeps retrying connection loss and contention (07 §7 rule 4); tests may lower it.
FOREGROUND_BUDGET_S = 30.0
BACKOFF_CAP_S = 2.0
BACKOFF_BASE_S = 0.010
STATEMENT_TIMEOUT_ATTEMPTS = 3

_BY_SQLSTATE: dict[str, type[base.StoreError]] = {
    "57P01": base.ConnectionLost,
    "57P02": base.ConnectionLost,
    "57P03": base.ConnectionLost,
    "53300": base.ConnectionLost,
    "25P03": base.ConnectionLost,
    "40001": base.Contention,
    "40P01": base.Contention,
    "55P03": base.Contention,
    "57014": base.StatementTimeout,
    "23505": base.UniqueViolation,
    "23503": base.MissingReference,
    "53100": base.StorageFull,
    "25006": base.ReadOnly,
    "3F000": base.SchemaMismatch,
    "42P01": base.SchemaMismatch,
    "42703": base.SchemaMismatch,
    "42883": base.SchemaMismatch,
    "XX001": base.Corrupt,
    "XX002": base.Corrupt,
    "22021": base.InvalidText,
    "22P05": base.InvalidText,
    "54000": base.InvalidText,
}


def _class_of(exc: BaseException) -> type[base.StoreError]:
    if isinstance(exc, base.StoreError):
        return type(exc)
    if isinstance(exc, UnicodeEncodeError):
        return base.InvalidText
    if isinstance(exc, (psycopg_pool.PoolTimeout, psycopg.errors.ConnectionTimeout)):
        return base.ConnectionLost
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate:
        if sqlstate.startswith("08"):
            return base.ConnectionLost
        return _BY_SQLSTATE.get(sqlstate, base.UnknownStorageError)
    if isinstance(exc, psycopg.DataError) and "NUL" in str(exc):
        return base.InvalidText
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        return base.ConnectionLost  # closed or broken connection: no SQLSTATE
    return base.UnknownStorageError


def classify_pg_error(exc: BaseException, op: str | None = None) -> base.StoreError:
    """The `StoreError` for a driver exception; pure (the caller raises it `from exc`)."""
    if isinstance(exc, base.StoreError):
        return exc
    cls = _class_of(exc)
    sqlstate = getattr(exc, "sqlstate", None)
    detail = f"{type(exc).__name__}" + (f" [{sqlstate}]" if sqlstate else "")
    return cls(f"{detail}: {exc}".strip(), op=op)


def backoff_s(attempt: int, *, cap_s: float = BACKOFF_CAP_S) -> float:
    """Attempt `n` (from 0) sleeps U(0.5, 1.0) x min(cap, 10 ms x 2^n)."""
    return random.uniform(0.5, 1.0) * min(cap_s, BACKOFF_BASE_S * 2.0 ** min(attempt, 30))


def is_retryable(err: base.StoreError, attempt: int) -> bool:
    if isinstance(err, (base.ConnectionLost, base.Contention)):
        return True
    return isinstance(err, base.StatementTimeout) and attempt + 1 < STATEMENT_TIMEOUT_ATTEMPTS


def retry_delay(err: base.StoreError, attempt: int) -> float:
    """A contention retry skips its first sleep."""
    if isinstance(err, base.Contention):
        return 0.0 if attempt == 0 else backoff_s(attempt - 1)
    return backoff_s(attempt)


def with_retries(
    op: str,
    fn: Callable[[int], T],
    *,
    on_error: Callable[[base.StoreError], None] | None = None,
    budget_s: float | None = None,
) -> T:
    """Run `fn(attempt)` until it succeeds, retrying retryable storage errors within the foreground budget.
    `fn` must be idempotent by its op's key (07 §7 rule 1)."""
    deadline = time.monotonic() + (FOREGROUND_BUDGET_S if budget_s is None else budget_s)
    attempt = 0
    while True:
        try:
            return fn(attempt)
        except (psycopg.Error, base.StoreError, UnicodeEncodeError) as exc:
            err = classify_pg_error(exc, op)
            if err.op is None:
                err.op = op
            if on_error is not None:
                on_error(err)
            delay = retry_delay(err, attempt)
            if not is_retryable(err, attempt) or time.monotonic() + delay > deadline:
                if err is exc:
                    raise
                raise err from exc
        time.sleep(delay)
        attempt += 1
