"""Fencing of a paused ("zombie") executor after a takeover (02 §12.5), with real processes and SIGSTOP."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from typing import Any

import queue_app
from test_queue_processes import Cluster, cluster, local, wait_until  # noqa: F401  (fixtures)

from dbos import DBOS


def test_zombie_executor_writes_nothing_after_takeover(local: Cluster) -> None:  # noqa: F811
    c = local
    a = c.spawn("worker", "zombie")
    a.ready()
    handle = DBOS.enqueue_workflow("zombie", queue_app.qapp_zombie, 1.0)
    wait_until(lambda: any(r["pid"] == a.pid for r in c.entries("z2")), 20, "A inside step two")
    os.kill(a.pid, signal.SIGSTOP)
    try:
        b = c.spawn("worker", "zombie")
        b.ready()
        # A's lease (3 s) expires; this process takes it over, B claims the workflow and finishes it
        wait_until(lambda: handle.get_status().status == "SUCCESS", 20, "B finishes the workflow")
    finally:
        os.kill(a.pid, signal.SIGCONT)
    result: Any = handle.get_result()
    assert result == f"onetwothree@{b.pid}"
    status = handle.get_status()
    assert status.executor_id == b.executor_id
    # A wakes up: its step-two body ends, but its checkpoint is refused and it runs nothing more
    wait_until(lambda: "taken over" in a.stderr(), 10, "A notices it was taken over")
    time.sleep(0.5)
    by_kind = Counter((r["kind"], r["pid"]) for r in c.entries())
    assert (
        by_kind[("z1", a.pid)] == 1 and by_kind[("z1", b.pid)] == 0
    )  # step one replayed from A's checkpoint
    assert by_kind[("z2", a.pid)] == 1 and by_kind[("z2", b.pid)] == 1
    assert by_kind[("z3", a.pid)] == 0 and by_kind[("z3", b.pid)] == 1
    assert handle.get_status().status == "SUCCESS" and handle.get_result() == result  # B's outcome stands
    steps = DBOS.list_workflow_steps(handle.workflow_id)
    assert [s["output"] for s in steps] == ["one", "two", "three"]
    # A registered a new incarnation and serves new work once B is gone
    wait_until(
        lambda: any(
            e.executor_id == a.executor_id and e.incarnation == 2 and e.state == "ALIVE"
            for e in DBOS.list_executors()
        ),
        10,
        "A's incarnation 2",
    )
    b.stop()
    fresh = DBOS.enqueue_workflow("zombie", queue_app.qapp_zombie, 0.0)
    assert fresh.get_result() == f"onetwothree@{a.pid}"
    a.stop()
