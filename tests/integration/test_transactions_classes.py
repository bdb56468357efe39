"""Transactions, classes and instances, and roles, on both backends."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import sqlalchemy as sa

from dbos import DBOS, DBOSConfiguredInstance, DBOSContextSetAuth, SetWorkflowID
from dbos.error import DBOSException, DBOSNotAuthorizedError, DBOSSerializationError


def _count_rows(dbos_config: dict[str, Any], table: str) -> int:
    url = dbos_config["system_database_url"]
    if url.startswith("sqlite:"):
        import sqlite3

        with sqlite3.connect(url[len("sqlite:///") :]) as conn:
            return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert row is not None
        return int(row[0])


def _create_table(name: str) -> None:
    @DBOS.transaction()
    def create() -> None:
        DBOS.sql_session.execute(
            sa.text(f"CREATE TABLE IF NOT EXISTS {name} (id INTEGER PRIMARY KEY, v TEXT)")
        )

    create()


def test_transaction_writes_user_table_visible_outside(dbos: type[DBOS], dbos_config: dict[str, Any]) -> None:
    _create_table("payments")
    runs: list[int] = []

    @DBOS.transaction()
    def insert(i: int) -> str:
        runs.append(i)
        DBOS.sql_session.execute(sa.text("INSERT INTO payments (id, v) VALUES (:i, 'x')"), {"i": i})
        assert DBOS.step_id == 1
        return f"row-{i}"

    @DBOS.workflow()
    def wf(i: int) -> str:
        return insert(i)

    with SetWorkflowID("txn-1"):
        assert wf(1) == "row-1"
    with SetWorkflowID("txn-1"):
        assert wf(1) == "row-1"
    assert runs == [1]
    assert _count_rows(dbos_config, "payments") == 1
    assert DBOS.sql_session is None


def test_transaction_error_rolls_back_and_replays(dbos: type[DBOS], dbos_config: dict[str, Any]) -> None:
    _create_table("t_err")
    runs: list[int] = []

    @DBOS.transaction()
    def bad() -> None:
        runs.append(1)
        DBOS.sql_session.execute(sa.text("INSERT INTO t_err (id, v) VALUES (1, 'x')"))
        raise ValueError("txn failed")

    @DBOS.workflow()
    def wf() -> None:
        bad()

    for _ in range(2):
        with SetWorkflowID("txn-err"):
            with pytest.raises(ValueError, match="txn failed"):
                wf()
    assert runs == [1]
    assert _count_rows(dbos_config, "t_err") == 0


def test_session_commit_is_refused(dbos: type[DBOS], dbos_config: dict[str, Any]) -> None:
    _create_table("t_commit")

    @DBOS.transaction()
    def commits() -> None:
        DBOS.sql_session.execute(sa.text("INSERT INTO t_commit (id, v) VALUES (1, 'x')"))
        DBOS.sql_session.commit()

    @DBOS.workflow()
    def wf() -> None:
        commits()

    with pytest.raises(DBOSException, match="commit"):
        wf()
    assert _count_rows(dbos_config, "t_commit") == 0


def test_transaction_outside_workflow_is_temp_workflow(dbos: type[DBOS]) -> None:
    @DBOS.transaction()
    def t() -> int:
        return 5

    with SetWorkflowID("temp-txn"):
        assert t() == 5
    status = DBOS.get_workflow_status("temp-txn")
    assert status is not None and status.name.startswith("<temp>.")


def test_transaction_inside_step_raises(dbos: type[DBOS]) -> None:
    @DBOS.transaction()
    def t() -> int:
        return 1

    @DBOS.step()
    def s() -> int:
        return int(t())

    @DBOS.workflow()
    def wf() -> int:
        return int(s())

    with pytest.raises(DBOSException):
        wf()


@DBOS.dbos_class()
class Counter:
    def __init__(self, start: int) -> None:
        self.start = start

    @DBOS.workflow()
    def add(self, n: int) -> int:
        return self.start + n

    @DBOS.step()
    def double(self, n: int) -> int:
        return n * 2

    @DBOS.workflow()
    def add_doubled(self, n: int) -> int:
        return self.start + self.double(n)

    @staticmethod
    @DBOS.workflow()
    def static_a(x: int) -> int:
        return x + 1

    @DBOS.workflow()
    @staticmethod
    def static_b(x: int) -> int:
        return x + 2

    @classmethod
    @DBOS.workflow()
    def class_a(cls, x: int) -> str:
        return f"{cls.__name__}{x}"

    @DBOS.workflow()
    @classmethod
    def class_b(cls, x: int) -> str:
        return f"{cls.__name__}-{x}"


class Configured(DBOSConfiguredInstance):
    def __init__(self, name: str, base: int) -> None:
        self.base = base
        super().__init__(name)

    @DBOS.workflow()
    def compute(self, n: int) -> int:
        return self.base * n


Configured = DBOS.dbos_class()(Configured)


def test_plain_instance_methods(dbos: type[DBOS]) -> None:
    c = Counter(10)
    with SetWorkflowID("inst-1"):
        assert c.add(5) == 15
    assert c.add_doubled(3) == 16
    status = DBOS.get_workflow_status("inst-1")
    assert status is not None
    assert status.class_name == "Counter" and status.config_name is None
    assert status.input == {"args": (5,), "kwargs": {}}


def test_static_and_class_methods_both_orders(dbos: type[DBOS]) -> None:
    assert Counter.static_a(1) == 2
    assert Counter.static_b(1) == 3
    assert Counter.class_a(1) == "Counter1"
    assert Counter.class_b(1) == "Counter-1"


def test_configured_instance(dbos: type[DBOS]) -> None:
    inst = Configured("triple", 3)
    with SetWorkflowID("cfg-1"):
        assert inst.compute(4) == 12
    status = DBOS.get_workflow_status("cfg-1")
    assert status is not None and status.config_name == "triple" and status.class_name == "Configured"
    handle = DBOS.start_workflow(inst.compute, 5)
    assert handle.get_result() == 15


def test_unserializable_receiver_fails_with_hint(dbos: type[DBOS]) -> None:
    @DBOS.dbos_class()
    class Holder:
        def __init__(self) -> None:
            self.lock = threading.Lock()

        @DBOS.workflow()
        def run(self) -> int:
            return 1

    with SetWorkflowID("lock-holder"):
        with pytest.raises(DBOSSerializationError, match="DBOSConfiguredInstance"):
            Holder().run()
    assert DBOS.get_workflow_status("lock-holder") is None


def test_roles(dbos: type[DBOS]) -> None:
    @DBOS.required_roles(["admin", "ops"])
    @DBOS.workflow()
    def guarded() -> str | None:
        return DBOS.assumed_role

    @DBOS.workflow()
    def child_user() -> str | None:
        return DBOS.authenticated_user

    @DBOS.workflow()
    def parent_user() -> str | None:
        return child_user()

    with pytest.raises(DBOSNotAuthorizedError):
        guarded()
    with DBOSContextSetAuth("bob", ["user"]):
        with pytest.raises(DBOSNotAuthorizedError) as info:
            guarded()
        assert "admin" in str(info.value)
    with DBOSContextSetAuth("alice", ["ops", "admin"]):
        assert guarded() == "admin"
        assert parent_user() == "alice"
        with pytest.raises(DBOSNotAuthorizedError):
            with DBOSContextSetAuth("eve", ["user"]):
                DBOS.start_workflow(guarded)
