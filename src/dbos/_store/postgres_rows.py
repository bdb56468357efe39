"""Result tuples to the records of `base`, PostgreSQL-only parameters, and driver-connection helpers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from . import base, records
from .postgres_sql import EXECUTOR_COLUMNS, STEP_COLUMNS, WORKFLOW_COLUMNS

Conn = psycopg.Connection[tuple[Any, ...]]
Row = Sequence[Any]


# ---------------------------------------------------------------------------------------------------------------
# Row mapping
# ---------------------------------------------------------------------------------------------------------------


def workflow_row(r: Row) -> base.WorkflowRow:
    return records.workflow_row(dict(zip(WORKFLOW_COLUMNS, r, strict=True)))


def step_row(r: Row) -> base.StepRow:
    return records.step_row(dict(zip(STEP_COLUMNS, r, strict=True)))


def executor_row(r: Row) -> base.ExecutorRow:
    return base.ExecutorRow(*r[: len(EXECUTOR_COLUMNS)])


def insert_result(kind: base.InsertKind, r: Row) -> base.InsertResult:
    """`r` = (workflow_id, name, class_name, config_name, status, queue_name, created_at, deadline_ms, ...)."""
    return base.InsertResult(kind, r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7])


# ---------------------------------------------------------------------------------------------------------------
# Parameters and driver connections
# ---------------------------------------------------------------------------------------------------------------


def insert_params(new: base.NewWorkflow) -> dict[str, Any]:
    """The server computes a relative deadline (`deadline_from_now`) and the clock columns itself."""
    return records.insert_params(new) | {
        "deadline_from_now": new.deadline_from_now,
        "internal": base.INTERNAL_QUEUE,
    }


def unwrap_dbapi(conn: Any) -> Any:
    """The driver connection behind a SQLAlchemy connection, pool proxy or fairy (or `conn` itself)."""
    for _ in range(4):
        if isinstance(conn, psycopg.Connection):
            return conn
        inner = None
        for attr in ("driver_connection", "dbapi_connection", "connection"):
            inner = getattr(conn, attr, None)
            if inner is not None and inner is not conn:
                break
        if inner is None or inner is conn:
            return conn
        conn = inner
    return conn


def init_error(message: str) -> Exception:
    from ..error import DBOSInitializationError

    return DBOSInitializationError(message)


def abort(conn: Conn) -> None:
    """Roll back a manually begun transaction after a failure, unless the connection is gone."""
    if conn.closed or conn.broken or conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        return
    try:
        conn.execute("ROLLBACK")
    except psycopg.Error:
        pass
