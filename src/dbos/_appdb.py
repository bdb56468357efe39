"""The application database used by @DBOS.transaction (SQLAlchemy). Defaults to the system database.

When it is a separate database, DBOS keeps a `transaction_outputs` table there so that a transaction's output
commits in the same database transaction as the user's writes (01 §4.3 rule 2).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session

from .error import DBOSException

RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})


class GuardedSession(Session):
    """A Session whose transaction belongs to DBOS: commit/rollback/close are refused (01 §4.3 rule 5)."""

    misused: str | None = None

    def _refuse(self, what: str) -> None:
        self.misused = what
        raise DBOSException(
            f"DBOS.sql_session.{what}() is not allowed inside @DBOS.transaction: DBOS commits the transaction "
            "together with its checkpoint; return from the function (or raise) instead"
        )

    def commit(self) -> None:
        self._refuse("commit")

    def rollback(self) -> None:
        self._refuse("rollback")

    def close(self) -> None:
        self._refuse("close")

    def dbos_close(self) -> None:
        super().close()


def to_sqlalchemy_url(url: str) -> str:
    if url.startswith("sqlite:"):
        return url
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def is_retryable(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", exc)
    if getattr(orig, "sqlstate", None) in RETRYABLE_SQLSTATES:
        return True
    if isinstance(orig, sqlite3.OperationalError):
        code = getattr(orig, "sqlite_errorcode", None)
        return code in (5, 6) or "locked" in str(orig) or "busy" in str(orig)
    return False


class AppDatabase:
    def __init__(self, url: str, *, schema: str, separate: bool, engine_kwargs: dict[str, Any]) -> None:
        self.backend = "sqlite" if url.startswith("sqlite:") else "postgres"
        self.schema = schema
        self.separate = separate
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if self.backend == "postgres":
            kwargs.update(pool_size=20, max_overflow=0, connect_args={"connect_timeout": 10})
        kwargs.update(engine_kwargs)
        self.engine = sa.create_engine(to_sqlalchemy_url(url), **kwargs)
        if self.backend == "sqlite":
            self._configure_sqlite()
        self.outputs_table = (
            f'"{schema}".transaction_outputs' if self.backend == "postgres" else "dbos_transaction_outputs"
        )

    def _configure_sqlite(self) -> None:
        @event.listens_for(self.engine, "connect")
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN IMMEDIATE ourselves
            dbapi_conn.execute("PRAGMA busy_timeout=10000")
            dbapi_conn.execute("PRAGMA foreign_keys=ON")

        @event.listens_for(self.engine, "begin")
        def _begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    def prepare(self) -> None:
        """Create DBOS's transaction-output table in a separate application database."""
        if not self.separate:
            return
        with self.engine.begin() as conn:
            if self.backend == "postgres":
                conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            conn.exec_driver_sql(
                f"CREATE TABLE IF NOT EXISTS {self.outputs_table} (workflow_id TEXT NOT NULL, "
                "step_id INTEGER NOT NULL, output TEXT, error TEXT, serializer TEXT, executor_id TEXT, "
                "created_at BIGINT NOT NULL, PRIMARY KEY (workflow_id, step_id))"
            )

    @contextmanager
    def transaction(self, isolation_level: str) -> Iterator[tuple[sa.Connection, GuardedSession]]:
        """An open transaction and a Session bound to it; commits on normal exit, rolls back on error."""
        with self.engine.connect() as conn:
            if self.backend == "postgres":
                conn = conn.execution_options(isolation_level=isolation_level.replace(" ", "_"))
            trans = conn.begin()
            session = GuardedSession(bind=conn)
            try:
                yield conn, session
                if session.misused is not None:
                    raise DBOSException(
                        f"DBOS.sql_session.{session.misused}() is not allowed inside a transaction"
                    )
                session.flush()
                trans.commit()
            except BaseException:
                if trans.is_active:
                    trans.rollback()
                raise
            finally:
                session.dbos_close()

    def recorded_output(self, conn: sa.Connection, workflow_id: str, step_id: int) -> tuple[Any, ...] | None:
        row = conn.execute(
            sa.text(
                f"SELECT output, error, serializer FROM {self.outputs_table} WHERE workflow_id = :w AND step_id = :s"
            ),
            {"w": workflow_id, "s": step_id},
        ).first()
        return tuple(row) if row is not None else None

    def record_output(
        self,
        conn: sa.Connection,
        workflow_id: str,
        step_id: int,
        output: str | None,
        serializer: str,
        now_ms: int,
    ) -> None:
        conn.execute(
            sa.text(
                f"INSERT INTO {self.outputs_table} (workflow_id, step_id, output, error, serializer, created_at) "
                "VALUES (:w, :s, :o, NULL, :z, :t)"
            ),
            {"w": workflow_id, "s": step_id, "o": output, "z": serializer, "t": now_ms},
        )

    def delete_outputs(self, workflow_ids: list[str]) -> None:
        """Remove DBOS's transaction outputs of deleted workflows (02 §6 rule 1); a no-op when shared."""
        if not self.separate or not workflow_ids:
            return
        with self.engine.begin() as conn:
            for start in range(0, len(workflow_ids), 500):
                chunk = workflow_ids[start : start + 500]
                marks = ", ".join(f":w{i}" for i in range(len(chunk)))
                conn.execute(
                    sa.text(f"DELETE FROM {self.outputs_table} WHERE workflow_id IN ({marks})"),
                    {f"w{i}": w for i, w in enumerate(chunk)},
                )

    def reset(self) -> None:
        if not self.separate:
            return
        with self.engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {self.outputs_table}")

    def dispose(self) -> None:
        self.engine.dispose()
