"""The `DBOS` facade's messages and events (04 §2-§7): thin wrappers over `_engine/messaging.py`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from ._engine import messaging as m
from ._engine import streams as st


def _engine() -> Any:
    from ._dbos import current_engine

    return current_engine()


def _refuse_on_loop(api: str) -> None:
    from ._dbos import refuse_on_loop

    refuse_on_loop(f"DBOS.{api}", f"DBOS.{api}_async")


class MessagingAPI:
    """Mixed into `DBOS`; every method is a classmethod."""

    @classmethod
    def send(
        cls,
        destination_id: str,
        message: Any,
        topic: str | None = None,
        *,
        idempotency_key: str | None = None,
        send_to_forks: bool = False,
    ) -> None:
        _refuse_on_loop("send")
        engine = _engine()
        plan = m.plan_send(engine, destination_id, message, topic, idempotency_key, send_to_forks)
        m.run_send(engine, plan, send_to_forks)

    @classmethod
    async def send_async(
        cls,
        destination_id: str,
        message: Any,
        topic: str | None = None,
        *,
        idempotency_key: str | None = None,
        send_to_forks: bool = False,
    ) -> None:
        engine = _engine()
        plan = m.plan_send(engine, destination_id, message, topic, idempotency_key, send_to_forks)
        await engine.io(m.run_send, engine, plan, send_to_forks)

    @classmethod
    def send_bulk(cls, messages: Any, *, send_to_forks: bool = False) -> None:
        _refuse_on_loop("send_bulk")
        engine = _engine()
        m.run_send_bulk(engine, m.plan_send_bulk(engine, messages, send_to_forks), send_to_forks)

    @classmethod
    async def send_bulk_async(cls, messages: Any, *, send_to_forks: bool = False) -> None:
        engine = _engine()
        plan = m.plan_send_bulk(engine, messages, send_to_forks)
        await engine.io(m.run_send_bulk, engine, plan, send_to_forks)

    @classmethod
    def recv(cls, topic: str | None = None, timeout_seconds: float = 60) -> Any:
        _refuse_on_loop("recv")
        plan = m.plan_recv(topic, timeout_seconds)
        return m.recv(_engine(), plan)

    @classmethod
    async def recv_async(cls, topic: str | None = None, timeout_seconds: float = 60) -> Any:
        plan = m.plan_recv(topic, timeout_seconds)
        return await m.recv_async(_engine(), plan)

    @classmethod
    def set_event(cls, key: str, value: Any) -> None:
        _refuse_on_loop("set_event")
        engine = _engine()
        m.run_set_event(engine, m.plan_set_event(engine, key, value))

    @classmethod
    async def set_event_async(cls, key: str, value: Any) -> None:
        engine = _engine()
        plan = m.plan_set_event(engine, key, value)
        await engine.io(m.run_set_event, engine, plan)

    @classmethod
    def get_event(cls, workflow_id: str, key: str, timeout_seconds: float = 60) -> Any:
        _refuse_on_loop("get_event")
        plan = m.plan_get_event(workflow_id, key, timeout_seconds)
        return m.get_event(_engine(), plan)

    @classmethod
    async def get_event_async(cls, workflow_id: str, key: str, timeout_seconds: float = 60) -> Any:
        plan = m.plan_get_event(workflow_id, key, timeout_seconds)
        return await m.get_event_async(_engine(), plan)

    @classmethod
    def get_all_events(cls, workflow_id: str) -> dict[str, Any]:
        from ._engine.recorded import recorded
        from ._validation import check_identifier

        _refuse_on_loop("get_all_events")
        engine = _engine()
        wid = check_identifier(workflow_id, "workflow_id")
        return recorded(engine, m.GET_EVENTS, lambda: m.read_all_events(engine, wid))

    @classmethod
    async def get_all_events_async(cls, workflow_id: str) -> dict[str, Any]:
        from ._engine.recorded import recorded_async
        from ._validation import check_identifier

        engine = _engine()
        wid = check_identifier(workflow_id, "workflow_id")
        return await recorded_async(engine, m.GET_EVENTS, lambda: m.read_all_events(engine, wid))

    # --- streams (04 §8-§11) ---------------------------------------------------------------------------------
    @classmethod
    def write_stream(cls, key: str, value: Any) -> None:
        _refuse_on_loop("write_stream")
        engine = _engine()
        st.run_write(engine, st.plan_write(engine, key, value, close=False))

    @classmethod
    async def write_stream_async(cls, key: str, value: Any) -> None:
        engine = _engine()
        plan = st.plan_write(engine, key, value, close=False)
        await engine.io(st.run_write, engine, plan)

    @classmethod
    def close_stream(cls, key: str) -> None:
        _refuse_on_loop("close_stream")
        engine = _engine()
        st.run_write(engine, st.plan_write(engine, key, None, close=True))

    @classmethod
    async def close_stream_async(cls, key: str) -> None:
        engine = _engine()
        plan = st.plan_write(engine, key, None, close=True)
        await engine.io(st.run_write, engine, plan)

    @classmethod
    def read_stream(
        cls,
        workflow_id: str,
        key: str,
        *,
        offset: int = 0,
        timeout_seconds: float | None = None,
        polling_interval_sec: float | None = None,
    ) -> Iterator[Any]:
        """Validated now; the returned iterator yields the values in order and stops at the end (04 §10)."""
        reader = st.make_reader(_engine(), workflow_id, key, offset, timeout_seconds, polling_interval_sec)
        return st.iterate(reader)

    @classmethod
    def read_stream_async(
        cls,
        workflow_id: str,
        key: str,
        *,
        offset: int = 0,
        timeout_seconds: float | None = None,
        polling_interval_sec: float | None = None,
    ) -> AsyncIterator[Any]:
        reader = st.make_reader(_engine(), workflow_id, key, offset, timeout_seconds, polling_interval_sec)
        return st.iterate_async(reader)

    @classmethod
    def read_stream_offset(
        cls,
        workflow_id: str,
        key: str,
        offset: int,
        *,
        timeout_seconds: float | None = None,
        polling_interval_sec: float | None = None,
    ) -> Any:
        _refuse_on_loop("read_stream_offset")
        reader = st.make_reader(_engine(), workflow_id, key, offset, timeout_seconds, polling_interval_sec)
        return st.read_offset(reader)

    @classmethod
    async def read_stream_offset_async(
        cls,
        workflow_id: str,
        key: str,
        offset: int,
        *,
        timeout_seconds: float | None = None,
        polling_interval_sec: float | None = None,
    ) -> Any:
        reader = st.make_reader(_engine(), workflow_id, key, offset, timeout_seconds, polling_interval_sec)
        return await st.read_offset_async(reader)
