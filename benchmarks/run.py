"""Run the benchmark scenarios and print one JSON line per figure, backend and implementation.

    .venv/bin/python benchmarks/run.py                 # dbosx on SQLite and Postgres (`make bench`)
    .venv/bin/python benchmarks/run.py --compare       # also the reference, .bench/ref-venv (`make bench-compare`)
    .venv/bin/python benchmarks/run.py --backends sqlite --figures empty_workflow_us,step_overhead_us --quick

Each scenario runs in a fresh subprocess (`benchmarks/scenarios.py`), on a fresh database: a new file in a new
temporary directory on SQLite, a new database on Postgres (created and dropped here, as user postgres on
127.0.0.1:5432). With --compare the same scenario runs under the reference right after dbosx, so both see the
same machine conditions, and a ratio line (reference / dbosx) follows. A failing run prints its line with an
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
}
FIGURE_SCENARIO = {f: s for s, fs in SCENARIO_FIGURES.items() for f in fs}
UNITS = {
    "commit_us": "us",
    "empty_workflow_us": "us",
    "step_overhead_us": "us",
    "start_get_result_ms": "ms",
    "recovery_1000_s": "s",
    "rss_mb": "MB",
}


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
    return None


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
    def run_scenario(self, python: str, scenario: str, backend: str) -> dict[str, Any]:
        impl = "reference" if python == REF_PY else "dbosx"
        n, warmup = self.sizes(scenario)
        url, cleanup = self.fresh_db(backend, impl, scenario)
        cmd = [python, SCENARIOS_PY, scenario, backend, url, "--n", str(n), "--warmup", str(warmup)]
        t0 = time.perf_counter()
        try:
            out, err, rc = _run(cmd, self.args.timeout, cwd=tempfile.gettempdir())
        finally:
            cleanup()
        wall = time.perf_counter() - t0
        if self.args.verbose:
            print(f"# {impl} {backend} {scenario}: rc={rc} in {wall:.1f}s", file=sys.stderr)
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
    ) -> dict[str, Any]:
        n = self.sizes(FIGURE_SCENARIO[figure])[0]
        out: dict[str, Any] = {"figure": figure, "backend": backend, "impl": impl}
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
                out["meets_target"] = value <= target[1]
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
            values: dict[str, dict[str, Any]] = {}
            for impl, python in impls:
                try:
                    res = self.run_scenario(python, scenario, backend)
                except Exception as e:  # report and go on
                    for figure in SCENARIO_FIGURES[scenario]:
                        if figure in figures:
                            self.emit(self.line(figure, backend, impl, None, None, str(e)))
                    continue
                for figure in SCENARIO_FIGURES[scenario]:
                    if figure in figures:
                        ln = self.line(figure, backend, impl, res["figures"].get(figure), res)
                        values.setdefault(figure, {})[impl] = ln
                        self.emit(ln)
            for figure, by_impl in values.items():
                if len(by_impl) == 2:
                    self.emit(self.ratio_line(figure, backend, by_impl["dbosx"], by_impl["reference"]))

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
        self, figure: str, backend: str, mine: dict[str, Any], ref: dict[str, Any]
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "figure": figure,
            "backend": backend,
            "impl": "ratio",
            "ratio": "reference/dbosx",
        }
        a, b = mine.get("value"), ref.get("value")
        err = mine.get("error") or ref.get("error")
        out["value"] = (b / a) if (a and b is not None and not err) else None
        out["unit"] = "x"
        out["dbosx"] = a
        out["reference"] = b
        out["n"] = mine.get("n")
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
    p.add_argument("--warmup", type=int, default=30, help="untimed warm-up iterations (30)")
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    p.add_argument("--timeout", type=float, default=600, help="seconds per scenario process (600)")
    p.add_argument("--out", help="also append the JSON lines to this file")
    p.add_argument("-v", "--verbose", action="store_true", help="progress on stderr")
    a = p.parse_args(argv)
    if a.quick:
        a.n_commit, a.n_seq, a.n_start, a.n_recovery, a.n_rss, a.warmup = 100, 50, 50, 100, 100, 5
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    figures = [f.strip() for f in args.figures.split(",") if f.strip()]
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
