"""Crash and recovery acceptance tests with real processes (01 §4.3, §6, §9, §10; 02 §12).

Each test runs tests/acceptance/crash_app.py in subprocesses on a fresh database of each backend. A process is
SIGKILLed either by a failpoint (`DBOS_FAILPOINTS=site=kill@n`) or by the test after a marker on its stdout; a
second process of the same application then launches on the same database, takes over the dead executor's
PENDING workflow (same host: the dead pid is detected at once) and finishes it from its last checkpoint. Step and
transaction bodies append to a ledger file, so the tests count how often each body ran.

Scenario "same workflow ID started from 8 threads in one process runs its body once" is already covered by
tests/integration/test_workflows.py::test_concurrent_same_id_runs_body_once.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from dbos._serialization import SerializerSet
from dbos._store import backend_of, open_system_store
from dbos._store.base import StoreSettings

APP = Path(__file__).with_name("crash_app.py")
WID = "crash-wf"
STEP_TIMEOUT = 30.0  # bound on every wait for a subprocess or a marker


class App:
    """One crash_app.py subprocess; stdout is read by a thread so markers can be awaited with a timeout."""

    def __init__(
        self, tmp: Path, db_url: str, scenario: str, *args: str, failpoints: str | None = None
    ) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DBOS")}
        if failpoints is not None:
            env["DBOS_FAILPOINTS"] = failpoints
        self.ledger = tmp / "ledger.txt"
        self.stderr_path = tmp / f"stderr-{scenario}-{time.monotonic_ns()}.txt"
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-u", str(APP), db_url, scenario, str(self.ledger), *args],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            text=True,
        )
        self.lines: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")[-4000:]

    def wait_for(self, prefix: str, timeout: float = STEP_TIMEOUT) -> str:
        """The first stdout line starting with `prefix` (earlier lines are kept in `self.lines`)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                pytest.fail(
                    f"no {prefix!r} marker within {timeout}s; stdout={self.lines} stderr={self.stderr()}"
                )
            try:
                line = self._q.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self.proc.wait(timeout=STEP_TIMEOUT)
                pytest.fail(
                    f"process exited (rc={self.proc.returncode}) before {prefix!r}; "
                    f"stdout={self.lines} stderr={self.stderr()}"
                )
            self.lines.append(line)
            if line.startswith(prefix):
                return line

    def result(self, timeout: float = STEP_TIMEOUT) -> Any:
        return json.loads(self.wait_for("RESULT ", timeout).split(" ", 1)[1])

    def finish(self, timeout: float = STEP_TIMEOUT) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"process did not exit within {timeout}s; stdout={self.lines} stderr={self.stderr()}")
        self._reader.join(timeout=5)
        while True:
            try:
                line = self._q.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        self._stderr.close()
        return rc

    def expect_killed(self, timeout: float = STEP_TIMEOUT) -> None:
        rc = self.finish(timeout)
        assert rc == -signal.SIGKILL, (
            f"expected death by SIGKILL, got rc={rc}; stdout={self.lines} stderr={self.stderr()}"
        )

    def expect_clean_exit(self, timeout: float = STEP_TIMEOUT) -> None:
        rc = self.finish(timeout)
        assert rc == 0, f"rc={rc}; stdout={self.lines} stderr={self.stderr()}"

    def kill(self) -> None:
        """SIGKILL and reap (a zombie would still pass the same-host pid probe)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=STEP_TIMEOUT)


@pytest.fixture
def apps() -> Any:
    started: list[App] = []
    yield started
    for a in started:
        if a.proc.poll() is None:
            a.kill()
        if not a._stderr.closed:
            a._stderr.close()


def spawn(
    apps: list[App], tmp: Path, db_url: str, scenario: str, *args: str, failpoints: str | None = None
) -> App:
    a = App(tmp, db_url, scenario, *args, failpoints=failpoints)
    apps.append(a)
    return a


def ledger_counts(path: Path) -> Counter[str]:
    if not path.exists():
        return Counter()
    return Counter(line.rsplit(" ", 1)[0] for line in path.read_text().splitlines() if line)


def ledger_pids(path: Path, label: str) -> list[int]:
    return [
        int(ln.rsplit(" ", 1)[1]) for ln in path.read_text().splitlines() if ln.rsplit(" ", 1)[0] == label
    ]


def open_store(db_url: str) -> Any:
    return open_system_store(db_url, StoreSettings(role="tool", create_database=False))


def final_row(db_url: str, wid: str) -> Any:
    store = open_store(db_url)
    try:
        return store.get_workflow(wid), store.list_steps(wid), store.list_executors(include_inactive=True)
    finally:
        store.close()


def assert_taken_over(db_url: str, wid: str, dead_pid: int) -> tuple[Any, list[Any]]:
    row, steps, executors = final_row(db_url, wid)
    assert row is not None
    assert row.status == "SUCCESS", row
    assert row.application_name == "crash-app"
    assert row.recovery_attempts == 2, f"one first execution plus one recovery, got {row.recovery_attempts}"
    dead = [e for e in executors if e.pid == dead_pid]
    assert dead and all(e.state == "DEAD" for e in dead), dead
    return row, steps


def short(name: str) -> str:
    """A step's recorded name without the module/qualname prefix (DBOS's own names are kept whole)."""
    return name if name.startswith("DBOS.") else name.rsplit(".", 1)[-1]


def recover(apps: list[App], tmp: Path, db_url: str, scenario: str, wid: str = WID) -> App:
    return spawn(apps, tmp, db_url, scenario, "--mode", "recover", "--wid", wid)


# --- 1, 2: killed at a step boundary / inside a step (and at the other crash sites of a two-step workflow) -------


@pytest.mark.parametrize(
    ("failpoints", "step1_runners", "step2_runners"),
    [
        # Which process ran each step body: "A" is the killed process, "B" the restarted one.
        pytest.param("step.after_commit=kill@1", "A", "B", id="after-step1-checkpoint"),
        pytest.param("step.before_commit=kill@1", "AB", "B", id="inside-step1"),
        pytest.param("step.after_commit=kill@2", "A", "A", id="after-step2-checkpoint"),
        pytest.param("step.before_commit=kill@2", "A", "AB", id="inside-step2"),
        pytest.param("workflow.insert.after_commit=kill@1", "B", "B", id="after-insert"),
        pytest.param("outcome.before_commit=kill@1", "A", "A", id="before-outcome"),
    ],
)
def test_killed_two_step_workflow_is_finished_by_restarted_process(
    db_url: str, tmp_path: Path, apps: list[App], failpoints: str, step1_runners: str, step2_runners: str
) -> None:
    first = spawn(apps, tmp_path, db_url, "two_steps", "--wid", WID, failpoints=failpoints)
    first.wait_for("LAUNCHED")
    first.expect_killed()
    assert not any(ln.startswith("RESULT") for ln in first.lines)
    before = ledger_counts(first.ledger)

    second = recover(apps, tmp_path, db_url, "two_steps")
    assert second.result() == 50
    second.expect_clean_exit()

    # Checkpointed steps are never re-executed; a step killed before its checkpoint runs once more (at least once).
    pid = {"A": first.proc.pid, "B": second.proc.pid}
    assert ledger_pids(first.ledger, "step1") == [pid[c] for c in step1_runners], (
        before,
        ledger_counts(first.ledger),
    )
    assert ledger_pids(first.ledger, "step2") == [pid[c] for c in step2_runners], (
        before,
        ledger_counts(first.ledger),
    )
    _, steps = assert_taken_over(db_url, WID, first.proc.pid)
    assert [(s.step_id, short(s.name)) for s in steps] == [(1, "step_one"), (2, "step_two")]


# --- 3: killed inside / right after a transaction --------------------------------------------------------------


def count_rows(db_url: str, wid: str) -> int:
    if backend_of(db_url) == "sqlite":
        import sqlite3
        from contextlib import closing

        path = db_url.split("sqlite:///", 1)[1]
        with closing(sqlite3.connect(path)) as conn:
            return int(conn.execute("SELECT count(*) FROM crash_rows WHERE wid = ?", (wid,)).fetchone()[0])
    import psycopg

    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT count(*) FROM crash_rows WHERE wid = %s", (wid,)).fetchone()
        assert row is not None
        return int(row[0])


def test_killed_after_transaction_commit_row_exists_once(
    db_url: str, tmp_path: Path, apps: list[App]
) -> None:
    # The transaction shares the system database, so its checkpoint commits with the INSERT; the process dies at
    # the durable sleep that follows it.
    first = spawn(apps, tmp_path, db_url, "txn", "--wid", WID, failpoints="sleep.after_record=kill@1")
    first.expect_killed()
    assert ledger_counts(first.ledger)["txn"] == 1
    assert count_rows(db_url, WID) == 1

    second = recover(apps, tmp_path, db_url, "txn")
    assert second.result() == 43
    second.expect_clean_exit()

    counts = ledger_counts(first.ledger)
    assert counts["txn"] == 1, "a committed transaction must not run again"
    assert counts["after_txn"] == 1
    assert count_rows(db_url, WID) == 1
    _, steps = assert_taken_over(db_url, WID, first.proc.pid)
    assert [short(s.name) for s in steps] == ["insert_row", "DBOS.sleep", "after_txn"]


def test_killed_inside_transaction_rolls_back_and_reruns_once(
    db_url: str, tmp_path: Path, apps: list[App]
) -> None:
    first = spawn(apps, tmp_path, db_url, "txn", "--wid", WID, "--hold-in-txn")
    first.wait_for("IN_TXN")  # the INSERT is flushed but not committed
    first.kill()

    second = recover(apps, tmp_path, db_url, "txn")
    assert second.result() == 43
    second.expect_clean_exit()

    counts = ledger_counts(first.ledger)
    assert counts["txn"] == 2, "the uncommitted transaction body runs again after recovery"
    assert counts["after_txn"] == 1
    assert count_rows(db_url, WID) == 1, (
        "the killed attempt's INSERT was rolled back; only the retry's row exists"
    )
    _, steps = assert_taken_over(db_url, WID, first.proc.pid)
    assert [short(s.name) for s in steps] == ["insert_row", "DBOS.sleep", "after_txn"]


# --- 4: killed during a durable sleep ---------------------------------------------------------------------------


def test_killed_during_sleep_resumes_remaining_time(db_url: str, tmp_path: Path, apps: list[App]) -> None:
    first = spawn(apps, tmp_path, db_url, "sleep", "--wid", WID)
    first.wait_for("SLEEP_RECORDED")
    t_recorded = time.monotonic()
    time.sleep(1.0)
    first.kill()
    assert ledger_counts(first.ledger) == Counter({"before_sleep": 1})

    second = recover(apps, tmp_path, db_url, "sleep")
    assert second.result() == "ba-slept"
    t_done = time.monotonic()
    elapsed = float(second.wait_for("ELAPSED ").split()[1])
    second.expect_clean_exit()

    # Measured inside the restarted process from the end of launch to the result: the 2 s sleep was not restarted.
    assert elapsed < 1.8, f"recovered workflow took {elapsed:.3f}s after launch; the sleep restarted?"
    # ...and not cut short either: the whole sleep still lasted about 2 s from when it was recorded.
    assert t_done - t_recorded >= 1.9, (
        f"sleep ended after {t_done - t_recorded:.3f}s, before its wake-up time"
    )
    assert ledger_counts(first.ledger) == Counter({"before_sleep": 1, "after_sleep": 1})

    row, steps = assert_taken_over(db_url, WID, first.proc.pid)
    assert [short(s.name) for s in steps] == ["before_sleep", "DBOS.sleep", "after_sleep"]
    sleep_step = steps[1]
    assert sleep_step.output is not None
    wake_ms = SerializerSet().deserialize_value(sleep_step.output)
    assert isinstance(wake_ms, int)
    assert row.completed_at is not None and row.completed_at >= wake_ms, (
        "completed before the recorded wake-up"
    )
    assert row.completed_at - wake_ms < 1500


# --- a deadline outlives the process that started the workflow (02 §2 rule 6) -----------------------------------


def test_timeout_enforced_after_starter_is_killed(db_url: str, tmp_path: Path, apps: list[App]) -> None:
    import crash_app

    from dbos import DBOS
    from dbos.error import DBOSWorkflowTimeoutError

    t0 = time.monotonic()
    first = spawn(apps, tmp_path, db_url, "long_sleep", "--wid", WID, "--timeout", "2")
    first.wait_for("SLEEP_RECORDED")
    time.sleep(0.5)
    first.kill()
    started = time.monotonic() - t0
    DBOS.destroy()
    DBOS(config={"name": crash_app.APP_NAME, "system_database_url": db_url, "executor_heartbeat_interval_sec": 0.5,
                 "executor_lease_sec": 3.0})  # fmt: skip
    DBOS.launch()
    try:
        deadline = time.monotonic() + 10
        while (st := DBOS.get_workflow_status(WID)) is None or st.status != "CANCELLED":
            assert time.monotonic() < deadline, f"still {st.status if st else None}"
            time.sleep(0.02)
        cancelled_after = time.monotonic() - t0
        assert isinstance(st.error, DBOSWorkflowTimeoutError)
        assert st.workflow_timeout_ms == 2000
        # about 1 s after the deadline at the latest (the deadline was fixed when the workflow was started)
        assert cancelled_after < started + 3.0, f"cancelled {cancelled_after:.2f}s after spawn"
        try:
            DBOS.retrieve_workflow(WID).get_result()
            raise AssertionError("the timed-out workflow returned")
        except DBOSWorkflowTimeoutError:
            pass
        time.sleep(0.3)
        assert ledger_counts(first.ledger) == Counter({"before_sleep": 1})  # the sleep never completed
    finally:
        DBOS.destroy()


# --- a message sent while the receiver's process is down is received exactly once (04 §4) ----------------------


def test_recv_survives_a_crash_while_waiting(db_url: str, tmp_path: Path, apps: list[App]) -> None:
    from dbos import DBOSClient

    first = spawn(apps, tmp_path, db_url, "recv", "--wid", WID)
    deadline = time.monotonic() + 30
    while ledger_counts(first.ledger)["before_recv"] < 1:
        assert time.monotonic() < deadline, "the workflow never reached recv"
        time.sleep(0.01)
    time.sleep(0.3)  # inside the wait
    first.kill()
    with DBOSClient(system_database_url=db_url) as client:
        client.send(WID, "hello", "m")  # during the outage
    second = recover(apps, tmp_path, db_url, "recv")
    assert second.result() == "hello|None"
    second.expect_clean_exit()
    assert ledger_counts(first.ledger) == Counter({"before_recv": 1, "got-hello": 1})
    _, steps, _ = final_row(db_url, WID)
    assert [short(s.name) for s in steps] == [
        "before_recv", "DBOS.recv", "DBOS.sleep", "DBOS.recv", "DBOS.sleep", "after_recv"
    ]  # fmt: skip


# --- 5: two processes, one workflow ID ---------------------------------------------------------------------------


def test_two_processes_same_workflow_id_run_once(db_url: str, tmp_path: Path, apps: list[App]) -> None:
    barrier = tmp_path / "go"
    a = spawn(apps, tmp_path, db_url, "race", "--barrier", str(barrier))
    b = spawn(apps, tmp_path, db_url, "race", "--barrier", str(barrier))
    a.wait_for("READY")
    b.wait_for("READY")
    barrier.touch()
    ra, rb = a.result(), b.result()
    a.expect_clean_exit()
    b.expect_clean_exit()

    race_ids = [f"race-{i}" for i in range(5)]
    counts = ledger_counts(a.ledger)
    assert {f"race {wid}": 1 for wid in race_ids} == dict(counts), counts
    assert ra == rb, (ra, rb)
    assert sorted(ra) == race_ids
    pids = {a.proc.pid, b.proc.pid}
    for wid in race_ids:
        (runner,) = ledger_pids(a.ledger, f"race {wid}")
        assert runner in pids
        assert ra[wid] == f"pid{runner}-{wid}", "each caller gets the result of the one execution"
    store = open_store(db_url)
    try:
        for wid in race_ids:
            row = store.get_workflow(wid)
            assert row is not None and row.status == "SUCCESS" and row.recovery_attempts == 1
    finally:
        store.close()
