"""Transactions against a separate application database, and serializable retries on Postgres."""

from __future__ import annotations

import sqlite3
import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa

from dbos import DBOS, SetWorkflowID
from dbos import _failpoints as fp


class _Crash(BaseException):
    """Escapes the workflow like a crash would: nothing more is recorded and the workflow is released."""


@pytest.fixture
def separate_app(db_url: str, tmp_path: Any) -> Any:
    app_path = tmp_path / "app.sqlite"
    DBOS.destroy()
    DBOS(
        config={
            "name": "appdb-test",
            "system_database_url": db_url,
            "application_database_url": f"sqlite:///{app_path}",
        }
    )
    DBOS.launch()
    yield app_path
    fp.disarm()
    DBOS.destroy()


def test_separate_app_db_outputs_table(separate_app: Any) -> None:
    runs: list[int] = []

    @DBOS.transaction()
    def write(i: int) -> int:
        runs.append(i)
        DBOS.sql_session.execute(sa.text("CREATE TABLE IF NOT EXISTS items (i INTEGER)"))
        DBOS.sql_session.execute(sa.text("INSERT INTO items VALUES (:i)"), {"i": i})
        return i * 2

    @DBOS.workflow()
    def wf(i: int) -> int:
        return write(i)

    with SetWorkflowID("app-1"):
        assert wf(3) == 6
    with sqlite3.connect(separate_app) as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone()[0] == 1
        outputs = conn.execute("SELECT workflow_id, step_id FROM dbos_transaction_outputs").fetchall()
    assert outputs == [("app-1", 1)]
    assert runs == [3]


def test_committed_transaction_is_not_rerun_after_crash(separate_app: Any) -> None:
    """Killed after the user transaction committed but before the system-database copy: not re-executed."""
    runs: list[int] = []
    crash_once = {"armed": True}

    def crash() -> None:
        if crash_once["armed"]:
            crash_once["armed"] = False
            raise _Crash()

    @DBOS.transaction()
    def write() -> str:
        runs.append(1)
        DBOS.sql_session.execute(sa.text("CREATE TABLE IF NOT EXISTS ledger (v TEXT)"))
        DBOS.sql_session.execute(sa.text("INSERT INTO ledger VALUES ('x')"))
        return "written"

    @DBOS.workflow()
    def wf() -> str:
        return str(write()) + "-done"

    fp.arm("transaction.after_commit", crash)
    with SetWorkflowID("app-crash"):
        with pytest.raises(_Crash):
            wf()
    # released for recovery; the dispatcher re-runs it from its checkpoints
    assert DBOS.retrieve_workflow("app-crash").get_result() == "written-done"
    assert runs == [1]
    with sqlite3.connect(separate_app) as conn:
        assert conn.execute("SELECT count(*) FROM ledger").fetchone()[0] == 1


def test_pg_serializable_conflicts_are_retried(dbos: type[DBOS], backend: str) -> None:
    if backend != "postgres":
        pytest.skip("SQLite transactions are serialized by the write lock; there is nothing to retry")

    @DBOS.transaction()
    def setup() -> None:
        DBOS.sql_session.execute(sa.text("CREATE TABLE IF NOT EXISTS counter (id INT PRIMARY KEY, n INT)"))
        DBOS.sql_session.execute(sa.text("INSERT INTO counter VALUES (1, 0) ON CONFLICT DO NOTHING"))

    attempts: list[int] = []

    @DBOS.transaction(isolation_level="SERIALIZABLE")
    def bump() -> None:
        attempts.append(1)
        n = DBOS.sql_session.execute(sa.text("SELECT n FROM counter WHERE id = 1")).scalar_one()
        time.sleep(0.05)
        DBOS.sql_session.execute(sa.text("UPDATE counter SET n = :n WHERE id = 1"), {"n": n + 1})

    @DBOS.workflow()
    def wf() -> None:
        bump()

    setup()
    threads = [threading.Thread(target=wf) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    @DBOS.transaction()
    def read() -> int:
        return int(DBOS.sql_session.execute(sa.text("SELECT n FROM counter WHERE id = 1")).scalar_one())

    assert read() == 4
    assert len(attempts) > 4  # some attempts conflicted and were retried
