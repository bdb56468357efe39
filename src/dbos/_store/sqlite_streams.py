"""Streams of the SQLite backend (04 §8-§11; 07 §2.2 "Messages, events and streams" notes 3-4, §3.2 rule 6).

A write is one `BEGIN IMMEDIATE` transaction (`WriteTx`): the checkpoint insert carries the fence (as in
`sqlite_messages`), then one probe reads the fence, a step write's existing row (by `step_seq`), the end marker and
the last offset of the stream, all through indexes. With the write lock held no other writer can take the next
offset between the probe and the insert, so offsets are gapless and assigned in commit order; an offset collision
(which the lock rules out) would still be retried. A write that ends up writing nothing (a replayed step write, a
closed stream) sets `rollback_only`, so a checkpoint inserted first is not kept either.

A read is one deferred read transaction (one snapshot): the writer's state first, then the values and the end
marker (04 §10 rule 3).
"""

from __future__ import annotations

import sqlite3

from . import base
from .base import StreamRead, StreamWrite, Write
from .sqlite_conn import WriteTx
from .sqlite_messages import _FENCE_OK, _insert_checkpoint
from .sqlite_rows import STATE_COLUMNS, to_state

_PROBE = f"""
SELECT {_FENCE_OK} AS fence_ok,
  (SELECT stream_offset FROM dbos_streams INDEXED BY dbos_streams_step_seq
   WHERE workflow_id = ? AND writer_step_id = ? AND key_digest = ? AND step_seq = ?) AS seq_offset,
  (SELECT stream_offset FROM dbos_streams INDEXED BY dbos_streams_end
   WHERE workflow_id = ? AND key_digest = ? AND is_end = 1) AS end_offset,
  (SELECT stream_offset FROM dbos_streams
   WHERE workflow_id = ? AND key_digest = ? ORDER BY stream_offset DESC LIMIT 1) AS last_offset
"""
_INSERT = """
INSERT INTO dbos_streams (workflow_id, key, key_digest, stream_offset, value, serializer, is_end, writer_step_id,
                          step_seq, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_MAX_ATTEMPTS = 8


def _is_offset_collision(exc: sqlite3.IntegrityError) -> bool:
    return "stream_offset" in str(exc)


def write_stream(
    tx: WriteTx,
    fence: base.Fence,
    key: str,
    value: base.Payload | None,
    writer_step_id: int,
    step_seq: int | None,
    checkpoint: base.NewStep | None,
) -> StreamWrite:
    if checkpoint is not None:
        refused = _insert_checkpoint(tx, fence, checkpoint)
        if refused is not None:
            return StreamWrite(refused, None, False)
    wid = fence.workflow_id
    kdig = base.digest(key)
    text = None if value is None else value.text
    ser = None if value is None else value.serializer
    is_end = 1 if value is None else 0
    for _ in range(_MAX_ATTEMPTS):
        p = tx.execute(
            _PROBE, (wid, fence.claim_token, wid, writer_step_id, kdig, step_seq, wid, kdig, wid, kdig)
        ).fetchone()
        if not p["fence_ok"]:  # only without a checkpoint (its insert checked the same fence)
            return StreamWrite(Write.FENCED, None, False)
        if step_seq is not None and p["seq_offset"] is not None:  # a repeated step write
            tx.rollback_only = True
            return StreamWrite(Write.APPLIED, int(p["seq_offset"]), False)
        if p["end_offset"] is not None:
            tx.rollback_only = True
            return StreamWrite(Write.APPLIED, None, True)
        offset = 0 if p["last_offset"] is None else int(p["last_offset"]) + 1
        params = (wid, key, kdig, offset, text, ser, is_end, writer_step_id, step_seq, tx.now)
        try:
            tx.execute(_INSERT, params)
        except sqlite3.IntegrityError as exc:
            if _is_offset_collision(exc):
                continue
            raise
        tx.emit("stream", wid, kdig)
        return StreamWrite(Write.APPLIED, offset, False)
    raise base.UnknownStorageError(  # unreachable while writes hold the database's write lock
        "write_stream: the next stream offset kept colliding", op="write_stream"
    )


_STATE = f"SELECT {STATE_COLUMNS} FROM dbos_workflows WHERE workflow_id = ?"
# The values from from_offset (one range scan of the primary key), never the end marker.
_VALUES = """
SELECT stream_offset, value, serializer FROM dbos_streams
WHERE workflow_id = ? AND key_digest = ? AND stream_offset >= ? AND is_end = 0
ORDER BY stream_offset LIMIT ?
"""
_END = (
    "SELECT stream_offset FROM dbos_streams INDEXED BY dbos_streams_end "
    "WHERE workflow_id = ? AND key_digest = ? AND is_end = 1"
)


def read_stream(
    conn: sqlite3.Connection, workflow_id: str, key: str, from_offset: int, limit: int
) -> StreamRead:
    r = conn.execute(_STATE, (workflow_id,)).fetchone()
    writer = base.WorkflowState(exists=False) if r is None else to_state(r)
    kdig = base.digest(key)
    end = conn.execute(_END, (workflow_id, kdig)).fetchone()
    end_offset = None if end is None else int(end[0])
    rows = conn.execute(_VALUES, (workflow_id, kdig, from_offset, limit)).fetchall()
    values: list[tuple[int, base.Payload]] = []
    for offset, text, ser in rows:  # consecutive: stop at a gap (a fork copies a subset) or the end marker
        if offset != from_offset + len(values) or (end_offset is not None and offset >= end_offset):
            break
        values.append((int(offset), base.Payload(text, ser or "")))
    return StreamRead(values, end_offset, writer)
