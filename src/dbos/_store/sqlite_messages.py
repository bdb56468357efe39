"""Messages and events of the SQLite backend (04 §2-§7; 07 §2.2 "Messages, events and streams", §3.2 rules 4-5).

Writes take a `WriteTx` (one `BEGIN IMMEDIATE` transaction: the fence check and the write cannot be separated by
another writer), reads a reader connection. On the happy path no write reads before it writes: the checkpoint
insert carries the fence, the consume update carries the fence and the "no step yet" condition, and a refused
write is told apart afterwards by `_verdict` (fence first, then the step's write token).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from . import base, records
from .base import Write
from .sqlite_conn import WriteTx
from .sqlite_rows import STATE_COLUMNS, STEP_COLUMNS, json_list, to_state
from .sqlite_workflows import _INSERT_STEP, _step_values

# After a refused fenced write: is the fence current, and which token (if any) recorded the step.
_PROBE = (
    "SELECT EXISTS (SELECT 1 FROM dbos_workflows WHERE workflow_id = ? AND claim_token = ?) AS fence_ok, "
    "(SELECT write_token FROM dbos_steps WHERE workflow_id = ? AND step_id = ?) AS write_token"
)
_FENCE_OK = "EXISTS (SELECT 1 FROM dbos_workflows WHERE workflow_id = ? AND claim_token = ?)"


def _verdict(tx: WriteTx, fence: base.Fence, step_id: int, write_token: str) -> Write:
    """FENCED if the fence fails, else APPLIED (the step carries my write token) or CONFLICT (another's)."""
    r = tx.execute(_PROBE, (fence.workflow_id, fence.claim_token, fence.workflow_id, step_id)).fetchone()
    if not r["fence_ok"]:
        return Write.FENCED
    return records.step_verdict((r["write_token"],), write_token)


def _insert_checkpoint(tx: WriteTx, fence: base.Fence, step: base.NewStep) -> Write | None:
    """Insert the checkpoint under the fence. None: inserted; else the verdict of the refusal (nothing written)."""
    params = records.step_params(fence, step, tx.now)
    if tx.execute(_INSERT_STEP, _step_values(params)).rowcount == 1:
        return None
    return _verdict(tx, fence, step.step_id, step.write_token)


# ---------------------------------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------------------------------

# The first listed destination (in list order) that does not exist.
_FIRST_MISSING = (
    "SELECT j.value FROM json_each(?) j "
    "WHERE NOT EXISTS (SELECT 1 FROM dbos_workflows w WHERE w.workflow_id = j.value) ORDER BY j.key LIMIT 1"
)
# Every workflow forked from a listed destination, directly or transitively (UNION stops on any cycle).
_FORKS = """
WITH RECURSIVE f(root, wid) AS (
  SELECT value, value FROM json_each(?)
  UNION
  SELECT f.root, w.workflow_id FROM f
  JOIN dbos_workflows w INDEXED BY dbos_workflows_forked ON w.forked_from = f.wid
)
SELECT root, wid FROM f WHERE wid <> root
"""
_INSERT_MESSAGE = (
    "INSERT OR IGNORE INTO dbos_messages "
    "(message_id, destination_id, topic, topic_digest, payload, serializer, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def _distinct(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))


def send_messages(
    tx: WriteTx,
    msgs: Sequence[base.NewMessage],
    send_to_forks: bool,
    checkpoint: tuple[base.Fence, base.NewStep] | None,
) -> base.SendResult:
    if checkpoint is not None:
        refused = _insert_checkpoint(tx, *checkpoint)
        if refused is not None:
            return base.SendResult(None, refused)
    if not msgs:
        return base.SendResult(None, Write.APPLIED)
    dests = _distinct([m.destination_id for m in msgs])
    r = tx.execute(_FIRST_MISSING, (json_list(dests),)).fetchone()
    if r is not None:
        tx.rollback_only = True  # not even the checkpoint
        return base.SendResult(r[0], Write.APPLIED)
    forks: dict[str, list[str]] = {}
    if send_to_forks:
        for root, wid in tx.execute(_FORKS, (json_list(dests),)).fetchall():
            forks.setdefault(root, []).append(wid)
    written: dict[tuple[str, str], None] = {}
    execute = tx.conn.execute
    now = tx.now
    for m in msgs:
        tdig = base.topic_digest(m.topic)
        text, ser = m.payload.text, m.payload.serializer
        dest = m.destination_id
        if execute(_INSERT_MESSAGE, (m.message_id, dest, m.topic, tdig, text, ser, now)).rowcount:
            written[(dest, tdig)] = None
        for fork in forks.get(dest, ()):
            copy_id = "f:" + base.digest(fork, m.message_id)
            if execute(_INSERT_MESSAGE, (copy_id, fork, m.topic, tdig, text, ser, now)).rowcount:
                written[(fork, tdig)] = None
    for dest, tdig in written:
        tx.emit("msg", dest, tdig)
    return base.SendResult(None, Write.APPLIED)


# Take the oldest unconsumed message of (workflow, topic), only while the fence holds and the step is unrecorded.
_CONSUME = f"""
UPDATE dbos_messages SET consumed = 1, consumed_at = ?
WHERE seq = (SELECT seq FROM dbos_messages INDEXED BY dbos_messages_inbox
             WHERE destination_id = ? AND topic_digest = ? AND consumed = 0 ORDER BY seq LIMIT 1)
  AND {_FENCE_OK}
  AND NOT EXISTS (SELECT 1 FROM dbos_steps WHERE workflow_id = ? AND step_id = ?)
RETURNING payload, serializer
"""
_INSERT_CONSUMED_STEP = f"""
INSERT INTO dbos_steps ({STEP_COLUMNS})
VALUES (:workflow_id, :step_id, :name, :output, :error, :serializer, :child_workflow_id, :started_at,
        :completed_at, :write_token)
"""
# After a refused consume: the fence, and the step if it is recorded.
_CONSUME_PROBE = f"""
SELECT {_FENCE_OK} AS fence_ok, {", ".join("s." + c.strip() for c in STEP_COLUMNS.split(","))}
FROM (SELECT 1) AS one LEFT JOIN dbos_steps s ON s.workflow_id = ? AND s.step_id = ?
"""


def consume_message(
    tx: WriteTx, fence: base.Fence, step: base.NewStep, topic: str | None
) -> base.ConsumeResult:
    wid = fence.workflow_id
    r = tx.execute(
        _CONSUME,
        (tx.now, wid, base.topic_digest(topic), wid, fence.claim_token, wid, step.step_id),
    ).fetchone()
    if r is None:
        p = tx.execute(_CONSUME_PROBE, (wid, fence.claim_token, wid, step.step_id)).fetchone()
        if not p["fence_ok"]:
            return base.ConsumeResult(Write.FENCED, None)
        if p["write_token"] is None:  # no message: nothing written
            return base.ConsumeResult(Write.APPLIED, None)
        return base.ConsumeResult(
            records.step_verdict((p["write_token"],), step.write_token), records.step_row(p)
        )
    params = records.step_params(fence, step, tx.now)
    params["output"] = r["payload"]
    params["error"] = None
    params["serializer"] = r["serializer"]
    tx.execute(_INSERT_CONSUMED_STEP, params)
    return base.ConsumeResult(Write.APPLIED, records.step_row(params))


# ---------------------------------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------------------------------

_UPSERT_EVENT = f"""
INSERT INTO dbos_events (workflow_id, key, key_digest, value, serializer, updated_at)
SELECT ?, ?, ?, ?, ?, ? WHERE {_FENCE_OK}
ON CONFLICT (workflow_id, key_digest) DO UPDATE
SET key = excluded.key, value = excluded.value, serializer = excluded.serializer, updated_at = excluded.updated_at
"""
_UPSERT_HISTORY = """
INSERT INTO dbos_event_history (workflow_id, step_id, key, key_digest, value, serializer, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (workflow_id, step_id, key_digest) DO UPDATE
SET key = excluded.key, value = excluded.value, serializer = excluded.serializer, created_at = excluded.created_at
"""


def set_event(
    tx: WriteTx,
    fence: base.Fence,
    key: str,
    value: base.Payload,
    history_step_id: int,
    checkpoint: base.NewStep | None,
) -> Write:
    if checkpoint is not None:
        refused = _insert_checkpoint(tx, fence, checkpoint)
        if refused is not None:
            return refused
    wid = fence.workflow_id
    kdig = base.digest(key)
    text, ser = value.text, value.serializer
    cur = tx.execute(_UPSERT_EVENT, (wid, key, kdig, text, ser, tx.now, wid, fence.claim_token))
    if cur.rowcount != 1:  # only without a checkpoint (its insert checked the same fence)
        return Write.FENCED
    tx.execute(_UPSERT_HISTORY, (wid, history_step_id, key, kdig, text, ser, tx.now))
    tx.emit("evt", wid, kdig)
    return Write.APPLIED


_STATE_OF_W = ", ".join("w." + c.strip() for c in STATE_COLUMNS.split(","))
# One statement, so one snapshot: the writer's state and the event's value.
_GET_EVENT = f"""
SELECT {_STATE_OF_W}, e.value AS value, e.serializer AS serializer
FROM (SELECT 1) AS one
LEFT JOIN dbos_workflows w ON w.workflow_id = ?
LEFT JOIN dbos_events e ON e.workflow_id = ? AND e.key_digest = ?
"""


def get_event(conn: sqlite3.Connection, workflow_id: str, key: str) -> base.EventRead:
    r = conn.execute(_GET_EVENT, (workflow_id, workflow_id, base.digest(key))).fetchone()
    state = base.WorkflowState(exists=False) if r["workflow_id"] is None else to_state(r)
    value = records.payload_of(r["value"], r["serializer"])
    return base.EventRead(value, value is not None, state)


def get_all_events(conn: sqlite3.Connection, workflow_id: str) -> dict[str, base.Payload]:
    rows: list[Any] = conn.execute(
        "SELECT key, value, serializer FROM dbos_events WHERE workflow_id = ? ORDER BY key", (workflow_id,)
    ).fetchall()
    return {r[0]: base.Payload(r[1], r[2]) for r in rows}
