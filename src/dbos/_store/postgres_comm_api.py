"""PostgresStore's messages, events and streams methods (04)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from . import base, records
from . import manage_common as mc
from . import postgres_messages as pmsg
from . import postgres_streams as pstream
from . import textcheck as tc
from .postgres_manage_api import Plumbing
from .postgres_rows import Conn

T = TypeVar("T")


class CommMethods(Plumbing):
    _esql: Any
    _ssql: Any

    # messages and events ----------------------------------------------------------------------------------------

    def send_messages(
        self,
        msgs: Sequence[base.NewMessage],
        *,
        send_to_forks: bool,
        checkpoint: tuple[base.Fence, base.NewStep] | None,
    ) -> base.SendResult:
        for m in msgs:
            tc.check_id(m.message_id, "message ID")
            tc.check_id(m.destination_id, "destination workflow ID")
            if m.topic is not None:
                tc.check_storable_text(m.topic, tc.MAX_NAME_BYTES, "topic")
            records.check_serializer(m.payload)
        if checkpoint is not None:
            records.check_fence(checkpoint[0])
            records.check_step(checkpoint[1])
        elif not msgs:
            return base.SendResult(None, base.Write.APPLIED)
        params = pmsg.send_params(msgs, checkpoint)

        def once(conn: Conn) -> tuple[base.SendResult, list[base.Change]]:
            result, changes, trips = pmsg.send_messages(
                conn, self._esql, msgs, params, send_to_forks=send_to_forks, checkpoint=checkpoint
            )
            self._count("send_messages", round_trips=trips, commit=True)
            return result, changes

        result, changes = self._pooled("send_messages", once)
        self._publish(changes)
        return result

    def consume_message(self, fence: base.Fence, step: base.NewStep, topic: str | None) -> base.ConsumeResult:
        records.check_fence(fence)
        records.check_step(step)
        if topic is not None:
            tc.check_storable_text(topic, tc.MAX_NAME_BYTES, "topic")

        def once(conn: Conn) -> base.ConsumeResult:
            result, trips = pmsg.consume_message(conn, self._esql, fence, step, topic)
            self._count("consume_message", round_trips=trips, commit=True)
            return result

        return self._pooled("consume_message", once)

    def set_event(
        self,
        fence: base.Fence,
        key: str,
        value: base.Payload,
        *,
        history_step_id: int,
        checkpoint: base.NewStep | None,
    ) -> base.Write:
        records.check_fence(fence)
        tc.check_storable_text(key, tc.MAX_NAME_BYTES, "event key")
        records.check_serializer(value)
        if checkpoint is not None:
            records.check_step(checkpoint)

        def once(conn: Conn) -> tuple[base.Write, list[base.Change]]:
            write, changes, trips = pmsg.set_event(
                conn, self._esql, fence, key, value, history_step_id, checkpoint
            )
            self._count("set_event", round_trips=trips, commit=True)
            return write, changes

        write, changes = self._pooled("set_event", once)
        self._publish(changes)
        return write

    def get_event(self, workflow_id: str, key: str) -> base.EventRead:
        tc.check_id(workflow_id)
        tc.check_storable_text(key, tc.MAX_NAME_BYTES, "event key")
        params = {"workflow_id": workflow_id, "key_digest": base.digest(key)}
        row = self._pooled(
            "get_event",
            lambda conn: self._one(conn, "get_event", self._esql.get_event, params, write=False),
        )
        assert row is not None
        return pmsg.event_read(row)

    def get_all_events(self, workflow_id: str) -> dict[str, base.Payload]:
        tc.check_id(workflow_id)
        params = {"workflow_id": workflow_id}
        rows = self._pooled(
            "get_all_events",
            lambda conn: self._all(conn, "get_all_events", self._esql.get_all_events, params, write=False),
        )
        return pmsg.all_events(rows)

    def write_stream(
        self,
        fence: base.Fence,
        key: str,
        value: base.Payload | None,
        *,
        writer_step_id: int,
        step_seq: int | None,
        checkpoint: base.NewStep | None,
    ) -> base.StreamWrite:
        records.check_fence(fence)
        tc.check_storable_text(key, tc.MAX_NAME_BYTES, "stream key")
        records.check_serializer(value)
        mc.check_count(writer_step_id, "writer_step_id")
        mc.check_opt_count(step_seq, "step_seq")
        if checkpoint is not None:
            records.check_step(checkpoint)

        def once(conn: Conn) -> tuple[base.StreamWrite, list[base.Change]]:
            result, changes, trips = pstream.write_stream(
                conn, self._ssql, fence, key, value, writer_step_id, step_seq, checkpoint
            )
            self._count("write_stream", round_trips=trips, commit=True)
            return result, changes

        result, changes = self._pooled("write_stream", once)
        self._publish(changes)
        return result

    def read_stream(
        self, workflow_id: str, key: str, *, from_offset: int, limit: int = 1000
    ) -> base.StreamRead:
        tc.check_id(workflow_id)
        tc.check_storable_text(key, tc.MAX_NAME_BYTES, "stream key")
        mc.check_count(from_offset, "from_offset")
        mc.check_count(limit, "limit", 1)
        params = {
            "workflow_id": workflow_id,
            "key_digest": base.digest(key),
            "from_offset": from_offset,
            "limit": limit,
        }
        rows = self._pooled(
            "read_stream",
            lambda conn: self._all(conn, "read_stream", self._ssql.read, params, write=False),
        )
        return pstream.stream_read(rows)
