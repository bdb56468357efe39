"""Benchmark scenarios. Each invocation runs ONE scenario in a fresh process and prints one JSON result line.

    <python> benchmarks/scenarios.py <scenario> <backend> <db_url> [--n N] [--warmup W]

The same file runs unchanged under dbosx and under the reference implementation (PyPI ``dbos``), so it uses
only the public API both share: ``DBOS(config={"name", "system_database_url"})``, ``DBOS.launch()``,
``@DBOS.workflow()``, ``@DBOS.step()``, ``DBOS.start_workflow``, ``handle.get_result()``,
``DBOS.get_workflow_status``, ``SetWorkflowID``, ``DBOS.destroy()``; for the queue scenarios ``q.enqueue``,
``DBOS.enqueue_workflow``, ``DBOS.listen_queues([])`` and ``handle.workflow_id``, with queues declared by
``Queue(...)`` (dbosx) or ``DBOS.register_queue(...)`` (the reference, which refuses ``Queue(...)``).

The result is printed on stdout as ``BENCH_RESULT {json}``, so library log lines can never be mistaken for it.
``benchmarks/run.py`` starts these processes; running one by hand is handy for profiling, e.g.
``py-spy record -o out.svg -- .venv/bin/python benchmarks/scenarios.py sequential sqlite sqlite:////tmp/b.sqlite``.

Every workflow is defined at module level, unconditionally and in the same order in every process: an
implementation may derive its application version from the registered code, and the recovery scenario needs
the killed process and the restarted one to agree on it.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import queue as pyqueue
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from control_scenarios import CONTROL_SCENARIOS
from count_scenarios import COUNT_OPTS, COUNT_SCENARIOS
from messaging_scenarios import MESSAGING_SCENARIOS

from dbos import DBOS, SetWorkflowID

RESULT_MARKER = "BENCH_RESULT "
READY_MARKER = "BENCH_READY "
APP_NAME = "dbosbench"
BLOCK_ENV = "DBOS_BENCH_BLOCK_S"
SQLITE_PREWARM_COMMITS = 1200


# --- workflows (module level, always registered) -------------------------------------------------------------
@DBOS.step()
def trivial_step(i: int) -> int:
    return i


@DBOS.workflow()
def empty_workflow() -> int:
    return 0


@DBOS.workflow()
def ten_step_workflow() -> int:
    total = 0
    for i in range(10):
        total += trivial_step(i)
    return total


class _Counter:
    """A thread-safe counter that sets an event when it reaches a target."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0
        self.target = -1
        self.reached = threading.Event()

    def arm(self, target: int) -> None:
        with self.lock:
            self.target = target
            if self.count >= target:
                self.reached.set()

    def bump(self) -> None:
        with self.lock:
            self.count += 1
            if self.target >= 0 and self.count >= self.target:
                self.reached.set()


BLOCKING_ENTERED = _Counter()  # the blocking step started, so the first step's checkpoint is recorded
BODIES_DONE = _Counter()  # a recovery workflow body returned (its outcome is written right after)


@DBOS.step()
def recovery_first_step(i: int) -> int:
    return i


@DBOS.step()
def recovery_blocking_step(i: int) -> int:
    BLOCKING_ENTERED.bump()
    block_s = float(os.environ.get(BLOCK_ENV, "0") or 0)
    if block_s > 0:
        time.sleep(block_s)
    return i


@DBOS.workflow()
def recovery_workflow(i: int) -> int:
    recovery_first_step(i)
    recovery_blocking_step(i)
    BODIES_DONE.bump()
    return i


STARTED: pyqueue.SimpleQueue[tuple[int, float]] = pyqueue.SimpleQueue()  # (token, perf_counter at body start)


@DBOS.workflow()
def stamp_workflow(token: int) -> list[float]:
    t_perf, t_wall = time.perf_counter(), time.time()  # the body's first line
    STARTED.put((token, t_perf))
    return [t_wall, float(os.getpid())]


# --- helpers ------------------------------------------------------------------------------------------------
def _launch(db_url: str) -> None:
    DBOS(config={"name": APP_NAME, "system_database_url": db_url})
    DBOS.launch()


def _stats_us(samples_s: list[float]) -> dict[str, Any]:
    us = sorted(s * 1e6 for s in samples_s)
    return {
        "median": statistics.median(us),
        "p10": us[len(us) // 10],
        "p90": us[(len(us) * 9) // 10],
        "mean": statistics.fmean(us),
        "n": len(us),
    }


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _memory_kb() -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmHWM", "VmRSS"):
                    out[key] = int(rest.split()[0])
    except OSError:
        import resource

        out["VmHWM"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return out


class RawCommit:
    """One single-row INSERT + COMMIT with no library in between: the database's limit.

    SQLite: its own file in a fresh temporary directory, WAL, ``synchronous=FULL``, ``BEGIN IMMEDIATE`` ...
    ``COMMIT`` (what a durable store does per write). Postgres: an autocommit INSERT on one psycopg connection
    to the benchmark's database.
    """

    def __init__(self, backend: str, db_url: str) -> None:
        self.backend = backend
        self.info: dict[str, Any] = {}
        if backend == "sqlite":
            import sqlite3

            self._tmp = tempfile.TemporaryDirectory(prefix="dbos-bench-commit-")
            self.con: Any = sqlite3.connect(
                os.path.join(self._tmp.name, "commit.sqlite"), isolation_level=None
            )
            mode = self.con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            self.con.execute("PRAGMA synchronous=FULL")
            self.con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            self.info = {
                "journal_mode": mode,
                "synchronous": "FULL",
                "sqlite_version": sqlite3.sqlite_version,
            }
            # Until the WAL first wraps (auto-checkpoint at 1,000 pages, about one page per commit here) every
            # commit grows the -wal file, and fdatasync must flush the size too. A long-running store is past
            # that point, so reach it before measuring: it is the steady-state limit that matters.
            for _ in range(SQLITE_PREWARM_COMMITS):
                self.one()
        else:
            import psycopg

            self.con = psycopg.connect(db_url, autocommit=True)
            table = f"bench_commit_{os.getpid()}"
            self.con.execute(f"CREATE TABLE {table} (id BIGSERIAL PRIMARY KEY, v TEXT NOT NULL)")
            self._insert = f"INSERT INTO {table} (v) VALUES (%s)"
            row = self.con.execute("SHOW server_version").fetchone()
            sync = self.con.execute("SHOW synchronous_commit").fetchone()
            self.info = {
                "server_version": row[0] if row else None,
                "synchronous_commit": sync[0] if sync else None,
            }

    def one(self) -> None:
        if self.backend == "sqlite":
            self.con.execute("BEGIN IMMEDIATE")
            self.con.execute("INSERT INTO t (v) VALUES (?)", ("x",))
            self.con.execute("COMMIT")
        else:
            self.con.execute(self._insert, ("x",))

    def close(self) -> None:
        self.con.close()
        if self.backend == "sqlite":
            self._tmp.cleanup()


def _probe(backend: str, db_url: str) -> RawCommit | None:
    """A raw-commit probe to interleave with a library scenario; None if this environment cannot make one."""
    try:
        return RawCommit(backend, db_url)
    except Exception as e:
        print(f"no interleaved commit probe: {e}", file=sys.stderr)
        return None


def _measure(fns: dict[str, Any], n: int, warmup: int, probe: RawCommit | None) -> dict[str, list[float]]:
    """Time each function `n` times, round-robin, with a raw commit in each round when `probe` is given."""
    if probe is not None:
        fns = {"commit_probe": probe.one, **fns}
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(n):
        for name, fn in fns.items():
            samples[name].append(_timed(fn))
    return samples


def _probe_fields(samples: dict[str, list[float]]) -> dict[str, Any]:
    if "commit_probe" not in samples:
        return {}
    st = _stats_us(samples["commit_probe"])
    return {"commit_probe_us": st["median"], "commit_probe_p90_us": st["p90"]}


# --- scenarios ----------------------------------------------------------------------------------------------
def scenario_commit(backend: str, db_url: str, n: int, warmup: int) -> dict[str, Any]:
    """The database limit: one single-row INSERT + COMMIT, measured without any library."""
    raw = RawCommit(backend, db_url)
    try:
        samples = _measure({"commit": raw.one}, n, warmup, None)["commit"]
    finally:
        raw.close()
    st = _stats_us(samples)
    return {"figures": {"commit_us": {"value": st["median"], "unit": "us", "n": n, **_rest(st), **raw.info}}}


def _rest(st: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in st.items() if k not in ("median", "n")}


def scenario_sequential(backend: str, db_url: str, n: int, warmup: int) -> dict[str, Any]:
    """Direct sequential calls of an empty and a 10-step workflow (and a raw commit), round-robin, so that
    machine drift affects all three alike."""
    _launch(db_url)
    probe = _probe(backend, db_url)
    try:
        samples = _measure({"empty": empty_workflow, "ten": ten_step_workflow}, n, warmup, probe)
    finally:
        DBOS.destroy()
        if probe is not None:
            probe.close()
    e, t = _stats_us(samples["empty"]), _stats_us(samples["ten"])
    per_step = (t["median"] - e["median"]) / 10
    probe_fields = _probe_fields(samples)
    return {
        "figures": {
            "empty_workflow_us": {"value": e["median"], "unit": "us", "n": n, **_rest(e), **probe_fields},
            "step_overhead_us": {
                "value": per_step,
                "unit": "us",
                "n": n,
                "ten_step_median_us": t["median"],
                "ten_step_p90_us": t["p90"],
                "empty_median_us": e["median"],
                **probe_fields,
            },
        }
    }


def scenario_start_get_result(backend: str, db_url: str, n: int, warmup: int) -> dict[str, Any]:
    """`DBOS.start_workflow(wf).get_result()` of a trivial (empty) workflow, sequentially."""
    _launch(db_url)
    probe = _probe(backend, db_url)

    def one() -> None:
        if DBOS.start_workflow(empty_workflow).get_result() != 0:
            raise RuntimeError("unexpected result")

    try:
        samples = _measure({"start": one}, n, warmup, probe)
    finally:
        DBOS.destroy()
        if probe is not None:
            probe.close()
    st = _stats_us(samples["start"])
    ms = {k: (v / 1000 if k != "n" else v) for k, v in st.items()}
    fig = {"value": ms["median"], "unit": "ms", "n": n, **_rest(ms), **_probe_fields(samples)}
    return {"figures": {"start_get_result_ms": fig}}


def scenario_rss(backend: str, db_url: str, n: int, warmup: int) -> dict[str, Any]:
    """Peak resident memory after `n` sequential 10-step workflows (VmHWM of this process)."""
    _launch(db_url)
    try:
        after_launch = _memory_kb()
        t0 = time.perf_counter()
        for _ in range(n):
            ten_step_workflow()
        elapsed = time.perf_counter() - t0
        mem = _memory_kb()
    finally:
        DBOS.destroy()
    return {
        "figures": {
            "rss_mb": {
                "value": mem["VmHWM"] / 1024,
                "unit": "MB",
                "n": n,
                "rss_after_launch_mb": after_launch.get("VmRSS", 0) / 1024,
                "rss_end_mb": mem.get("VmRSS", 0) / 1024,
                "elapsed_s": elapsed,
            }
        }
    }


def _ids(n: int) -> list[str]:
    return [f"bench-recovery-{i:05d}" for i in range(n)]


def scenario_recovery_child(backend: str, db_url: str, n: int, warmup: int) -> dict[str, Any]:
    """Start `n` workflows that block in their second step, report READY, then wait to be SIGKILLed."""
    _launch(db_url)
    BLOCKING_ENTERED.arm(n)
    t0 = time.perf_counter()
    for i, wid in enumerate(_ids(n)):
        with SetWorkflowID(wid):
            DBOS.start_workflow(recovery_workflow, i)
    started = time.perf_counter() - t0
    ok = BLOCKING_ENTERED.reached.wait(timeout=max(60.0, n * 0.2))
    ready = {
        "blocked": BLOCKING_ENTERED.count,
        "ok": ok,
        "start_s": started,
        "ready_s": time.perf_counter() - t0,
    }
    print(READY_MARKER + json.dumps(ready), flush=True)
    time.sleep(3600)
    return {}


def scenario_recovery_restart(backend: str, db_url: str, n: int, warmup: int) -> dict[str, Any]:
    """Launch on the database the killed process left, and time until all `n` workflows are SUCCESS."""
    DBOS(config={"name": APP_NAME, "system_database_url": db_url})
    BODIES_DONE.arm(n)
    t0 = time.perf_counter()
    DBOS.launch()
    launch_s = time.perf_counter() - t0
    deadline = t0 + max(120.0, n * 0.2)
    try:
        BODIES_DONE.reached.wait(timeout=max(0.0, deadline - time.perf_counter()))
        bodies_s = time.perf_counter() - t0
        pending = _ids(n)
        sweeps = 0
        bad: dict[str, str] = {}
        while pending and time.perf_counter() < deadline:
            sweeps += 1
            still: list[str] = []
            for wid in pending:
                st = DBOS.get_workflow_status(wid)
                status = st.status if st is not None else "MISSING"
                if status == "SUCCESS":
                    continue
                if status in ("ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED", "RETRIES_EXCEEDED"):
                    bad[wid] = status
                    continue
                still.append(wid)
            pending = still
            if pending:
                time.sleep(0.005)
        total_s = time.perf_counter() - t0
    finally:
        DBOS.destroy()
    fig: dict[str, Any] = {
        "value": total_s,
        "unit": "s",
        "n": n,
        "launch_s": launch_s,
        "bodies_done_s": bodies_s,
        "confirm_s": total_s - bodies_s,
        "status_sweeps": sweeps,
        "bodies_run": BODIES_DONE.count,
    }
    if pending or bad:
        fig["error"] = (
            f"{len(pending)} workflow(s) not SUCCESS after {total_s:.1f}s; {len(bad)} failed: {bad}"[:500]
        )
    return {"figures": {"recovery_1000_s": fig}}


def scenario_recovery(backend: str, db_url: str, n: int, warmup: int) -> dict[str, Any]:
    """Orchestrate: child starts `n` blocking workflows, is SIGKILLed, then a new process recovers them."""
    me = os.path.abspath(__file__)
    env = dict(os.environ, **{BLOCK_ENV: "3600"})
    child = subprocess.Popen(
        [sys.executable, me, "recovery_child", backend, db_url, "--n", str(n)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    stderr_tail: list[str] = []
    threading.Thread(target=_drain, args=(child.stderr, stderr_tail), daemon=True).start()
    ready: dict[str, Any] | None = None
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if line.startswith(READY_MARKER):
                ready = json.loads(line[len(READY_MARKER) :])
                break
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
        child.wait()
    if ready is None or not ready.get("ok"):
        raise RuntimeError(
            f"recovery child never got all {n} workflows blocked: {ready}; {''.join(stderr_tail)[-800:]}"
        )
    env = {k: v for k, v in os.environ.items() if k != BLOCK_ENV}
    proc = subprocess.run(
        [sys.executable, me, "recovery_restart", backend, db_url, "--n", str(n)],
        capture_output=True,
        text=True,
        env=env,
        timeout=max(300.0, n * 0.5),
    )
    result = _parse_result(proc.stdout)
    if result is None:
        raise RuntimeError(f"recovery restart failed (rc={proc.returncode}): {proc.stderr[-800:]}")
    fig = result["figures"]["recovery_1000_s"]
    fig["child_start_s"] = ready["start_s"]
    fig["child_ready_s"] = ready["ready_s"]
    fig["child_rc"] = child.returncode
    return result


# --- queues -------------------------------------------------------------------------------------------------
# The reference (PyPI dbos 3.x) rejects `Queue(...)`: its queues are database-backed, declared with
# `DBOS.register_queue(name, ...)` after `DBOS.launch()`. dbosx is measured with in-memory queues,
# `Queue(name, ...)` (declared before launch, the usual place, except where a scenario needs otherwise);
# `--declare register` makes it use its own `DBOS.register_queue` instead. `_queue_app` hides the difference;
# everything else (`q.enqueue`, `DBOS.enqueue_workflow`, `DBOS.listen_queues([])`, `handle.workflow_id`) is
# shared.
FAILED = ("ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED", "RETRIES_EXCEEDED")
STATUS_POLL_S = 0.002
DECLARE = {"how": "auto"}  # set from --declare


def _registers() -> bool:
    """True when queues are declared with DBOS.register_queue (after launch), False for Queue(...)."""
    if DECLARE["how"] == "auto":
        return _impl_version()["dist"] == "dbos"  # the reference
    return DECLARE["how"] == "register"


def _declare_queue(name: str, kw: dict[str, Any]) -> Any:
    if _registers():
        return DBOS.register_queue(name, **kw)
    from dbos import Queue

    return Queue(name, **kw)


def _queue_kw(poll: float | None, worker_concurrency: int | None) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    if worker_concurrency is not None:
        kw["worker_concurrency"] = worker_concurrency
    if poll is not None:
        kw["polling_interval_sec"] = poll
    return kw


def _queue_app(db_url: str, name: str | None, kw: dict[str, Any], dispatch: bool = True) -> Any:
    """DBOS(...), optionally `listen_queues([])` (this process dispatches no queue), launch, declare `name`."""
    DBOS(config={"name": APP_NAME, "system_database_url": db_url})
    if not dispatch:
        DBOS.listen_queues([])
    if name is None:
        DBOS.launch()
        return None
    if _registers():
        DBOS.launch()
        return _declare_queue(name, kw)
    q = _declare_queue(name, kw)
    DBOS.launch()
    return q


def _status(wid: str) -> str:
    st = DBOS.get_workflow_status(wid)
    return st.status if st is not None else "MISSING"


def _wait_success(wid: str, timeout_s: float) -> None:
    deadline = time.perf_counter() + timeout_s
    while True:
        status = _status(wid)
        if status == "SUCCESS":
            return
        if status in FAILED:
            raise RuntimeError(f"workflow {wid} ended {status}")
        if time.perf_counter() > deadline:
            raise RuntimeError(f"workflow {wid} still {status} after {timeout_s:.0f}s")
        time.sleep(STATUS_POLL_S)


def _stats_ms(samples_s: list[float]) -> dict[str, Any]:
    ms = sorted(s * 1e3 for s in samples_s)
    n = len(ms)
    return {
        "median": statistics.median(ms),
        "p10": ms[n // 10],
        "p90": ms[(n * 9) // 10],
        "p99": ms[max(0, math.ceil(0.99 * n) - 1)],
        "min": ms[0],
        "max": ms[-1],
        "mean": statistics.fmean(ms),
        "n": n,
    }


def _latency_figure(
    lat: list[float], from_call: list[float], opts: argparse.Namespace, budget_hit: bool, **extra: Any
) -> dict[str, Any]:
    st = _stats_ms(lat)
    call = _stats_ms(from_call)
    return {
        "value": st["median"],
        "unit": "ms",
        "n": st["n"],
        **_rest(st),
        "from_enqueue_call_median_ms": call["median"],
        "from_enqueue_call_p99_ms": call["p99"],
        "polling_interval_sec": opts.poll,
        "gap_max_ms": opts.gap_ms,
        "budget_s": opts.budget_s,
        "budget_hit": budget_hit,
        **extra,
    }


def _gap(opts: argparse.Namespace) -> None:
    """A random pause before each enqueue, so that arrivals do not lock onto the phase of a poll timer."""
    if opts.gap_ms > 0:
        time.sleep(random.uniform(0, opts.gap_ms / 1000))


def scenario_enqueue_to_start(
    backend: str, db_url: str, n: int, warmup: int, opts: argparse.Namespace
) -> dict[str, Any]:
    """`q.enqueue(wf)` returning -> the body's first line (perf_counter, same process), idle queue, one at a time."""
    q = _queue_app(db_url, "lat", _queue_kw(opts.poll, 50))
    lat: list[float] = []
    from_call: list[float] = []
    budget_hit = False
    try:
        t_start = time.perf_counter()
        for i in range(warmup + n):
            if i >= warmup and len(lat) >= 5 and time.perf_counter() - t_start > opts.budget_s:
                budget_hit = True
                break
            _gap(opts)
            t0 = time.perf_counter()
            h = q.enqueue(stamp_workflow, i)
            t1 = time.perf_counter()
            token, t_body = STARTED.get(timeout=max(30.0, opts.budget_s))
            if token != i:
                raise RuntimeError(f"body {token} started, expected {i}")
            _wait_success(h.workflow_id, 30.0)
            if i >= warmup:
                lat.append(t_body - t1)
                from_call.append(t_body - t0)
            else:
                t_start = time.perf_counter()
    finally:
        DBOS.destroy()
    fig = _latency_figure(lat, from_call, opts, budget_hit)
    return {"figures": {"enqueue_to_start_ms": fig}}


def scenario_queue_worker(
    backend: str, db_url: str, n: int, warmup: int, opts: argparse.Namespace
) -> dict[str, Any]:
    """Dispatch queue "xq" until stdin closes (the cross-process scenario starts this)."""
    _queue_app(db_url, "xq", _queue_kw(opts.poll, 50))
    print(READY_MARKER + json.dumps({"pid": os.getpid()}), flush=True)
    try:
        sys.stdin.read()
    finally:
        DBOS.destroy()
    return {}


def scenario_enqueue_cross(
    backend: str, db_url: str, n: int, warmup: int, opts: argparse.Namespace
) -> dict[str, Any]:
    """Enqueue here (dispatching nothing), run in a worker process; enqueue returning -> body start, wall clock."""
    me = os.path.abspath(__file__)
    cmd = [sys.executable, me, "queue_worker", backend, db_url, "--declare", opts.declare]
    if opts.poll is not None:
        cmd += ["--poll", str(opts.poll)]
    worker = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    tail: list[str] = []
    threading.Thread(target=_drain, args=(worker.stderr, tail), daemon=True).start()
    ready: dict[str, Any] | None = None
    launched = False
    try:
        assert worker.stdout is not None
        for line in worker.stdout:
            if line.startswith(READY_MARKER):
                ready = json.loads(line[len(READY_MARKER) :])
                break
        if ready is None:
            raise RuntimeError(f"queue worker exited before READY: {''.join(tail)[-800:]}")
        q = _queue_app(db_url, "xq", _queue_kw(opts.poll, 50), dispatch=False)
        launched = True
        lat: list[float] = []
        from_call: list[float] = []
        budget_hit = False
        t_start = time.perf_counter()
        for i in range(warmup + n):
            if i >= warmup and len(lat) >= 5 and time.perf_counter() - t_start > opts.budget_s:
                budget_hit = True
                break
            _gap(opts)
            t0 = time.time()
            h = q.enqueue(stamp_workflow, i)
            t1 = time.time()
            _wait_success(h.workflow_id, max(30.0, opts.budget_s))
            t_body, pid = h.get_result()
            if int(pid) != ready["pid"]:
                raise RuntimeError(f"workflow ran in process {int(pid)}, not in the worker {ready['pid']}")
            if i >= warmup:
                lat.append(t_body - t1)
                from_call.append(t_body - t0)
            else:
                t_start = time.perf_counter()
    finally:
        if launched:
            DBOS.destroy()
        try:
            if worker.stdin is not None:
                worker.stdin.close()
            worker.wait(timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            worker.kill()
            worker.wait()
    fig = _latency_figure(lat, from_call, opts, budget_hit, worker_rc=worker.returncode, clock="time.time")
    return {"figures": {"enqueue_to_start_cross_process_ms": fig}}


def scenario_queue_throughput(
    backend: str, db_url: str, n: int, warmup: int, opts: argparse.Namespace
) -> dict[str, Any]:
    """`n` empty workflows enqueued onto "bench" before anything dispatches it, then the queue is declared
    (worker_concurrency=50): the rate from the first SUCCESS to the last (see --confirm for how it is seen)."""
    _queue_app(db_url, None, {})
    deadline_s = max(120.0, n * 0.1)
    try:
        t0 = time.perf_counter()
        ids = [DBOS.enqueue_workflow("bench", empty_workflow).workflow_id for _ in range(n)]
        enqueue_s = time.perf_counter() - t0
        first = _status(ids[0])
        t0 = time.perf_counter()
        _declare_queue("bench", _queue_kw(opts.poll, 50))
        declare_s = time.perf_counter() - t0
        reads = 0
        first_success_s: float | None = None
        late = 0
        error = None

        def until_success(wid: str, poll_s: float) -> bool:
            nonlocal reads, error
            while error is None:
                reads += 1
                status = _status(wid)
                if status == "SUCCESS":
                    return True
                if status in FAILED:
                    error = f"workflow {wid} ended {status}"
                elif time.perf_counter() - t0 > deadline_s:
                    error = f"workflow {wid} still {status} after {deadline_s:.0f}s"
                else:
                    time.sleep(poll_s)
            return False

        if opts.confirm == "each":
            # Every handle in enqueue order, each read until SUCCESS (statuses never go back): when the last
            # one is seen SUCCESS, all have been. One status read per workflow during the drain.
            for k, wid in enumerate(ids):
                if not until_success(wid, STATUS_POLL_S):
                    break
                if k == 0:
                    first_success_s = time.perf_counter() - t0
            t_last = time.perf_counter()
        else:
            # Cheaper on the database while the queue drains: watch the first handle, then the last one
            # (every 5 ms); then, untimed, read all of them newest first. Any not yet SUCCESS then is waited for
            # and moves the end. The newest (the ones that may still have been running with the last) are read
            # within milliseconds of the end, so the figure is at most that much optimistic.
            if until_success(ids[0], 0.005):
                first_success_s = time.perf_counter() - t0
            until_success(ids[-1], 0.005)
            t_last = time.perf_counter()
            for wid in reversed(ids):
                if error is not None:
                    break
                reads += 1
                status = _status(wid)
                if status != "SUCCESS":
                    late += 1
                    if until_success(wid, STATUS_POLL_S):
                        t_last = max(t_last, time.perf_counter())
        total_s = t_last - t0
    finally:
        DBOS.destroy()
    # The headline is the steady rate, from the first SUCCESS seen to the last: it leaves out how long an
    # implementation takes to notice a newly declared queue (about a second for the reference, even with
    # 50 ms polling), which is a one-off cost. `wf_per_s_from_declare` includes it.
    steady_s = total_s - (first_success_s or 0.0)
    ok = error is None and n > 1 and steady_s > 0
    fig: dict[str, Any] = {
        "value": ((n - 1) / steady_s) if ok else None,
        "unit": "wf/s",
        "n": n,
        "wf_per_s_from_declare": (n / total_s) if error is None else None,
        "steady_s": steady_s,
        "drain_s": total_s,
        "enqueue_s": enqueue_s,
        "declare_s": declare_s,
        "first_success_s": first_success_s,
        "status_before_declare": first,
        "status_reads": reads,
        "confirm": opts.confirm,
        "not_success_in_sweep": late,
        "worker_concurrency": 50,
        "polling_interval_sec": opts.poll,
    }
    if error:
        fig["error"] = error
    return {"figures": {"queue_throughput_wf_per_s": fig}}


def scenario_enqueue_rate(
    backend: str, db_url: str, n: int, warmup: int, opts: argparse.Namespace
) -> dict[str, Any]:
    """`n` sequential `q.enqueue(empty_workflow)` onto "sink", which nobody dispatches (`listen_queues([])`)."""
    q = _queue_app(db_url, "sink", {}, dispatch=False)
    try:
        for _ in range(warmup):
            q.enqueue(empty_workflow)
        samples = []
        t0 = time.perf_counter()
        for _ in range(n):
            t = time.perf_counter()
            q.enqueue(empty_workflow)
            samples.append(time.perf_counter() - t)
        total_s = time.perf_counter() - t0
        left = _status(q.enqueue(empty_workflow).workflow_id)
    finally:
        DBOS.destroy()
    st = _stats_us(samples)
    us = sorted(x * 1e6 for x in samples)
    fig = {
        "value": n / total_s,
        "unit": "enqueues/s",
        "n": n,
        "total_s": total_s,
        "enqueue_median_us": st["median"],
        "enqueue_p90_us": st["p90"],
        "enqueue_p99_us": us[max(0, math.ceil(0.99 * len(us)) - 1)],
        "status_of_a_sink_workflow": left,
    }
    return {"figures": {"enqueue_rate_per_s": fig}}


def _drain(stream: Any, tail: list[str]) -> None:
    for line in stream:
        tail.append(line)
        del tail[:-20]


def _parse_result(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER) :])  # type: ignore[no-any-return]
    return None


SCENARIOS = {
    "commit": scenario_commit,
    "sequential": scenario_sequential,
    "start_get_result": scenario_start_get_result,
    "recovery": scenario_recovery,
    "rss": scenario_rss,
    "recovery_child": scenario_recovery_child,
    "recovery_restart": scenario_recovery_restart,
}
SCENARIOS.update(
    {
        name: functools.partial(fn, _launch)
        for name, fn in {**CONTROL_SCENARIOS, **MESSAGING_SCENARIOS, **COUNT_SCENARIOS}.items()
    }
)
QUEUE_SCENARIOS = {
    "enqueue_to_start": scenario_enqueue_to_start,
    "enqueue_cross": scenario_enqueue_cross,
    "queue_throughput": scenario_queue_throughput,
    "enqueue_rate": scenario_enqueue_rate,
    "queue_worker": scenario_queue_worker,
}


def _impl_version() -> dict[str, str]:
    import importlib.metadata as md

    for dist in ("dbosx", "dbos"):
        try:
            return {"dist": dist, "version": md.version(dist)}
        except md.PackageNotFoundError:
            continue
    return {"dist": "?", "version": "?"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", choices=sorted({**SCENARIOS, **QUEUE_SCENARIOS}))
    p.add_argument("backend", choices=["sqlite", "postgres"])
    p.add_argument("db_url")
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--poll", type=float, help="queues: polling_interval_sec (default: the implementation's)")
    p.add_argument(
        "--gap-ms", type=float, default=20.0, help="latency: random pause before each enqueue, max"
    )
    p.add_argument("--budget-s", type=float, default=60.0, help="latency: stop sampling after this long")
    p.add_argument(
        "--confirm",
        choices=["last", "each"],
        default="last",
        help="throughput: watch the first and last handle, then sweep (last), or read each handle in turn",
    )
    p.add_argument(
        "--declare",
        choices=["auto", "queue", "register"],
        default="auto",
        help="queues: Queue(...) or DBOS.register_queue(...); auto: register_queue for the reference only",
    )
    p.add_argument(
        "--idle-window-s",
        type=float,
        default=10.0,
        help="store_counts: idle window for idle_statements_per_s",
    )
    a = p.parse_args(argv)
    DECLARE["how"] = a.declare
    COUNT_OPTS["idle_window_s"] = a.idle_window_s
    if a.scenario in QUEUE_SCENARIOS:
        result = QUEUE_SCENARIOS[a.scenario](a.backend, a.db_url, a.n, a.warmup, a)
        for fig in result.get("figures", {}).values():
            fig["declared_with"] = "DBOS.register_queue" if _registers() else "Queue"
    else:
        result = SCENARIOS[a.scenario](a.backend, a.db_url, a.n, a.warmup)
    result["impl"] = _impl_version()
    result["python"] = sys.version.split()[0]
    print(RESULT_MARKER + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
