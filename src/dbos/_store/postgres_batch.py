"""Group commit on PostgreSQL (07 §8): single-statement writes that arrive while every commit lane is busy run as
one pipelined transaction (BEGIN, the statements in workflow-ID order, COMMIT: one round trip, one WAL flush).

An op whose statement was refused inside the batch (no row: fenced, conflicting, already recorded) is re-run alone,
where its refusal reads happen; a batch in which a statement raises rolls back and every op is re-run alone
(rule 3), which 07 §7 rule 1 (ops are idempotent by their key) makes safe.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from . import base
from .group_commit import CommitLanes, Pending
from .postgres_rows import Conn, Row, abort


@dataclass(frozen=True, slots=True)
class PgWrite:
    op: str
    key: str  # the workflow ID: batches run in this order, keeping lock order consistent (rule 4)
    query: Any
    params: dict[str, Any]
    applied: Callable[[Row | None], Any]  # the op's result from its statement's row; None when refused
    alone: Callable[[], Any]  # the whole op in its own transaction, with its retries and refusal reads


class PgBatcher:
    def __init__(
        self,
        lanes: int,
        connection: Callable[[], Any],
        count: Callable[[Sequence[str]], None],
    ) -> None:
        self._lanes: CommitLanes[PgWrite] = CommitLanes(lanes)
        self._connection = connection  # a pooled-connection context manager
        self._count = count  # books one batch transaction of these ops

    def add_stats(self, counts: base.StoreStats) -> base.StoreStats:
        return self._lanes.add_stats(counts)

    def write(self, w: PgWrite) -> Any:
        return self._lanes.submit(w, _alone, self._run_batch, size=_size(w))

    def _run_batch(self, items: Sequence[Pending[PgWrite]]) -> None:
        ordered = sorted(items, key=lambda it: it.payload.key)
        rows = self._try_batch([it.payload for it in ordered])
        for i, it in enumerate(ordered):
            try:
                result = None if rows is None else it.payload.applied(rows[i])
                it.succeed(result if result is not None else it.payload.alone())
            except Exception as exc:
                it.fail(exc)

    def _try_batch(self, ws: list[PgWrite]) -> list[Row | None] | None:
        try:
            with self._connection() as conn:
                rows = _pipelined(conn, ws)
        except (psycopg.Error, base.StoreError, UnicodeEncodeError):
            return None  # rolled back: every op runs alone
        self._count([w.op for w in ws])
        return rows


def _alone(w: PgWrite) -> Any:
    return w.alone()


def _pipelined(conn: Conn, ws: list[PgWrite]) -> list[Row | None]:
    try:
        with conn.pipeline():
            conn.execute("BEGIN")
            cursors = [conn.execute(w.query, w.params) for w in ws]
            conn.execute("COMMIT")
    except BaseException:
        abort(conn)
        raise
    return [c.fetchone() for c in cursors]


def _size(w: PgWrite) -> int:
    return sum(len(v) for v in w.params.values() if isinstance(v, (str, bytes)))
