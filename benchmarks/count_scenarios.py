"""Storage operation counts (spec 07 §10.2 rule 3), imported by scenarios.py; dbosx only (run.py skips the
reference): they read dbosx's store counters, `current_engine().db.stats()` (a `StoreStats`), which are not
public API and have no counterpart in the reference.

One scenario, `store_counts`, on a fresh database, in this order:

- idle_statements_per_s: after launch and a 1 s settle, the statements over an idle window (`--idle-window-s`,
  default 10 s; the spec's budget is stated over 60 s) divided by the window. PostgreSQL: `round_trips` (each is
  one statement, pipeline sync or commit sent to the server); SQLite: `commits + reads`.
- writes_per_empty_workflow, commits_per_step, round_trips_per_step: `n` sequential direct calls of an empty
  workflow and `n` of a 10-step workflow, in chunks of CHUNK calls. A chunk counts only if no op other than
  insert_workflow / record_step / record_outcome (and SQLite's `feed`, which counts neither commits nor reads)
  ran during it, so the figures are exact per-op counts with the background ops excluded by op name (07 §10.2
  rule 2); discarded chunks are repeated and reported in `detail`.
- batch_size_p50, batch_size_p99, commits_per_step_concurrent: `n` 10-step workflows started with
  DBOS.start_workflow, whose bodies wait on a gate until all `n` are started; counted from the gate opening until
  every result is back (2,000 record_step and 200 record_outcome for n = 200); commits / (10 n) steps. The
  percentiles are over the batches of the `batch_sizes` histogram delta (per batch, nearest rank; the
  per-op-weighted ones are in `detail`). `detail.ungated` repeats it without the gate, counted from the first
  start, so each body runs as soon as it is started and the load ramps up.
- reads_per_recovered_workflow: `n_recover` workflows whose second step blocks on a threading.Event are
  cancelled, released and left to stop; then each is resumed (DBOS.resume_workflow) and awaited, one at a time,
  so that each is claimed alone: load_checkpoints calls / workflows. Resume re-runs the workflow from its stored
  checkpoints through the same claim path as recovery. `detail` adds a second set resumed with one
  DBOS.resume_workflows call (1 load_checkpoints per claim batch, so at most 1 per workflow).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

from dbos import DBOS

Launch = Callable[[str], None]

COUNT_OPTS: dict[str, float] = {"idle_window_s": 10.0, "settle_s": 1.0}  # set by scenarios.py from its flags
CHUNK = 10  # sequential calls per counted chunk
FOREGROUND = ("insert_workflow", "record_step", "record_outcome")
NEUTRAL = ("feed",)  # SQLite change-detector wake-ups: counted by op, but neither a commit nor a read
WAIT_S = 60.0


@DBOS.step()
def count_step(i: int) -> int:
    return i


@DBOS.workflow()
def count_empty() -> int:
    return 0


@DBOS.workflow()
def count_ten_steps() -> int:
    total = 0
    for i in range(10):
        total += count_step(i)
    return total


GATE = threading.Event()


@DBOS.workflow()
def count_gated_ten_steps() -> int:
    if not GATE.wait(WAIT_S):  # opened once every workflow of the burst is started
        raise RuntimeError("gate never opened")
    total = 0
    for i in range(10):
        total += count_step(i)
    return total


RELEASE = threading.Event()
_exited_lock = threading.Lock()
_exited = [0]


@DBOS.step()
def count_blocking_step(i: int) -> int:
    if not RELEASE.wait(WAIT_S):
        raise RuntimeError("never released")
    return i


@DBOS.workflow()
def count_recoverable(i: int) -> int:
    try:
        count_step(i)
        count_blocking_step(i)
    finally:
        with _exited_lock:
            _exited[0] += 1
    return i


# --- counters -----------------------------------------------------------------------------------------------
def _stats() -> Any:
    from dbos._dbos import current_engine

    return current_engine().db.stats()


class Delta:
    """The counter changes between two `stats()` snapshots."""

    def __init__(self, a: Any, b: Any) -> None:
        self.commits = b.commits - a.commits
        self.reads = b.reads - a.reads
        self.round_trips = b.round_trips - a.round_trips
        self.by_op = _dict_delta(a.by_op, b.by_op)
        self.batches = b.batches - a.batches
        self.batch_ops = b.batch_ops - a.batch_ops
        self.batch_sizes = {int(k): v for k, v in _dict_delta(a.batch_sizes, b.batch_sizes).items()}
        self.lane_waits = b.lane_waits - a.lane_waits

    def others(self, allowed: tuple[str, ...]) -> dict[str, int]:
        return {op: c for op, c in self.by_op.items() if op not in allowed}

    def summary(self) -> dict[str, Any]:
        return {"commits": self.commits, "reads": self.reads, "round_trips": self.round_trips,
                "by_op": self.by_op}  # fmt: skip


def _dict_delta(a: dict[Any, int], b: dict[Any, int]) -> dict[Any, int]:
    out = {k: v - a.get(k, 0) for k, v in b.items()}
    return {k: v for k, v in sorted(out.items()) if v}


def _wait_for(cond: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.002)


def _percentile(hist: dict[int, int], q: float) -> int | None:
    """The q-quantile (nearest rank) of a histogram value -> count."""
    total = sum(hist.values())
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for size in sorted(hist):
        seen += hist[size]
        if seen >= rank:
            return size
    return max(hist)


def _fig(value: Any, unit: str, n: int, **detail: Any) -> dict[str, Any]:
    return {"value": value, "unit": unit, "n": n, **detail}


# --- parts --------------------------------------------------------------------------------------------------
def _idle(backend: str) -> dict[str, Any]:
    time.sleep(COUNT_OPTS["settle_s"])
    window = COUNT_OPTS["idle_window_s"]
    a = _stats()
    t0 = time.monotonic()
    time.sleep(window)
    b = _stats()
    elapsed = time.monotonic() - t0
    d = Delta(a, b)
    statements = d.round_trips if backend == "postgres" else d.commits + d.reads
    return _fig(
        statements / elapsed,
        "statements/s",
        1,
        window_s=round(elapsed, 3),
        settle_s=COUNT_OPTS["settle_s"],
        counted="round_trips" if backend == "postgres" else "commits + reads",
        commits_reads_round_trips_per_s=(d.commits + d.reads + d.round_trips) / elapsed,
        **d.summary(),
    )


class _Clean:
    """Totals over the chunks in which only the allowed ops ran."""

    def __init__(self) -> None:
        self.calls = self.commits = self.reads = self.round_trips = self.discarded = 0
        self.by_op: dict[str, int] = {}
        self.discarded_ops: dict[str, int] = {}

    def add(self, d: Delta, calls: int) -> bool:
        others = d.others(FOREGROUND + NEUTRAL)
        if others:
            self.discarded += 1
            for op, c in others.items():
                self.discarded_ops[op] = self.discarded_ops.get(op, 0) + c
            return False
        self.calls += calls
        self.commits += d.commits
        self.reads += d.reads
        self.round_trips += d.round_trips
        for op, c in d.by_op.items():
            if op in FOREGROUND:
                self.by_op[op] = self.by_op.get(op, 0) + c
        return True

    def per_call(self, what: str) -> float:
        return float(getattr(self, what)) / self.calls if self.calls else math.nan


def _sequential(fn: Callable[[], int], n: int) -> _Clean:
    clean = _Clean()
    attempts = 0
    while clean.calls < n and attempts < 10 * max(1, n // CHUNK):
        attempts += 1
        k = min(CHUNK, n - clean.calls)
        a = _stats()
        for _ in range(k):
            fn()
        clean.add(Delta(a, _stats()), k)
    if clean.calls == 0:
        raise RuntimeError(f"no chunk of {fn.__name__} ran without background ops: {clean.discarded_ops}")
    return clean


def _concurrent(n: int, gated: bool) -> tuple[Delta, float]:
    """`n` 10-step workflows started with DBOS.start_workflow, all results awaited. Gated: every body waits
    until all `n` are started, and the counting starts then (after the `n` insert_workflow), so all of them
    checkpoint at once; ungated: counted from the first start, each body runs as soon as it is started."""
    GATE.clear()
    a = _stats()
    t0 = time.perf_counter()
    handles = [DBOS.start_workflow(count_gated_ten_steps if gated else count_ten_steps) for _ in range(n)]
    if gated:
        a = _stats()
        t0 = time.perf_counter()
        GATE.set()
    for h in handles:
        if h.get_result() != 45:
            raise RuntimeError("wrong result")
    return Delta(a, _stats()), time.perf_counter() - t0


def _park(n: int, tag: str) -> list[str]:
    """Start `n` recoverable workflows, cancel them inside their blocking step, and wait until they stopped."""
    from dbos._dbos import current_engine

    RELEASE.clear()
    with _exited_lock:
        before = _exited[0]
    handles = [DBOS.start_workflow(count_recoverable, i) for i in range(n)]
    ids = [h.workflow_id for h in handles]
    for wid in ids:
        DBOS.cancel_workflow(wid)
    RELEASE.set()

    def status(wid: str) -> str:
        st = DBOS.get_workflow_status(wid)
        return st.status if st is not None else "MISSING"

    _wait_for(lambda: all(status(w) == "CANCELLED" for w in ids), f"{tag}: all CANCELLED")
    _wait_for(lambda: _exited[0] - before >= n, f"{tag}: every cancelled body to return")
    engine = current_engine()
    _wait_for(lambda: not any(w in engine.active for w in ids), f"{tag}: no cancelled execution active")
    return ids


def _recovery(n: int) -> dict[str, Any]:
    one = _park(n, "one at a time")
    a = _stats()
    for wid in one:
        if DBOS.resume_workflow(wid).get_result() is None:
            raise RuntimeError("resumed workflow returned None")
    d1 = Delta(a, _stats())
    batch = _park(n, "batch")
    a = _stats()
    for h in DBOS.resume_workflows(batch):
        h.get_result()
    d2 = Delta(a, _stats())
    loads = d1.by_op.get("load_checkpoints", 0)
    return _fig(
        loads / n,
        "reads/workflow",
        n,
        how="cancel inside step 2, then DBOS.resume_workflow + get_result, one workflow at a time",
        load_checkpoints=loads,
        claims=d1.by_op.get("claim", 0),
        reads_per_workflow_all_ops=d1.reads / n,
        by_op=d1.by_op,
        batch_resume_load_checkpoints_per_workflow=d2.by_op.get("load_checkpoints", 0) / n,
        batch_resume_claims=d2.by_op.get("claim", 0),
        batch_resume_by_op=d2.by_op,
    )


def scenario_store_counts(launch: Launch, backend: str, db_url: str, n: int, warmup: int) -> dict[str, Any]:
    launch(db_url)
    pg = backend == "postgres"
    figures: dict[str, Any] = {}
    try:
        figures["idle_statements_per_s"] = _idle(backend)
        for _ in range(warmup):
            count_empty()
            count_ten_steps()
        empty = _sequential(count_empty, n)
        ten = _sequential(count_ten_steps, n)
        conc, conc_s = _concurrent(n, gated=True)
        loose, loose_s = _concurrent(n, gated=False)
        figures["reads_per_recovered_workflow"] = _recovery(max(1, n // 2))
    finally:
        DBOS.destroy()

    def seq_detail(c: _Clean) -> dict[str, Any]:
        return {"calls": c.calls, "commits": c.commits, "reads": c.reads, "round_trips": c.round_trips,
                "by_op": c.by_op, "chunks_discarded": c.discarded, "discarded_for_ops": c.discarded_ops}  # fmt: skip

    detail = {"chunk": CHUNK, "empty": seq_detail(empty), "ten_steps": seq_detail(ten)}
    writes_empty = sum(empty.by_op.values()) / empty.calls
    figures["writes_per_empty_workflow"] = _fig(
        empty.per_call("commits"),
        "writes/workflow",
        empty.calls,
        foreground_calls_per_workflow=writes_empty,
        reads_per_workflow=empty.per_call("reads"),
        chunk=CHUNK,
        empty=seq_detail(empty),
    )
    figures["commits_per_step"] = _fig(
        (ten.per_call("commits") - empty.per_call("commits")) / 10,
        "commits/step",
        ten.calls,
        reads_per_step=(ten.per_call("reads") - empty.per_call("reads")) / 10,
        commits_per_10_step_workflow=ten.per_call("commits"),
        commits_per_empty_workflow=empty.per_call("commits"),
        **detail,
    )
    rt: dict[str, Any] = {"round_trips_per_10_step_workflow": ten.per_call("round_trips"),
                          "round_trips_per_empty_workflow": empty.per_call("round_trips"), **detail}  # fmt: skip
    if not pg:
        rt["note"] = "round_trips stays 0 on SQLite (07 §10.2 rule 1)"
    figures["round_trips_per_step"] = _fig(
        (ten.per_call("round_trips") - empty.per_call("round_trips")) / 10,
        "round_trips/step",
        ten.calls,
        **rt,
    )
    steps = 10 * n
    by_op_weight = {size: size * count for size, count in conc.batch_sizes.items()}
    conc_detail = {
        "workflows": n,
        "steps": steps,
        "wall_s": round(conc_s, 3),
        "batches": conc.batches,
        "batch_ops": conc.batch_ops,
        "batch_sizes": {str(k): v for k, v in sorted(conc.batch_sizes.items())},
        "lane_waits": conc.lane_waits,
        "max_batch": max(conc.batch_sizes) if conc.batch_sizes else None,
        "op_weighted_p50": _percentile(by_op_weight, 0.50),
        "op_weighted_p99": _percentile(by_op_weight, 0.99),
        "percentiles": "per batch (nearest rank over the batches of the histogram delta)",
        "commits": conc.commits,
        "reads": conc.reads,
        "round_trips": conc.round_trips,
        "foreground_ops": {op: conc.by_op.get(op, 0) for op in FOREGROUND},
        "other_ops": conc.others(FOREGROUND + NEUTRAL),
        "counted": "from the gate opening (all n started) until every result is back",
        "ungated": {
            "counted": "from the first DBOS.start_workflow; each body runs as soon as it is started",
            "wall_s": round(loose_s, 3),
            "commits_per_step": loose.commits / steps,
            "commits": loose.commits,
            "batch_sizes": {str(k): v for k, v in sorted(loose.batch_sizes.items())},
            "batch_size_p50": _percentile(loose.batch_sizes, 0.50),
            "batch_size_p99": _percentile(loose.batch_sizes, 0.99),
            "lane_waits": loose.lane_waits,
            "foreground_ops": {op: loose.by_op.get(op, 0) for op in FOREGROUND},
        },
    }
    figures["batch_size_p50"] = _fig(_percentile(conc.batch_sizes, 0.50), "ops/batch", n, **conc_detail)
    figures["batch_size_p99"] = _fig(_percentile(conc.batch_sizes, 0.99), "ops/batch", n, **conc_detail)
    figures["commits_per_step_concurrent"] = _fig(
        conc.commits / steps,
        "commits/step",
        n,
        commits_per_workflow=conc.commits / n,
        **conc_detail,
    )
    return {"figures": figures}


COUNT_SCENARIOS = {"store_counts": scenario_store_counts}
