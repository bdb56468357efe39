"""Messages and events of the PostgreSQL store around the statements of `postgres_messages_sql` (04 §2-§7;
07 §2.2 "Messages, events and streams"): each function runs one op on a pool connection (one statement, in
autocommit) and returns its result with the changes to publish in-process after commit (other processes get
them by NOTIFY at commit).

A checkpoint refused by a concurrent insert that this statement's snapshot could not see costs one more read
(the existing step), as in `record_step`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import base, records
from .postgres_messages_sql import MessageStatements
from .postgres_rows import Conn, Row, step_row

Changes = list[base.Change]

_CONSUME_ATTEMPTS = 3


def _checkpoint_params(fence: base.Fence, step: base.NewStep) -> dict[str, Any]:
    return records.step_params(fence, step)


def send_params(
    msgs: Sequence[base.NewMessage], checkpoint: tuple[base.Fence, base.NewStep] | None
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "mids": [m.message_id for m in msgs],
        "dests": [m.destination_id for m in msgs],
        "topics": [m.topic for m in msgs],
        "digests": [base.topic_digest(m.topic) for m in msgs],
        "payloads": [m.payload.text for m in msgs],
        "serializers": [m.payload.serializer for m in msgs],
    }
    if checkpoint is not None:
        params |= _checkpoint_params(*checkpoint)
    return params


def _existing_step(conn: Conn, st: MessageStatements, params: dict[str, Any]) -> Row | None:
    return conn.execute(st.step_row, params).fetchone()


def send_messages(
    conn: Conn,
    st: MessageStatements,
    msgs: Sequence[base.NewMessage],
    params: dict[str, Any],
    *,
    send_to_forks: bool,
    checkpoint: tuple[base.Fence, base.NewStep] | None,
) -> tuple[base.SendResult, Changes, int]:
    """The result, the changes to publish, and the round trips made."""
    row = conn.execute(st.send[(checkpoint is not None, send_to_forks)], params).fetchone()
    assert row is not None
    fence_ok, prior_token, inserted, missing, pairs = row[0], row[1], bool(row[2]), row[3], row[4]
    if checkpoint is not None:
        write_token = checkpoint[1].write_token
        if not fence_ok:
            return base.SendResult(None, base.Write.FENCED), [], 1
        if prior_token is not None:
            return base.SendResult(None, records.step_verdict((prior_token,), write_token)), [], 1
        if missing is None and not inserted:  # refused by a checkpoint committed after our snapshot
            existing = _existing_step(conn, st, params)
            verdict = records.step_verdict(None if existing is None else (existing[9],), write_token)
            return base.SendResult(None, verdict), [], 2
    if missing is not None:
        return base.SendResult(missing, base.Write.APPLIED), [], 1  # nothing written, nothing refused
    keys = dict.fromkeys((m.destination_id, base.topic_digest(m.topic)) for m in msgs)
    keys |= dict.fromkeys((str(p[0]), str(p[1])) for p in pairs or ())
    return base.SendResult(None, base.Write.APPLIED), [base.Change("msg", k) for k in keys], 1


def consume_message(
    conn: Conn, st: MessageStatements, fence: base.Fence, step: base.NewStep, topic: str | None
) -> tuple[base.ConsumeResult, int]:
    params = records.step_params(fence, step) | {"topic_digest": base.topic_digest(topic)}
    trips = 0
    for _ in range(_CONSUME_ATTEMPTS):
        row = conn.execute(st.consume, params).fetchone()
        trips += 1
        assert row is not None
        fence_ok, had_message, src = bool(row[0]), bool(row[1]), row[2]
        if not fence_ok:
            return base.ConsumeResult(base.Write.FENCED, None), trips
        if src == 0:
            return base.ConsumeResult(base.Write.APPLIED, step_row(row[3:])), trips
        if src == 1:
            found = step_row(row[3:])
            return base.ConsumeResult(
                records.step_verdict((found.write_token,), step.write_token), found
            ), trips
        if not had_message:
            return base.ConsumeResult(base.Write.APPLIED, None), trips
        # A message was there, but the checkpoint was refused by one committed after our snapshot.
        existing = _existing_step(conn, st, params)
        trips += 1
        if existing is not None:
            found = step_row(existing)
            return base.ConsumeResult(
                records.step_verdict((found.write_token,), step.write_token), found
            ), trips
    raise base.UnknownStorageError(
        f"recv step {step.step_id} of workflow {fence.workflow_id!r} was refused, but no such step exists "
        f"(after {_CONSUME_ATTEMPTS} attempts)",
        op="consume_message",
    )


def set_event(
    conn: Conn,
    st: MessageStatements,
    fence: base.Fence,
    key: str,
    value: base.Payload,
    history_step_id: int,
    checkpoint: base.NewStep | None,
) -> tuple[base.Write, Changes, int]:
    key_digest = base.digest(key)
    params: dict[str, Any] = {
        "workflow_id": fence.workflow_id,
        "claim_token": fence.claim_token,
        "key": key,
        "key_digest": key_digest,
        "value": value.text,
        "value_serializer": value.serializer,
        "history_step_id": history_step_id,
    }
    if checkpoint is not None:
        params |= _checkpoint_params(fence, checkpoint)
    row = conn.execute(st.set_event[checkpoint is not None], params).fetchone()
    assert row is not None
    fence_ok, prior_token, inserted = bool(row[0]), row[1], bool(row[2])
    if not fence_ok:
        return base.Write.FENCED, [], 1
    if checkpoint is not None:
        if prior_token is not None:
            return records.step_verdict((prior_token,), checkpoint.write_token), [], 1
        if not inserted:
            existing = _existing_step(conn, st, params)
            verdict = records.step_verdict(
                None if existing is None else (existing[9],), checkpoint.write_token
            )
            return verdict, [], 2
    return base.Write.APPLIED, [base.Change("evt", (fence.workflow_id, key_digest))], 1


def event_read(row: Row) -> base.EventRead:
    state = base.WorkflowState(True, *row[1:8]) if row[0] is not None else base.WorkflowState(False)
    is_set = bool(row[10])
    value = base.Payload(row[8], row[9]) if is_set else None
    return base.EventRead(value, is_set, state)


def all_events(rows: Sequence[Row]) -> dict[str, base.Payload]:
    return {str(r[0]): base.Payload(r[1], r[2]) for r in rows}
