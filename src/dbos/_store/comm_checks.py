"""Argument checks of the messages, events and streams ops (04), shared by both backends so that they refuse
exactly the same input with exactly the same error."""

from __future__ import annotations

from collections.abc import Sequence

from . import base, records
from . import manage_common as mc
from . import textcheck as tc


def _key(key: str, what: str) -> None:
    tc.check_storable_text(key, tc.MAX_NAME_BYTES, what)  # may be empty


def check_send(msgs: Sequence[base.NewMessage], checkpoint: tuple[base.Fence, base.NewStep] | None) -> None:
    for m in msgs:
        tc.check_id(m.message_id, "message ID")
        tc.check_id(m.destination_id, "destination workflow ID")
        records.check_opt_name(m.topic, "topic")  # may be empty: "" is not the default topic
        records.check_serializer(m.payload)
    if checkpoint is not None:
        records.check_fence(checkpoint[0])
        records.check_step(checkpoint[1])


def check_consume(fence: base.Fence, step: base.NewStep, topic: str | None) -> None:
    records.check_fence(fence)
    records.check_step(step)
    records.check_opt_name(topic, "topic")


def check_set_event(
    fence: base.Fence, key: str, value: base.Payload, checkpoint: base.NewStep | None
) -> None:
    records.check_fence(fence)
    _key(key, "event key")
    records.check_serializer(value)
    if checkpoint is not None:
        records.check_step(checkpoint)


def check_event_read(workflow_id: str, key: str) -> None:
    tc.check_id(workflow_id)
    _key(key, "event key")


def check_stream_write(
    fence: base.Fence,
    key: str,
    value: base.Payload | None,
    writer_step_id: int,
    step_seq: int | None,
    checkpoint: base.NewStep | None,
) -> None:
    records.check_fence(fence)
    _key(key, "stream key")
    records.check_serializer(value)
    mc.check_count(writer_step_id, "writer_step_id")
    mc.check_opt_count(step_seq, "step_seq")
    if checkpoint is not None:
        records.check_step(checkpoint)


def check_stream_read(workflow_id: str, key: str, from_offset: int, limit: int) -> None:
    tc.check_id(workflow_id)
    _key(key, "stream key")
    mc.check_count(from_offset, "from_offset")
    mc.check_count(limit, "limit", 1)
