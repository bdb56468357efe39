"""Benchmark scenarios. Each invocation runs ONE scenario in a fresh process and prints one JSON result line.

    <python> benchmarks/scenarios.py <scenario> <backend> <db_url> [--n N] [--warmup W]

The same file runs unchanged under dbosx and under the reference implementation (PyPI ``dbos``), so it uses
only the public API both share: ``DBOS(config={"name", "system_database_url"})``, ``DBOS.launch()``,
``@DBOS.workflow()``, ``@DBOS.step()``, ``DBOS.start_workflow``, ``handle.get_result()``,
``DBOS.get_workflow_status``, ``SetWorkflowID``, ``DBOS.destroy()``.

The result is printed on stdout as ``BENCH_RESULT {json}``, so library log lines can never be mistaken for it.
``benchmarks/run.py`` starts these processes; running one by hand is handy for profiling, e.g.
``py-spy record -o out.svg -- .venv/bin/python benchmarks/scenarios.py sequential sqlite sqlite:////tmp/b.sqlite``.

Every workflow is defined at module level, unconditionally and in the same order in every process: an
implementation may derive its application version from the registered code, and the recovery scenario needs
the killed process and the restarted one to agree on it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from dbos import DBOS, SetWorkflowID

RESULT_MARKER = "BENCH_RESULT "
READY_MARKER = "BENCH_READY "
APP_NAME = "dbosbench"
BLOCK_ENV = "DBOS_BENCH_BLOCK_S"


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


# --- scenarios ----------------------------------------------------------------------------------------------
def scenario_commit(backend: str, db_url: str, n: int, warmup: int) -> dict[str, Any]:
    """The database limit: one single-row INSERT + COMMIT, measured without any library."""
    samples: list[float] = []
    if backend == "sqlite":
        import sqlite3

        with tempfile.TemporaryDirectory(prefix="dbos-bench-commit-") as tmp:
            con = sqlite3.connect(os.path.join(tmp, "commit.sqlite"), isolation_level=None)
            mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            con.execute("PRAGMA synchronous=FULL")
            con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")

            def one() -> None:
                con.execute("BEGIN IMMEDIATE")
                con.execute("INSERT INTO t (v) VALUES (?)", ("x",))
                con.execute("COMMIT")

            for _ in range(warmup):
                one()
            samples = [_timed(one) for _ in range(n)]
            con.close()
        extra: dict[str, Any] = {"journal_mode": mode, "synchronous": "FULL", "sqlite_version": sqlite3.sqlite_version}
    else:
        import psycopg

        with psycopg.connect(db_url, autocommit=True) as con:
            con.execute("CREATE TABLE bench_commit (id BIGSERIAL PRIMARY KEY, v TEXT NOT NULL)")

            def one() -> None:
                con.execute("INSERT INTO bench_commit (v) VALUES (%s)", ("x",))

            for _ in range(warmup):
                one()
            samples = [_timed(one) for _ in range(n)]
            row = con.execute("SHOW server_version").fetchone()
            sync = con.execute("SHOW synchronous_commit").fetchone()
        extra = {"server_version": row[0] if row else None, "synchronous_commit": sync[0] if sync else None}
    st = _stats_us(samples)
    return {"figures": {"commit_us": {"value": st["median"], "unit": "us", "n": n, **_rest(st), **extra}}}


def _rest(st: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in st.items() if k not in ("median", "n")}


def scenario_sequential(backend: str, db_url: str, n: int, warmup: int) -> dict[str, Any]:
    """Direct sequential calls of an empty and of a 10-step workflow, interleaved so drift affects both alike."""
    _launch(db_url)
    try:
        for _ in range(warmup):
            empty_workflow()
            ten_step_workflow()
        empty: list[float] = []
        ten: list[float] = []
        for _ in range(n):
            empty.append(_timed(empty_workflow))
            ten.append(_timed(ten_step_workflow))
    finally:
        DBOS.destroy()
    e, t = _stats_us(empty), _stats_us(ten)
    per_step = (t["median"] - e["median"]) / 10
    return {
        "figures": {
            "empty_workflow_us": {"value": e["median"], "unit": "us", "n": n, **_rest(e)},
            "step_overhead_us": {
                "value": per_step,
                "unit": "us",
                "n": n,
                "ten_step_median_us": t["median"],
                "ten_step_p90_us": t["p90"],
                "empty_median_us": e["median"],
            },
        }
    }


def scenario_start_get_result(backend: str, db_url: str, n: int, warmup: int) -> dict[str, Any]:
    """`DBOS.start_workflow(wf).get_result()` of a trivial (empty) workflow, sequentially."""
    _launch(db_url)

    def one() -> None:
        if DBOS.start_workflow(empty_workflow).get_result() != 0:
            raise RuntimeError("unexpected result")

    try:
        for _ in range(warmup):
            one()
        samples = [_timed(one) for _ in range(n)]
    finally:
        DBOS.destroy()
    st = _stats_us(samples)
    ms = {k: (v / 1000 if k != "n" else v) for k, v in st.items()}
    return {"figures": {"start_get_result_ms": {"value": ms["median"], "unit": "ms", "n": n, **_rest(ms)}}}


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
    ready = {"blocked": BLOCKING_ENTERED.count, "ok": ok, "start_s": started, "ready_s": time.perf_counter() - t0}
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
        "status_sweeps": sweeps,
        "bodies_run": BODIES_DONE.count,
    }
    if pending or bad:
        fig["error"] = f"{len(pending)} workflow(s) not SUCCESS after {total_s:.1f}s; {len(bad)} failed: {bad}"[:500]
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
        raise RuntimeError(f"recovery child never got all {n} workflows blocked: {ready}; {''.join(stderr_tail)[-800:]}")
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
    p.add_argument("scenario", choices=sorted(SCENARIOS))
    p.add_argument("backend", choices=["sqlite", "postgres"])
    p.add_argument("db_url")
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--warmup", type=int, default=30)
    a = p.parse_args(argv)
    result = SCENARIOS[a.scenario](a.backend, a.db_url, a.n, a.warmup)
    result["impl"] = _impl_version()
    result["python"] = sys.version.split()[0]
    print(RESULT_MARKER + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
