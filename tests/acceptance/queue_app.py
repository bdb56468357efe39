"""Helper program for tests/acceptance/test_queue_processes.py: a DBOS application serving durable queues.

Usage: python queue_app.py DB_URL LEDGER worker QUEUE [QUEUE ...]
       python queue_app.py DB_URL LEDGER dedup --barrier PATH --dedup-id ID --wid ID

- ``worker`` declares every queue below, dispatches only the named ones (`DBOS.listen_queues`) and serves them until
  its stdin is closed, then destroys DBOS and exits 0.
- ``dedup`` declares the queues, waits for the barrier file, enqueues ``qapp_dedup`` on queue "dedup" under
  ``SetWorkflowID(--wid)`` with the given deduplication ID, prints the workflow ID it got back, waits for the result and exits.

The test process imports this module too (for the workflow functions it enqueues) but never calls `main()`, so it
declares no queue. All processes use the same application name and an explicit application version, so rows
enqueued by the test process (whose registry holds every test module's workflows) are claimable here (03 §13).

Every workflow body appends one JSON line ``{"kind", "pid", "wid", "start", "end"}`` to LEDGER with a single
O_APPEND write (atomic across processes, survives SIGKILL). Markers on stdout (flushed at once):
``READY <pid> <executor_id>``, ``WID <workflow_id>``, ``RESULT <json>``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from dbos import DBOS, Queue, SetEnqueueOptions, SetWorkflowID

APP_NAME = "qapp"
APP_VERSION = "qapp-v1"
LEDGER = ""


def config(db_url: str) -> Any:
    return {
        "name": APP_NAME,
        "system_database_url": db_url,
        "application_version": APP_VERSION,
        "executor_heartbeat_interval_sec": 0.5,
        "executor_lease_sec": 3.0,
    }


def marker(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def ledger(kind: str, start: float, end: float | None = None) -> None:
    line = json.dumps(
        {"kind": kind, "pid": os.getpid(), "wid": DBOS.workflow_id, "start": start, "end": end or start}
    )
    fd = os.open(LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def hold_path() -> str:
    return LEDGER + ".hold"


# --- workflows ------------------------------------------------------------------------------------------------


@DBOS.workflow()
def qapp_sleep(seconds: float) -> int:
    start = time.time()
    if seconds > 0:
        time.sleep(seconds)
    ledger("wf", start, time.time())
    return os.getpid()


@DBOS.step()
def qapp_step_one() -> str:
    ledger("step1", time.time())
    return "one"


@DBOS.step()
def qapp_step_two() -> str:
    ledger("step2", time.time())
    deadline = time.monotonic() + 30
    while os.path.exists(hold_path()) and time.monotonic() < deadline:  # the test SIGKILLs the process here
        time.sleep(0.01)
    return "two"


@DBOS.workflow()
def qapp_two_steps() -> str:
    start = time.time()
    out = qapp_step_one() + qapp_step_two()
    ledger("wf", start, time.time())
    return out


@DBOS.step()
def qapp_zombie_one() -> str:
    ledger("z1", time.time())
    return "one"


@DBOS.step()
def qapp_zombie_two(seconds: float) -> str:
    ledger("z2", time.time())  # the zombie test SIGSTOPs the process while it sleeps here
    time.sleep(seconds)
    ledger("z2end", time.time())
    return "two"


@DBOS.step()
def qapp_zombie_three() -> str:
    ledger("z3", time.time())
    return "three"


@DBOS.workflow()
def qapp_zombie(seconds: float) -> str:
    return qapp_zombie_one() + qapp_zombie_two(seconds) + qapp_zombie_three() + f"@{os.getpid()}"


@DBOS.workflow()
def qapp_dedup() -> int:
    start = time.time()
    time.sleep(0.2)
    ledger("wf", start, time.time())
    return os.getpid()


def declare_queues() -> None:
    Queue("drain", concurrency=5, worker_concurrency=2)
    Queue("rated", limiter={"limit": 5, "period": 1.0})
    Queue("solo", concurrency=1)
    Queue("lanes", partition_queue=True)
    Queue("dedup")
    Queue("zombie")


def wait_for_barrier(path: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise SystemExit("barrier never appeared")
        time.sleep(0.001)


def main() -> None:
    global LEDGER
    p = argparse.ArgumentParser()
    p.add_argument("db_url")
    p.add_argument("ledger")
    p.add_argument("mode", choices=["worker", "dedup"])
    p.add_argument("queues", nargs="*")
    p.add_argument("--barrier")
    p.add_argument("--dedup-id")
    p.add_argument("--wid")
    a = p.parse_args()
    LEDGER = a.ledger

    declare_queues()
    DBOS(config=config(a.db_url))
    DBOS.listen_queues(a.queues if a.mode == "worker" else ["dedup"])
    DBOS.launch()
    try:
        marker(f"READY {os.getpid()} {DBOS.executor_id}")
        if a.mode == "worker":
            sys.stdin.read()  # serve until the test closes our stdin
        else:
            wait_for_barrier(a.barrier)
            with SetWorkflowID(a.wid), SetEnqueueOptions(deduplication_id=a.dedup_id):
                handle = DBOS.enqueue_workflow("dedup", qapp_dedup)
            marker(f"WID {handle.workflow_id}")
            marker("RESULT " + json.dumps(handle.get_result(polling_interval_sec=0.05)))
    finally:
        DBOS.destroy()


if __name__ == "__main__":
    main()
