"""Helper program for tests/acceptance/test_crash.py: a small DBOS application that is crashed and recovered.

Usage: python crash_app.py DB_URL SCENARIO LEDGER [--mode run|recover] [--wid ID] [--barrier PATH] [--hold-in-txn]

- ``run`` mode launches DBOS, starts the scenario's workflow under ``--wid`` and waits for its result. Crashes are
  injected either with ``DBOS_FAILPOINTS`` in the environment or by the test sending SIGKILL after a marker.
- ``recover`` mode launches DBOS on the same database with the same application name and the same registered
  functions, so launch-time recovery takes over the dead process's PENDING workflows; it then waits for ``--wid``.

Every step/transaction body appends ``"<label> <pid>"`` to the LEDGER file so the test can count executions.
Markers on stdout (flushed at once): ``LAUNCHED``, ``READY``, ``IN_TXN``, ``SLEEP_RECORDED``, ``RESULT <json>``,
``ELAPSED <seconds>``. Every workflow, step and transaction below is registered in every mode, so the computed
application version is the same in all processes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from typing import Any

import sqlalchemy

from dbos import DBOS, SetWorkflowID, SetWorkflowTimeout
from dbos import _failpoints as fp

APP_NAME = "crash-app"
RACE_IDS = [f"race-{i}" for i in range(5)]

LEDGER = ""
HOLD_IN_TXN = False


def marker(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def ledger(label: str) -> None:
    """Append one line with a single O_APPEND write (atomic across processes, survives SIGKILL)."""
    fd = os.open(LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{label} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


# --- two steps (step-boundary, in-step, insert and outcome crashes) --------------------------------------------


@DBOS.step()
def step_one(x: int) -> int:
    ledger("step1")
    return x + 1


@DBOS.step()
def step_two(y: int) -> int:
    ledger("step2")
    return y * 10


@DBOS.workflow()
def two_steps(x: int) -> int:
    return step_two(step_one(x))


# --- transaction --------------------------------------------------------------------------------------------


@DBOS.transaction()
def insert_row(wid: str, value: int) -> int:
    ledger("txn")
    session = DBOS.sql_session
    session.execute(
        sqlalchemy.text("CREATE TABLE IF NOT EXISTS crash_rows (wid TEXT NOT NULL, value INTEGER NOT NULL)")
    )
    session.execute(
        sqlalchemy.text("INSERT INTO crash_rows (wid, value) VALUES (:w, :v)"), {"w": wid, "v": value}
    )
    if HOLD_IN_TXN:
        session.flush()
        marker("IN_TXN")
        time.sleep(60)  # the test SIGKILLs the process here, before COMMIT
    return value * 2


@DBOS.step()
def after_txn(v: int) -> int:
    ledger("after_txn")
    return v + 1


@DBOS.workflow()
def txn_wf(value: int) -> int:
    v = insert_row(DBOS.workflow_id, value)
    DBOS.sleep(0.2)  # `sleep.after_record=kill@1` crashes here, after the transaction committed
    return after_txn(v)


# --- durable sleep ------------------------------------------------------------------------------------------


@DBOS.step()
def before_sleep() -> str:
    ledger("before_sleep")
    return "b"


@DBOS.step()
def after_sleep() -> str:
    ledger("after_sleep")
    return "a"


@DBOS.workflow()
def sleep_wf(seconds: float) -> str:
    b = before_sleep()
    DBOS.sleep(seconds)
    return b + after_sleep() + "-slept"


# --- same ID from two processes -----------------------------------------------------------------------------


@DBOS.workflow()
def race_wf(tag: str) -> str:
    ledger(f"race {DBOS.workflow_id}")
    time.sleep(0.5)  # stay PENDING long enough for the other process's call to find the record
    return f"{tag}-{DBOS.workflow_id}"


@DBOS.step()
def before_recv() -> str:
    ledger("before_recv")
    return "r"


@DBOS.step()
def after_recv(v: Any) -> str:
    ledger(f"got-{v}")
    return str(v)


@DBOS.workflow()
def recv_wf() -> str:
    before_recv()
    first = DBOS.recv("m", timeout_seconds=60)  # the test SIGKILLs the process while this waits
    second = DBOS.recv("m", timeout_seconds=0.2)  # the message is consumed once: nothing more arrives
    return after_recv(first) + f"|{second}"


WORKFLOWS: dict[str, Any] = {
    "two_steps": (two_steps, (4,)),  # (4 + 1) * 10 = 50
    "txn": (txn_wf, (21,)),  # 21 * 2 + 1 = 43
    "sleep": (sleep_wf, (2.0,)),  # "ba-slept"
    "long_sleep": (sleep_wf, (60.0,)),
    "recv": (recv_wf, ()),  # "hello|None"  # run with --timeout: cancelled at its deadline
}


def wait_for_barrier(path: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise SystemExit("barrier never appeared")
        time.sleep(0.001)


def run_race(barrier: str) -> None:
    marker("READY")
    wait_for_barrier(barrier)
    results: dict[str, Any] = {}

    def call(wid: str) -> None:
        with SetWorkflowID(wid):
            results[wid] = race_wf(f"pid{os.getpid()}")

    threads = [threading.Thread(target=call, args=(wid,)) for wid in RACE_IDS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    marker("RESULT " + json.dumps(results, sort_keys=True))


def main() -> None:
    global LEDGER, HOLD_IN_TXN
    p = argparse.ArgumentParser()
    p.add_argument("db_url")
    p.add_argument("scenario", choices=[*WORKFLOWS, "race"])
    p.add_argument("ledger")
    p.add_argument("--mode", choices=["run", "recover"], default="run")
    p.add_argument("--wid", default="crash-wf")
    p.add_argument("--barrier")
    p.add_argument("--hold-in-txn", action="store_true")
    p.add_argument("--timeout", type=float, help="start the workflow under SetWorkflowTimeout(seconds)")
    a = p.parse_args()
    LEDGER = a.ledger
    HOLD_IN_TXN = a.hold_in_txn

    if a.scenario in ("sleep", "long_sleep") and a.mode == "run":
        # Tell the test the moment the wake-up time is durably recorded, so it can kill ~1 s into the sleep.
        fp.arm("sleep.after_record", lambda: marker(f"SLEEP_RECORDED {time.time():.3f}"))

    DBOS(
        config={
            "name": APP_NAME,
            "system_database_url": a.db_url,
            "executor_heartbeat_interval_sec": 0.5,
            "executor_lease_sec": 3.0,
        }
    )
    DBOS.launch()
    t0 = time.monotonic()
    marker("LAUNCHED")
    try:
        if a.scenario == "race":
            run_race(a.barrier)
        elif a.mode == "run":
            func, args = WORKFLOWS[a.scenario]
            with SetWorkflowID(a.wid), SetWorkflowTimeout(a.timeout):
                result = func(*args)
            marker("RESULT " + json.dumps(result))
        else:
            result = DBOS.retrieve_workflow(a.wid).get_result(polling_interval_sec=0.1)
            elapsed = time.monotonic() - t0
            marker("RESULT " + json.dumps(result))
            marker(f"ELAPSED {elapsed:.3f}")
    finally:
        DBOS.destroy()


if __name__ == "__main__":
    main()
