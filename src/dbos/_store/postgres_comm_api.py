"""PostgresStore's messages, events and streams methods (04)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from . import base
from . import comm_checks as cc
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
        cc.check_send(msgs, checkpoint)
        if checkpoint is None and not msgs:
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
        cc.check_consume(fence, step, topic)

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
        cc.check_set_event(fence, key, value, checkpoint)

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
        cc.check_event_read(workflow_id, key)
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
        cc.check_stream_write(fence, key, value, writer_step_id, step_seq, checkpoint)

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
        cc.check_stream_read(workflow_id, key, from_offset, limit)
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
