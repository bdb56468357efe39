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
