"""Streams of the PostgreSQL store around the statements of `postgres_streams_sql` (04 §8-§11; 07 §2.2 notes 3-4):
each function runs one op on a pool connection (one statement per attempt, in autocommit) and returns its result
with the changes to publish in-process after commit (other processes get them by NOTIFY at commit).

`write_stream` retries an attempt that lost its offset to a concurrent writer of the same stream, and one whose
checkpoint lost to a checkpoint committed after its snapshot (the statement then aborted, writing nothing). Each
retry sees every writer it lost to, so with n concurrent writers an attempt succeeds within n tries.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Any

import psycopg

from . import base, records
from .postgres_rows import Conn, Row
from .postgres_streams_sql import StreamStatements

Changes = list[base.Change]

_WRITE_ATTEMPTS = 64
_QUIET_ATTEMPTS = 4  # collisions retried at once; later ones after a short random pause


def write_stream(
    conn: Conn,
    st: StreamStatements,
    fence: base.Fence,
    key: str,
    value: base.Payload | None,
    writer_step_id: int,
    step_seq: int | None,
    checkpoint: base.NewStep | None,
) -> tuple[base.StreamWrite, Changes, int]:
    """The result, the changes to publish, and the round trips made."""
    key_digest = base.digest(key)
    params: dict[str, Any] = {
        "workflow_id": fence.workflow_id,
        "claim_token": fence.claim_token,
        "key": key,
        "key_digest": key_digest,
        "value": None if value is None else value.text,
        "value_serializer": None if value is None else value.serializer,
        "is_end": value is None,
        "writer_step_id": writer_step_id,
        "step_seq": step_seq,
    }
    if checkpoint is not None:
        params |= records.step_params(fence, checkpoint)
    query = st.write[(checkpoint is not None, step_seq is not None)]
    for attempt in range(1, _WRITE_ATTEMPTS + 1):
        try:
            row = conn.execute(query, params).fetchone()
        except psycopg.errors.UniqueViolation:
            # Only the checkpoint insert can raise (the stream insert does nothing on a conflict): that step was
            # recorded after our snapshot. The statement wrote nothing; the retry reports the recorded step.
            if checkpoint is None:
                raise
            continue
        assert row is not None
        fence_ok, prior_token, found, end_offset, tried, offset = (
            bool(row[0]),
            row[1],
            row[2],
            row[3],
            bool(row[4]),
            row[5],
        )
        if not fence_ok:
            return base.StreamWrite(base.Write.FENCED, None, False), [], attempt
        if checkpoint is not None and prior_token is not None:
            verdict = records.step_verdict((prior_token,), checkpoint.write_token)
            return base.StreamWrite(verdict, None, False), [], attempt
        if found is not None:
            return base.StreamWrite(base.Write.APPLIED, int(found), False), [], attempt
        if end_offset is not None:
            return base.StreamWrite(base.Write.APPLIED, None, True), [], attempt
        if offset is not None:
            change = base.Change("stream", (fence.workflow_id, key_digest))
            return base.StreamWrite(base.Write.APPLIED, int(offset), False), [change], attempt
        assert tried  # every other outcome returned above
        # A concurrent writer took the offset (or closed the stream, or wrote this step_seq) and committed.
        if attempt >= _QUIET_ATTEMPTS:
            time.sleep(random.uniform(0, 0.001 * min(attempt, 20)))
    raise base.Contention(
        f"stream {key!r} of workflow {fence.workflow_id!r}: no free offset after {_WRITE_ATTEMPTS} attempts",
        op="write_stream",
    )


def stream_read(rows: Sequence[Row]) -> base.StreamRead:
    first = rows[0]
    state = base.WorkflowState(True, *first[1:8]) if first[0] is not None else base.WorkflowState(False)
    end_offset = None if first[8] is None else int(first[8])
    values = [(int(r[9]), base.Payload(r[10], r[11])) for r in rows if r[9] is not None]
    return base.StreamRead(values, end_offset, state)
