"""Configuration, construction, launch, destroy, re-launch, reset and in-process recovery."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from dbos import DBOS, SetWorkflowID
from dbos.error import DBOSException, DBOSInitializationError


@pytest.fixture(autouse=True)
def _clean(request: pytest.FixtureRequest) -> Any:
    DBOS.destroy()
    if "db_url" in request.fixturenames:
        request.getfixturevalue("db_url")  # set up first, so it is torn down after DBOS.destroy()
    yield
    DBOS.destroy()


@pytest.mark.parametrize(
    "config, key",
    [
        ({"name": "Bad Name!"}, "name"),
        ({"name": "ab"}, "name"),
        ({"sys_db_pool_size": 0}, "sys_db_pool_size"),
        ({"max_payload_bytes": 10}, "max_payload_bytes"),
        ({"max_payload_bytes": 268_435_457}, "max_payload_bytes"),
        ({"conductor_key": "x"}, "conductor_key"),
        ({"nme": "x"}, "name"),
        ({"system_database_url": "mysql://x"}, "system_database_url"),
        ({"system_database_url": "sqlite://"}, "system_database_url"),
        ({"system_database_url": "sqlite:///:memory:"}, "system_database_url"),
        ({"executor_heartbeat_interval_sec": 2.0, "executor_lease_sec": 3.0}, "executor_lease_sec"),
        ({"log_level": "LOUD"}, "log_level"),
    ],
)
def test_bad_config_names_the_key(config: dict[str, Any], key: str) -> None:
    with pytest.raises(DBOSInitializationError, match=key):
        DBOS(config=config)  # type: ignore[arg-type]


def test_config_must_be_dict() -> None:
    with pytest.raises(DBOSInitializationError):
        DBOS(config=["x"])  # type: ignore[arg-type]


def test_default_sqlite_file_from_name(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    @DBOS.workflow()
    def wf() -> str:
        return "ok"

    DBOS(config={"name": "my-app"})
    DBOS.launch()
    assert wf() == "ok"
    assert (tmp_path / "my_app.sqlite").exists()


def test_no_config_derives_name(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["payment_job.py"])
    DBOS()
    DBOS.launch()
    assert (tmp_path / "payment_job.sqlite").exists()


def test_accepted_extra_keys(tmp_path: Any) -> None:
    DBOS(
        config={
            "name": "extra-keys",
            "system_database_url": f"sqlite:///{tmp_path}/x.sqlite",
            "enable_patching": True,
            "run_admin_server": False,
            "admin_port": 3001,
        }
    )
    assert DBOS.application_version == "PATCHING_ENABLED"


def test_env_version_and_vmid(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBOS__APPVERSION", "v-env")
    monkeypatch.setenv("DBOS__VMID", "vm-env")
    DBOS(config={"name": "env-app", "system_database_url": f"sqlite:///{tmp_path}/e.sqlite"})
    DBOS.launch()
    assert DBOS.application_version == "v-env"
    assert DBOS.executor_id == "vm-env"
    DBOS.destroy()
    DBOS(
        config={
            "name": "env-app",
            "system_database_url": f"sqlite:///{tmp_path}/e.sqlite",
            "application_version": "v-cfg",
            "executor_id": "vm-cfg",
        }
    )
    DBOS.launch()
    assert DBOS.application_version == "v-cfg"
    assert DBOS.executor_id == "vm-cfg"


def test_second_construction_returns_same_instance(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    a = DBOS(config={"name": "one-app", "system_database_url": f"sqlite:///{tmp_path}/a.sqlite"})
    b = DBOS(config={"name": "two-app", "system_database_url": f"sqlite:///{tmp_path}/b.sqlite"})
    assert a is b
    assert "ignored" in caplog.text


def test_operations_before_launch_raise(tmp_path: Any) -> None:
    @DBOS.workflow()
    def wf() -> None:
        pass

    with pytest.raises(DBOSException, match="not launched"):
        wf()
    with pytest.raises(DBOSException):
        DBOS.launch()


def test_bare_decorator_is_type_error() -> None:
    with pytest.raises(TypeError, match=r"DBOS.workflow\(\)"):

        @DBOS.workflow  # type: ignore[arg-type]
        def wf() -> None:
            pass


def test_generator_workflow_rejected() -> None:
    with pytest.raises(DBOSException):

        @DBOS.workflow()
        def gen() -> Any:
            yield 1


@pytest.fixture
def saved_registry() -> Any:
    """destroy(destroy_registry=True) empties the process-wide registry: give later modules theirs back."""
    from dbos._registry import REGISTRY

    saved = [
        dict(d) for d in (REGISTRY.functions, REGISTRY.classes, REGISTRY.class_roles, REGISTRY.instances)
    ]
    yield
    for target, copy in zip(
        (REGISTRY.functions, REGISTRY.classes, REGISTRY.class_roles, REGISTRY.instances), saved, strict=True
    ):
        target.clear()
        target.update(copy)
    REGISTRY.generation += 1


def test_repeated_relaunch_returns_to_baseline(db_url: str, saved_registry: Any) -> None:
    baseline = threading.active_count()
    for i in range(20):

        @DBOS.workflow()
        def wf(x: int) -> int:
            return x

        DBOS(config={"name": "relaunch", "system_database_url": db_url})
        DBOS.launch()
        assert wf(i) == i
        DBOS.destroy(destroy_registry=True)
    time.sleep(0.5)
    assert threading.active_count() <= baseline + 3


def test_destroyed_sleeper_is_taken_over_by_next_instance(db_url: str) -> None:
    """A workflow blocked in DBOS.sleep when its instance is destroyed completes once in the next one."""
    runs: list[str] = []

    @DBOS.step()
    def before() -> None:
        runs.append("before")

    @DBOS.workflow()
    def sleeper() -> str:
        before()
        DBOS.sleep(1.0)
        runs.append("after")
        return "woke"

    cfg = {
        "name": "takeover",
        "system_database_url": db_url,
        "executor_heartbeat_interval_sec": 0.2,
        "executor_lease_sec": 1.0,
    }
    DBOS(config=cfg)  # type: ignore[arg-type]
    DBOS.launch()
    with SetWorkflowID("sleeper-1"):
        DBOS.start_workflow(sleeper)
    time.sleep(0.3)
    DBOS.destroy()
    DBOS(config=cfg)  # type: ignore[arg-type]
    DBOS.launch()
    assert DBOS.retrieve_workflow("sleeper-1").get_result() == "woke"
    time.sleep(1.2)  # the destroyed instance's thread would have woken by now
    assert runs == ["before", "after"]


def test_reset_truncate_keeps_user_tables(tmp_path: Any) -> None:
    import sqlite3

    import sqlalchemy as sa

    path = tmp_path / "shared.sqlite"
    cfg = {"name": "reset-app", "system_database_url": f"sqlite:///{path}"}
    runs: list[int] = []

    @DBOS.transaction()
    def write() -> None:
        DBOS.sql_session.execute(sa.text("CREATE TABLE IF NOT EXISTS users_t (id INTEGER)"))
        DBOS.sql_session.execute(sa.text("INSERT INTO users_t VALUES (1)"))

    @DBOS.workflow()
    def wf() -> None:
        runs.append(1)
        write()

    for _ in range(2):
        DBOS(config=cfg)  # type: ignore[arg-type]
        DBOS.launch()
        with pytest.raises(DBOSException):
            DBOS.reset_system_database(truncate=True)
        with SetWorkflowID("fixed-id"):
            wf()
        DBOS.destroy()
        DBOS(config=cfg)  # type: ignore[arg-type]
        DBOS.reset_system_database(truncate=True)
        DBOS.destroy()
    assert runs == [1, 1]
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM users_t").fetchone()[0] == 2


def test_recover_pending_in_process(db_url: str) -> None:
    gate = threading.Event()
    runs: list[str] = []

    @DBOS.step()
    def first() -> None:
        runs.append("first")

    @DBOS.workflow()
    def wf() -> str:
        first()
        gate.wait(10)
        DBOS.sleep(0.01)
        runs.append("end")
        return "done"

    DBOS(config={"name": "force-rec", "system_database_url": db_url})
    DBOS.launch()
    with SetWorkflowID("force-1"):
        DBOS.start_workflow(wf)
    time.sleep(0.2)
    handles = DBOS.recover_pending_workflows()
    assert [h.workflow_id for h in handles] == ["force-1"]
    time.sleep(0.2)
    gate.set()
    assert DBOS.retrieve_workflow("force-1").get_result() == "done"
    time.sleep(0.2)
    assert runs == ["first", "end"]


def test_decorated_after_launch_runs(db_url: str) -> None:
    DBOS(config={"name": "late-deco", "system_database_url": db_url})
    DBOS.launch()

    @DBOS.workflow()
    def late() -> int:
        return 9

    assert late() == 9


def _unused(_: Callable[[], None]) -> None:  # keeps imports honest for type checkers
    os.getpid()


def test_script_without_destroy_exits_promptly(db_url: str, tmp_path: Any) -> None:
    import subprocess
    import sys

    script = tmp_path / "no_destroy.py"
    script.write_text(
        "import sys, time\n"
        "from dbos import DBOS\n"
        "DBOS(config={'name': 'exit-app', 'system_database_url': sys.argv[1]})\n"
        "@DBOS.workflow()\n"
        "def wf():\n"
        "    DBOS.sleep(30)\n"
        "DBOS.launch()\n"
        "DBOS.start_workflow(wf)\n"
        "time.sleep(0.3)\n"
    )
    start = time.monotonic()
    subprocess.run([sys.executable, str(script), db_url], check=True, timeout=20)
    assert time.monotonic() - start < 3.0 + 2.0  # interpreter start-up plus the 3 s bound


def test_max_recovery_attempts_dead_letters(db_url: str) -> None:
    from dbos.error import DBOSAwaitedWorkflowMaxRecoveryAttemptsExceeded

    gate = threading.Event()

    @DBOS.workflow(max_recovery_attempts=2)
    def stuck() -> str:
        gate.wait(10)
        DBOS.sleep(0.01)
        return "finished"

    DBOS(config={"name": "dead-letter", "system_database_url": db_url})
    DBOS.launch()
    with SetWorkflowID("dl-1"):
        DBOS.start_workflow(stuck)
    for expected_attempts in (2, 3):
        time.sleep(0.2)
        DBOS.recover_pending_workflows()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            st = DBOS.get_workflow_status("dl-1")
            if st is not None and st.recovery_attempts == expected_attempts and st.status == "PENDING":
                break
            time.sleep(0.02)
        assert st is not None and st.recovery_attempts == expected_attempts
    time.sleep(0.2)
    DBOS.recover_pending_workflows()
    with pytest.raises(DBOSAwaitedWorkflowMaxRecoveryAttemptsExceeded):
        DBOS.retrieve_workflow("dl-1").get_result()
    gate.set()
    st = DBOS.get_workflow_status("dl-1")
    assert st is not None and st.status == "MAX_RECOVERY_ATTEMPTS_EXCEEDED" and st.completed_at is not None


def test_destroy_is_bounded_when_the_database_is_gone(backend: str) -> None:
    if backend != "postgres":
        pytest.skip("a SQLite file cannot become unreachable underneath an open connection")
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
    from conftest import create_pg_database, drop_pg_database, pg_url_for

    name = create_pg_database()
    DBOS(config={"name": "gone-db", "system_database_url": pg_url_for(name)})
    DBOS.launch()
    drop_pg_database(name)
    start = time.monotonic()
    DBOS.destroy()
    assert time.monotonic() - start < 8.0
