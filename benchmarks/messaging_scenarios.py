"""Messaging scenarios (issue 5, 04 §1.5), imported by scenarios.py; they use only the public API that dbosx and
the reference share (`DBOS.send`, `DBOS.recv`, `DBOS.set_event`, `DBOS.get_event`).

- send_recv_round_trip: workflow A sends to workflow B, B receives and replies, A receives the reply; the round
  trip is timed inside A's body (perf_counter), one process.
- event_round_trip: from outside, `send` a value to a workflow that `recv`s it and `set_event`s it under a fresh
  key, and `get_event` that key; one process.
- send_recv_cross_process: as send_recv_round_trip, with B in another process (same database).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from dbos import DBOS, SetWorkflowID

Launch = Callable[[str], None]
PONGER_ID = "bench-ponger"


@DBOS.workflow()
def msg_ponger(rounds: int, reply_to: str) -> int:
    for _ in range(rounds):
        v = DBOS.recv("ping", timeout_seconds=60)
        DBOS.send(reply_to, v, "pong")
    return rounds


@DBOS.workflow()
def msg_pinger(rounds: int, dest: str) -> list[float]:
    out = []
    for i in range(rounds):
        t0 = time.perf_counter()
        DBOS.send(dest, i, "ping")
        if DBOS.recv("pong", timeout_seconds=60) != i:
            raise RuntimeError("out of order")
        out.append(time.perf_counter() - t0)
    return out


@DBOS.workflow()
def msg_event_echo(rounds: int) -> int:
    for _ in range(rounds):
        v = DBOS.recv("go", timeout_seconds=60)
        DBOS.set_event(f"k{v}", v)
    return rounds


def _fig(samples: list[float], warmup: int) -> dict[str, Any]:
    ms = sorted(x * 1000 for x in samples[warmup:])
    return {"value": statistics.median(ms), "unit": "ms", "n": len(ms), "p90": ms[(len(ms) * 9) // 10],
            "p99": ms[min(len(ms) - 1, (len(ms) * 99) // 100)]}  # fmt: skip


def scenario_send_recv_round_trip(
    launch: Launch, backend: str, db_url: str, n: int, warmup: int
) -> dict[str, Any]:
    launch(db_url)
    try:
        rounds = n + warmup
        with SetWorkflowID(PONGER_ID):  # first: the pinger's first send needs its destination to exist
            ponger = DBOS.start_workflow(msg_ponger, rounds, "bench-pinger")
        with SetWorkflowID("bench-pinger"):
            pinger = DBOS.start_workflow(msg_pinger, rounds, PONGER_ID)
        samples = pinger.get_result()
        ponger.get_result()
    finally:
        DBOS.destroy()
    return {"figures": {"send_recv_round_trip_ms": _fig(samples, warmup)}}


def scenario_event_round_trip(
    launch: Launch, backend: str, db_url: str, n: int, warmup: int
) -> dict[str, Any]:
    launch(db_url)
    samples = []
    try:
        rounds = n + warmup
        with SetWorkflowID("bench-echo"):
            echo = DBOS.start_workflow(msg_event_echo, rounds)
        for i in range(rounds):
            t0 = time.perf_counter()
            DBOS.send("bench-echo", i, "go")
            if DBOS.get_event("bench-echo", f"k{i}", timeout_seconds=60) != i:
                raise RuntimeError("wrong event")
            samples.append(time.perf_counter() - t0)
        echo.get_result()
    finally:
        DBOS.destroy()
    return {"figures": {"event_round_trip_ms": _fig(samples, warmup)}}


def scenario_msg_worker(launch: Launch, backend: str, db_url: str, n: int, warmup: int) -> dict[str, Any]:
    """The other process of send_recv_cross_process: runs the ponger until it has answered every round."""
    launch(db_url)
    try:
        with SetWorkflowID(PONGER_ID):
            handle = DBOS.start_workflow(msg_ponger, n + warmup, "bench-pinger")
        print("BENCH_READY", flush=True)
        handle.get_result()
    finally:
        DBOS.destroy()
    return {"figures": {}}


def scenario_send_recv_cross_process(
    launch: Launch, backend: str, db_url: str, n: int, warmup: int
) -> dict[str, Any]:
    here = os.path.dirname(os.path.abspath(__file__))
    child = subprocess.Popen(
        [sys.executable, os.path.join(here, "scenarios.py"), "msg_worker", backend, db_url, "--n", str(n),
         "--warmup", str(warmup)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if line.startswith("BENCH_READY"):
                break
        else:
            raise RuntimeError("worker process did not start")
        launch(db_url)
        try:
            with SetWorkflowID("bench-pinger"):
                samples = msg_pinger(n + warmup, PONGER_ID)
        finally:
            DBOS.destroy()
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    return {"figures": {"send_recv_cross_process_ms": _fig(samples, warmup)}}


MESSAGING_SCENARIOS = {
    "send_recv_round_trip": scenario_send_recv_round_trip,
    "event_round_trip": scenario_event_round_trip,
    "send_recv_cross_process": scenario_send_recv_cross_process,
    "msg_worker": scenario_msg_worker,
}
