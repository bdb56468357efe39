"""Queue operations of the PostgreSQL store around the statements of `postgres_queue_sql`: claim parameters and
shapes, the locked claim transaction, and result rows to records (03 §8, §9, §11, §12, §19, §21; 07 §6.4)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from . import base, records
from .postgres_queue_sql import ClaimShape
from .postgres_rows import Conn, Row, abort, workflow_row
from .postgres_sql import WORKFLOW_COLUMNS

_N_COLS = len(WORKFLOW_COLUMNS)


def has_shared_budget(req: base.ClaimRequest) -> bool:
    """G, L, PG or PL: claims of the queue are serialized under its advisory lock (03 §21 rule 5)."""
    return (
        req.global_concurrency is not None
        or req.rate is not None
        or req.partition_concurrency is not None
        or req.partition_rate is not None
    )


def logs_claims(req: base.ClaimRequest) -> bool:
    """A rate-limited queue: every claim adds one `queue_claims` row (07 §3.2 rule 2)."""
    return req.rate is not None or req.partition_rate is not None


def claim_shape(req: base.ClaimRequest, *, prune: bool) -> ClaimShape:
    partitioned = req.partitioned
    return ClaimShape(
        partitioned=partitioned,
        global_concurrency=req.global_concurrency is not None,
        rate=req.rate is not None,
        partition_concurrency=partitioned and req.partition_concurrency is not None,
        partition_rate=partitioned and req.partition_rate is not None,
        log_claims=logs_claims(req),
        prune=prune,
    )


def _served_order(lane_order: Sequence[str | None]) -> list[str | None]:
    """Each lane once, at the position of its last occurrence (the most recent service counts)."""
    last = {k: i for i, k in enumerate(lane_order)}
    return sorted(last, key=last.__getitem__)


def claim_params(req: base.ClaimRequest) -> dict[str, Any]:
    local = dict(req.partition_local_room or {})
    return {
        "queue_name": req.queue_name,
        "names": sorted(req.registered),
        "application_name": req.application_name,
        "application_version": req.application_version,
        "max_rows": max(0, min(req.max_rows, records.CLAIM_BATCH_MAX)),
        "executor_id": req.executor_id,
        "incarnation": req.incarnation,
        "batch_token": req.batch_token,
        "g": req.global_concurrency,
        "rate_limit": None if req.rate is None else req.rate.limit,
        "rate_period": None if req.rate is None else req.rate.period_ms,
        "pg": req.partition_concurrency,
        "pl_limit": None if req.partition_rate is None else req.partition_rate.limit,
        "pl_period": None if req.partition_rate is None else req.partition_rate.period_ms,
        "local_keys": list(local),
        "local_vals": list(local.values()),
        "pw": req.partition_worker_concurrency,
        "lane_order": _served_order(req.lane_order),
    }


class ClaimsPruner:
    """When a queue's old `queue_claims` rows are next deleted: at most once per queue per minute."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def due(self, queue_name: str) -> bool:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(queue_name)
            if last is not None and now - last < records.RATE_CLAIMS_PRUNE_EVERY_S:
                return False
            self._last[queue_name] = now
            return True


def run_locked(conn: Conn, lock_key: int, query: str, params: dict[str, Any]) -> list[Row]:
    """BEGIN, the queue's advisory xact lock, `query`, COMMIT: one transaction in one round trip (pipeline
    mode). The lock is its own statement, so the claim's snapshot is taken after the lock is granted and sees
    every claim committed before it (READ COMMITTED)."""
    try:
        with conn.pipeline():
            conn.execute("BEGIN")
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key,))
            cur = conn.execute(query, params)
            conn.execute("COMMIT")
        return list(cur.fetchall())
    except BaseException:
        abort(conn)
        raise


def claim_result(rows: list[Row], queue_name: str) -> tuple[base.ClaimResult, list[base.Change]]:
    """Rows (cancelled, no notification sent, rate slot, workflow columns..., previous attempts, steps_seeded,
    claim order) to the result, and the changes to publish."""
    cancelled: list[str] = list(rows[0][0] or []) if rows else []
    slot = rows[0][2] if rows else None
    ordered: list[tuple[tuple[int, int], base.ClaimedWorkflow]] = []
    for r in rows:
        if r[3] is None:
            continue
        wf = workflow_row(r[3 : 3 + _N_COLS])
        prev_attempts, seeded, ord_ = r[3 + _N_COLS], r[4 + _N_COLS], r[5 + _N_COLS]
        fence = base.Fence(wf.workflow_id, wf.claim_token or "")
        claimed = base.ClaimedWorkflow(fence, wf, records.may_have_steps(prev_attempts, seeded))
        key = (int(ord_), 0) if ord_ is not None else (-wf.priority, wf.seq)
        ordered.append((key, claimed))
    ordered.sort(key=lambda kc: kc[0])
    changes: list[base.Change] = []
    if cancelled:
        changes = [base.Change("wf", (wid,)) for wid in cancelled]
        changes.append(base.Change("queue", (queue_name,)))
    result = base.ClaimResult([c for _, c in ordered], cancelled, None if slot is None else int(slot))
    return result, changes


def promote_result(row: Row | None) -> base.PromoteResult:
    """(next due, no notification sent, promoted IDs, their queues) to the result."""
    if row is None:
        return base.PromoteResult([], None)
    ids, queues = list(row[2] or []), list(row[3] or [])
    return base.PromoteResult(list(zip(ids, queues, strict=True)), None if row[0] is None else int(row[0]))


def stats_rows(rows: list[Row]) -> list[base.QueueStatsRow]:
    return [
        base.QueueStatsRow(
            queue_name=r[0],
            enqueued=int(r[1]),
            delayed=int(r[2]),
            pending=int(r[3]),
            oldest_enqueued_at=None if r[4] is None else int(r[4]),
            partitions=int(r[5]),
            enqueued_by_version={(app, version): int(n) for app, version, n in r[6] or ()},
        )
        for r in rows
    ]
