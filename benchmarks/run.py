"""Run the benchmark scenarios and print one JSON line per figure, backend and implementation.

    .venv/bin/python benchmarks/run.py                 # dbosx on SQLite and Postgres (`make bench`)
    .venv/bin/python benchmarks/run.py --compare       # also the reference, .bench/ref-venv (`make bench-compare`)
    .venv/bin/python benchmarks/run.py --backends sqlite --figures empty_workflow_us,step_overhead_us --quick

Each scenario runs in a fresh subprocess (`benchmarks/scenarios.py`), on a fresh database: a new file in a new
temporary directory on SQLite, a new database on Postgres (created and dropped here, as user postgres on
127.0.0.1:5432). With --compare the same scenario runs under the reference right after dbosx, so both see the
same machine conditions, and a ratio line follows (oriented so that above 1 means dbosx is better). A failing run prints its line with an
"error" field and the suite goes on. See benchmarks/README.md for the figures.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SCENARIOS_PY = os.path.join(HERE, "scenarios.py")
DBOSX_PY = sys.executable
REF_PY = os.path.join(ROOT, ".bench", "ref-venv", "bin", "python")
PG_SERVER = os.environ.get("DBOS_BENCH_PG", "postgresql://postgres@127.0.0.1:5432").rstrip("/")
PG_ADMIN_URL = f"{PG_SERVER}/postgres"
PG_URL = PG_SERVER + "/{name}"
RESULT_MARKER = "BENCH_RESULT "

# scenario -> figures it produces
SCENARIO_FIGURES = {
    "commit": ["commit_us"],
    "sequential": ["empty_workflow_us", "step_overhead_us"],
    "start_get_result": ["start_get_result_ms"],
    "recovery": ["recovery_1000_s"],
    "rss": ["rss_mb"],
    "enqueue_to_start": ["enqueue_to_start_ms"],
    "enqueue_cross": ["enqueue_to_start_cross_process_ms"],
    "queue_throughput": ["queue_throughput_wf_per_s"],
    "enqueue_rate": ["enqueue_rate_per_s"],
    "cancel_to_wake": ["cancel_to_wake_ms"],
    "deadline_to_wake": ["deadline_to_wake_ms"],
    "list_100_of_100k": ["list_100_of_100k_ms"],
    "send_recv_round_trip": ["send_recv_round_trip_ms"],
    "event_round_trip": ["event_round_trip_ms"],
    "send_recv_cross_process": ["send_recv_cross_process_ms"],
    "store_counts": [
        "writes_per_empty_workflow",
        "commits_per_step",
        "round_trips_per_step",
        "reads_per_recovered_workflow",
        "batch_size_p50",
        "batch_size_p99",
        "commits_per_step_concurrent",
        "idle_statements_per_s",
    ],
}
CONTROL_SCENARIOS = ("cancel_to_wake", "deadline_to_wake", "list_100_of_100k")
# The storage counters of spec 07 §10.2 (`stats()`), which are not public API.
COUNT_SCENARIOS = ("store_counts",)
# dbosx-only scenarios: the reference has nothing comparable (it does not wake a sleeping workflow on cancel or
# timeout, and has no store counters), so --compare does not run it for these.
DBOSX_ONLY = CONTROL_SCENARIOS + COUNT_SCENARIOS
QUEUE_SCENARIOS = ("enqueue_to_start", "enqueue_cross", "queue_throughput", "enqueue_rate")
# Queue scenarios whose result depends on the polling interval: the reference runs once per --ref-polls entry.
POLL_SCENARIOS = ("enqueue_to_start", "enqueue_cross", "queue_throughput")
REF_DEFAULT_POLL_S = 1.0  # the reference's default polling_interval_sec
GROUPS = {
    "core": ["commit", "sequential", "start_get_result", "recovery", "rss"],
    "queues": list(QUEUE_SCENARIOS),
    "control": list(CONTROL_SCENARIOS),
    "messaging": ["send_recv_round_trip", "event_round_trip", "send_recv_cross_process"],
    "counts": list(COUNT_SCENARIOS),
}
FIGURE_SCENARIO = {f: s for s, fs in SCENARIO_FIGURES.items() for f in fs}
UNITS = {
    "commit_us": "us",
    "empty_workflow_us": "us",
    "step_overhead_us": "us",
    "start_get_result_ms": "ms",
    "recovery_1000_s": "s",
    "rss_mb": "MB",
    "enqueue_to_start_ms": "ms",
    "enqueue_to_start_cross_process_ms": "ms",
    "queue_throughput_wf_per_s": "wf/s",
    "enqueue_rate_per_s": "enqueues/s",
    "cancel_to_wake_ms": "ms",
    "deadline_to_wake_ms": "ms",
    "list_100_of_100k_ms": "ms",
    "send_recv_round_trip_ms": "ms",
    "event_round_trip_ms": "ms",
    "send_recv_cross_process_ms": "ms",
    "writes_per_empty_workflow": "writes/workflow",
    "commits_per_step": "commits/step",
    "round_trips_per_step": "round_trips/step",
    "reads_per_recovered_workflow": "reads/workflow",
    "batch_size_p50": "ops/batch",
    "batch_size_p99": "ops/batch",
    "commits_per_step_concurrent": "commits/step",
    "idle_statements_per_s": "statements/s",
}
HIGHER_IS_BETTER = ("queue_throughput_wf_per_s", "enqueue_rate_per_s")


def target_of(figure: str, backend: str, commit_us: float | None, n: int) -> tuple[str, float | None] | None:
    """The DESIGN.md budget for a figure, as (description, limit in the figure's unit)."""
    if figure == "empty_workflow_us":
        return "<= 2.5 x commit_us", (2.5 * commit_us if commit_us else None)
    if figure == "step_overhead_us":
        return "<= 1.5 x commit_us", (1.5 * commit_us if commit_us else None)
    if figure == "start_get_result_ms":
        limit = 1.0 if backend == "sqlite" else 1.5
        return f"< {limit} ms", limit
    if figure == "recovery_1000_s":
        return f"<= 1 s per 1,000 workflows (n={n})", n / 1000
    if figure == "enqueue_to_start_ms":
        return "median < 5 ms", 5.0
    if figure == "enqueue_to_start_cross_process_ms" and backend == "postgres":
        return "median < 25 ms", 25.0
    if figure in ("cancel_to_wake_ms", "deadline_to_wake_ms"):
        return "median < 50 ms", 50.0
    if figure == "list_100_of_100k_ms":
        return "< 20 ms", 20.0
    if figure in ("send_recv_round_trip_ms", "event_round_trip_ms"):
        return "median < 5 ms", 5.0
    if figure == "send_recv_cross_process_ms" and backend == "postgres":
        return "median < 10 ms", 10.0
    # Spec 07 §10.1 and §10.2 rule 2 (exact counts), §8 (group commit under load), §10.1 rule 2 (idle load).
    if figure == "writes_per_empty_workflow":
        return "== 2 (k + 2 writes for k = 0 steps)", 2.0
    if figure == "commits_per_step":
        return "== 1", 1.0
    if figure == "round_trips_per_step" and backend == "postgres":
        return "== 1", 1.0
    if figure == "reads_per_recovered_workflow":
        return "== 1 load_checkpoints", 1.0
    if figure == "commits_per_step_concurrent":
        if backend == "sqlite":
            return "< 1/3 (fewer than 2,000/3 write transactions for 2,000 steps)", 1 / 3
        return "< 1/2 (fewer than 2,000/2 write transactions for 2,000 steps, pool of 20)", 1 / 2
    if figure == "idle_statements_per_s" and backend == "postgres":
        return "<= 5 (spec: averaged over 60 s)", 5.0
    return None


# How a value is judged against its target's limit; every other figure meets it with value <= limit.
TARGET_CMP = {
    "writes_per_empty_workflow": "==",
    "commits_per_step": "==",
    "round_trips_per_step": "==",
    "reads_per_recovered_workflow": "==",
    "commits_per_step_concurrent": "<",
}


def meets(figure: str, value: float, limit: float) -> bool:
    cmp = TARGET_CMP.get(figure, "<=")
    if cmp == "==":
        return abs(value - limit) < 1e-9
    if cmp == "<":
        return value < limit
    return value <= limit


def ratio_target_of(figure: str, variant: str | None) -> tuple[str, float] | None:
    """Targets stated against the reference, as (description, minimum dbosx/reference)."""
    if figure == "queue_throughput_wf_per_s":
        return (">= 10 x reference", 10.0) if variant == "poll_default" else (">= 3 x reference", 3.0)
    if figure == "enqueue_rate_per_s":
        return ">= 3 x reference", 3.0
    return None


def variant_name(poll: float | None) -> str:
    return "poll_default" if poll is None else f"poll_{poll * 1000:g}ms"


class Runner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.seq = itertools.count()
        self.run_id = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        self.commit_us: dict[str, float] = {}
        self.meta = {"run_id": self.run_id, "host_cpus": os.cpu_count(), "python": platform.python_version()}
        self.git = _git_rev()

    # --- sizes ----------------------------------------------------------------------------------------------
    def sizes(self, scenario: str) -> tuple[int, int]:
        a = self.args
        return {
            "commit": (a.n_commit, a.warmup),
            "sequential": (a.n_seq, a.warmup),
            "start_get_result": (a.n_start, a.warmup),
            "recovery": (a.n_recovery, 0),
            "rss": (a.n_rss, 0),
            "enqueue_to_start": (a.n_enqueue_lat, 10),
            "enqueue_cross": (a.n_cross, 5),
            "queue_throughput": (a.n_throughput, 0),
            "enqueue_rate": (a.n_enqueue_rate, 30),
            "cancel_to_wake": (a.n_control, 3),
            "deadline_to_wake": (a.n_control, 3),
            "list_100_of_100k": (a.n_control, 2),
            "send_recv_round_trip": (a.n_messages, 5),
            "event_round_trip": (a.n_messages, 5),
            "send_recv_cross_process": (a.n_messages, 5),
            "store_counts": (a.n_counts, 5),
        }[scenario]

    # --- databases ------------------------------------------------------------------------------------------
    def fresh_db(self, backend: str, impl: str, scenario: str) -> tuple[str, Any]:
        """Return (url, cleanup) for a database nobody has used."""
        if backend == "sqlite":
            tmp = tempfile.mkdtemp(prefix=f"dbos-bench-{impl}-{scenario}-")
            return f"sqlite:///{os.path.join(tmp, 'bench.sqlite')}", lambda: shutil.rmtree(
                tmp, ignore_errors=True
            )
        import psycopg

        name = f"dbos_bench_{impl}_{scenario}_{os.getpid()}_{next(self.seq)}"
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as con:
            con.execute(f'DROP DATABASE IF EXISTS "{name}"')
            con.execute(f'CREATE DATABASE "{name}"')

        def drop() -> None:
            try:
                with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as con:
                    con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except Exception as e:  # cleanup must not end the suite
                print(f"warning: could not drop database {name}: {e}", file=sys.stderr)

        return PG_URL.format(name=name), drop

    # --- running --------------------------------------------------------------------------------------------
    def run_scenario(
        self, python: str, scenario: str, backend: str, poll: float | None = None
    ) -> dict[str, Any]:
        impl = "reference" if python == REF_PY else "dbosx"
        n, warmup = self.sizes(scenario)
        url, cleanup = self.fresh_db(backend, impl, scenario)
        cmd = [python, SCENARIOS_PY, scenario, backend, url, "--n", str(n), "--warmup", str(warmup)]
        if scenario in QUEUE_SCENARIOS:
            # The random pause before each latency sample keeps arrivals from locking onto a poll timer's phase:
            # a polling dispatcher is sampled over its whole interval (so its median is about half of it);
            # dbosx wakes on an event, and 20 ms also spans its 5 ms SQLite change-detector cadence.
            gap_ms = self.args.gap_ms if impl == "dbosx" else 1000 * (poll or REF_DEFAULT_POLL_S)
            cmd += ["--gap-ms", f"{gap_ms:g}", "--budget-s", f"{self.args.queue_budget_s:g}"]
            if poll is not None:
                cmd += ["--poll", f"{poll:g}"]
            if scenario == "queue_throughput":
                cmd += ["--confirm", self.args.throughput_confirm]
        if scenario == "store_counts":
            cmd += ["--idle-window-s", f"{self.args.idle_window_s:g}"]
        t0 = time.perf_counter()
        try:
            out, err, rc = _run(cmd, self.args.timeout, cwd=tempfile.gettempdir())
        finally:
            cleanup()
        wall = time.perf_counter() - t0
        if self.args.verbose:
            what = f" {variant_name(poll)}" if scenario in POLL_SCENARIOS and impl == "reference" else ""
            print(f"# {impl}{what} {backend} {scenario}: rc={rc} in {wall:.1f}s", file=sys.stderr)
        for line in reversed(out.splitlines()):
            if line.startswith(RESULT_MARKER):
                res: dict[str, Any] = json.loads(line[len(RESULT_MARKER) :])
                res["wall_s"] = wall
                return res
        tail = (err or out).strip().splitlines()[-6:]
        raise RuntimeError(f"{scenario} exited with rc={rc} after {wall:.1f}s: " + " | ".join(tail)[-700:])

    def emit(self, line: dict[str, Any]) -> None:
        print(json.dumps(line), flush=True)
        if self.args.out:
            with open(self.args.out, "a") as f:
                f.write(json.dumps(line) + "\n")

    def line(
        self,
        figure: str,
        backend: str,
        impl: str,
        fig: dict[str, Any] | None,
        res: dict[str, Any] | None,
        error: str | None = None,
        variant: str | None = None,
    ) -> dict[str, Any]:
        n = self.sizes(FIGURE_SCENARIO[figure])[0]
        out: dict[str, Any] = {"figure": figure, "backend": backend, "impl": impl}
        if variant is not None:
            out["variant"] = variant
        if fig is not None:
            fig = dict(fig)
            out["value"] = fig.pop("value")
            out["unit"] = fig.pop("unit", UNITS[figure])
            out["n"] = fig.pop("n", n)
            error = error or fig.pop("error", None)
        else:
            out.update(value=None, unit=UNITS[figure], n=n)
        commit = self.commit_us.get(backend)
        value = out["value"]
        if value is not None and commit and figure != "commit_us":
            if out["unit"] == "us":
                out["ratio_to_commit"] = value / commit
            elif out["unit"] == "ms":
                out["ratio_to_commit"] = value * 1000 / commit
            elif figure == "recovery_1000_s":
                out["per_workflow_ratio_to_commit"] = value * 1e6 / out["n"] / commit
        probe = (fig or {}).get("commit_probe_us")
        if value is not None and probe:
            scale = {"us": 1.0, "ms": 1000.0}.get(out["unit"])
            if scale is not None:
                out["ratio_to_probe_commit"] = value * scale / probe
        target = target_of(figure, backend, commit, out["n"])
        if target is not None:
            out["target"] = target[0]
            if value is not None and target[1] is not None:
                out["target_value"] = target[1]
                out["meets_target"] = meets(figure, value, target[1])
        # The same target against the raw commit interleaved with the scenario, which saw the same machine
        # conditions (the commit_us line ran earlier, in its own process, with nothing in between).
        probe_target = target_of(figure, backend, probe, out["n"]) if probe else None
        if value is not None and probe_target is not None and "commit" in probe_target[0]:
            out["meets_target_vs_probe"] = probe_target[1] is not None and value <= probe_target[1]
        if error:
            out["error"] = error
        if fig:
            out["detail"] = fig
        out["impl_version"] = (res or {}).get("impl", {}).get("version")
        if res is not None:
            out["scenario_wall_s"] = round(res["wall_s"], 2)
        out.update(self.meta)
        if impl == "dbosx" and self.git:
            out["git"] = self.git
        return out

    def run_backend(self, backend: str, figures: list[str], impls: list[tuple[str, str]]) -> None:
        if backend == "postgres":
            problem = _pg_problem()
            if problem:
                for figure in figures:
                    names = ["raw"] if figure == "commit_us" else [impl for impl, _ in impls]
                    for impl in names:
                        self.emit(
                            self.line(figure, backend, impl, None, None, f"postgres unavailable: {problem}")
                        )
                return
        scenarios = [s for s in SCENARIO_FIGURES if any(f in figures for f in SCENARIO_FIGURES[s])]
        if "commit" not in scenarios:
            scenarios.insert(0, "commit")  # the ratios need the limit measured in the same run
        for scenario in scenarios:
            if scenario == "commit":
                self.run_commit(backend, figures)
                continue
            runs: list[tuple[str, str, float | None, str | None]] = []
            for impl, python in impls:
                if impl == "reference" and scenario in DBOSX_ONLY:
                    continue
                if impl == "reference" and scenario in POLL_SCENARIOS:
                    runs += [(impl, python, p, variant_name(p)) for p in self.args.ref_polls]
                else:
                    runs.append((impl, python, None, None))
            values: dict[str, dict[tuple[str, str | None], dict[str, Any]]] = {}
            for impl, python, poll, variant in runs:
                try:
                    res = self.run_scenario(python, scenario, backend, poll)
                except Exception as e:  # report and go on
                    for figure in SCENARIO_FIGURES[scenario]:
                        if figure in figures:
                            self.emit(self.line(figure, backend, impl, None, None, str(e), variant))
                            values.setdefault(figure, {})[(impl, variant)] = {"value": None, "error": str(e)}
                    continue
                for figure in SCENARIO_FIGURES[scenario]:
                    if figure in figures:
                        ln = self.line(figure, backend, impl, res["figures"].get(figure), res, None, variant)
                        values.setdefault(figure, {})[(impl, variant)] = ln
                        self.emit(ln)
            for figure, by_run in values.items():
                mine = by_run.get(("dbosx", None))
                for (impl, variant), ref in by_run.items():
                    if impl == "reference" and mine is not None:
                        self.emit(self.ratio_line(figure, backend, mine, ref, variant))

    def run_commit(self, backend: str, figures: list[str]) -> None:
        try:
            res = self.run_scenario(DBOSX_PY, "commit", backend)
        except Exception as e:
            self.emit(self.line("commit_us", backend, "raw", None, None, str(e)))
            return
        fig = res["figures"]["commit_us"]
        self.commit_us[backend] = fig["value"]
        if "commit_us" in figures:
            ln = self.line("commit_us", backend, "raw", fig, res)
            ln["impl_version"] = None
            self.emit(ln)

    def ratio_line(
        self,
        figure: str,
        backend: str,
        mine: dict[str, Any],
        ref: dict[str, Any],
        variant: str | None = None,
    ) -> dict[str, Any]:
        # Always oriented so that above 1 means dbosx is better: reference/dbosx for times and sizes,
        # dbosx/reference for rates.
        higher = figure in HIGHER_IS_BETTER
        out: dict[str, Any] = {
            "figure": figure,
            "backend": backend,
            "impl": "ratio",
            "ratio": "dbosx/reference" if higher else "reference/dbosx",
        }
        if variant is not None:
            out["variant"] = variant
        a, b = mine.get("value"), ref.get("value")
        err = mine.get("error") or ref.get("error")
        if higher:
            out["value"] = (a / b) if (b and a is not None and not err) else None
        else:
            out["value"] = (b / a) if (a and b is not None and not err) else None
        out["unit"] = "x"
        out["dbosx"] = a
        out["reference"] = b
        out["n"] = mine.get("n")
        if ref.get("n") != mine.get("n"):
            out["n_reference"] = ref.get("n")
        if figure == "queue_throughput_wf_per_s":
            a2 = (mine.get("detail") or {}).get("wf_per_s_from_declare")
            b2 = (ref.get("detail") or {}).get("wf_per_s_from_declare")
            out["value_from_declare"] = (a2 / b2) if (a2 and b2) else None
        target = ratio_target_of(figure, variant)
        if target is not None:
            out["target"] = target[0]
            out["target_value"] = target[1]
            if out["value"] is not None:
                out["meets_target"] = out["value"] >= target[1]
        if err:
            out["error"] = f"not comparable: {err}"[:300]
        out.update(self.meta)
        return out


def _run(cmd: list[str], timeout: float, cwd: str) -> tuple[str, str, int]:
    """Run `cmd` in its own session; on timeout kill that process group (only what we started)."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        err = (err or "") + f"\ntimed out after {timeout:.0f}s"
        return out, err, -9
    return out, err, proc.returncode


def _pg_problem() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as con:
            con.execute("SELECT 1")
        return None
    except Exception as e:
        return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _git_rev() -> str | None:
    try:
        rev = subprocess.run(
            ["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "-C", ROOT, "status", "--porcelain", "src"], capture_output=True, text=True
        )
        if rev.returncode != 0:
            return None
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except OSError:
        return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--compare", action="store_true", help="also run the reference from .bench/ref-venv")
    p.add_argument("--backends", default="sqlite,postgres", help="comma-separated: sqlite,postgres")
    p.add_argument("--figures", default=",".join(UNITS), help="comma-separated figure names (default: all)")
    p.add_argument("--n-commit", type=int, default=500, help="INSERT+COMMIT samples (default 500)")
    p.add_argument("--n-seq", type=int, default=300, help="sequential workflow samples of each kind (300)")
    p.add_argument("--n-start", type=int, default=300, help="start_workflow+get_result samples (300)")
    p.add_argument("--n-recovery", type=int, default=1000, help="pending workflows to recover (1000)")
    p.add_argument("--n-rss", type=int, default=1000, help="10-step workflows before reading VmHWM (1000)")
    p.add_argument("--n-enqueue-lat", type=int, default=200, help="in-process enqueue-to-start samples (200)")
    p.add_argument("--n-cross", type=int, default=100, help="cross-process enqueue-to-start samples (100)")
    p.add_argument("--n-throughput", type=int, default=2000, help="workflows drained by the queue (2000)")
    p.add_argument("--n-enqueue-rate", type=int, default=2000, help="sequential enqueues timed (2000)")
    p.add_argument("--n-messages", type=int, default=100, help="message and event round trips (100)")
    p.add_argument("--n-control", type=int, default=30, help="cancel/deadline wake and list samples (30)")
    p.add_argument(
        "--n-counts",
        type=int,
        default=200,
        help="store_counts: sequential workflows of each kind and concurrent 10-step workflows; half as many "
        "are recovered (200)",
    )
    p.add_argument(
        "--idle-window-s",
        type=float,
        default=10,
        help="store_counts: idle window for idle_statements_per_s (10; the spec's budget is over 60 s)",
    )
    p.add_argument(
        "--queue-budget-s",
        type=float,
        default=40,
        help="latency scenarios stop sampling after this many seconds, n permitting (40)",
    )
    p.add_argument(
        "--gap-ms",
        type=float,
        default=20,
        help="dbosx latency samples: random pause before each enqueue, up to this (20); the reference gets its "
        "polling interval",
    )
    p.add_argument(
        "--throughput-confirm",
        choices=["last", "each"],
        default="last",
        help="queue_throughput: watch the first and last handle then sweep (last, default), or read every "
        "handle in turn during the drain (each: one status read per workflow competes with the queue)",
    )
    p.add_argument(
        "--ref-polls",
        default="default,0.05",
        help="with --compare: reference polling_interval_sec values for the queue scenarios ('default,0.05')",
    )
    p.add_argument(
        "--only",
        help="comma-separated scenarios, figures or groups (core, queues, control, messaging, counts) to run; "
        "overrides --figures. "
        f"Scenarios: {', '.join(SCENARIO_FIGURES)}",
    )
    p.add_argument("--warmup", type=int, default=30, help="untimed warm-up iterations (30)")
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    p.add_argument("--timeout", type=float, default=600, help="seconds per scenario process (600)")
    p.add_argument("--out", help="also append the JSON lines to this file")
    p.add_argument("-v", "--verbose", action="store_true", help="progress on stderr")
    a = p.parse_args(argv)
    if a.quick:
        a.n_commit, a.n_seq, a.n_start, a.n_recovery, a.n_rss, a.warmup = 100, 50, 50, 100, 100, 5
        a.n_enqueue_lat, a.n_cross, a.n_throughput, a.n_enqueue_rate = 50, 30, 300, 300
        a.queue_budget_s = min(a.queue_budget_s, 15)
        a.n_control = 10
        a.n_messages = 20
        a.n_counts = 50
        a.idle_window_s = min(a.idle_window_s, 3)
    polls: list[float | None] = []
    for x in a.ref_polls.split(","):
        x = x.strip()
        if x:
            polls.append(None if x == "default" else float(x))
    a.ref_polls = polls
    return a


def select_figures(args: argparse.Namespace) -> list[str]:
    if not args.only:
        return [f.strip() for f in args.figures.split(",") if f.strip()]
    figures: list[str] = []
    for item in (x.strip() for x in args.only.split(",")):
        if not item:
            continue
        if item in GROUPS:
            figures += [f for s in GROUPS[item] for f in SCENARIO_FIGURES[s]]
        elif item in SCENARIO_FIGURES:
            figures += SCENARIO_FIGURES[item]
        else:
            figures.append(item)  # a figure name; unknown ones are reported by main()
    return list(dict.fromkeys(figures))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    figures = select_figures(args)
    unknown = [f for f in figures if f not in UNITS]
    if unknown:
        print(f"unknown figure(s) {unknown}; known: {list(UNITS)}", file=sys.stderr)
        return 2
    impls = [("dbosx", DBOSX_PY)]
    if args.compare:
        if not os.path.exists(REF_PY):
            print(f"{REF_PY} is missing: run `bash benchmarks/install_reference.sh` first", file=sys.stderr)
            return 2
        impls.append(("reference", REF_PY))
    runner = Runner(args)
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        if backend not in ("sqlite", "postgres"):
            print(f"unknown backend {backend!r}", file=sys.stderr)
            return 2
        runner.run_backend(backend, figures, impls)
    return 0


if __name__ == "__main__":
    sys.exit(main())
