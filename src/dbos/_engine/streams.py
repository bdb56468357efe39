"""Streams (04 §8-§11): write_stream, close_stream, read_stream, read_stream_offset.

A stream is (workflow, key) with gapless 0-based offsets and an out-of-band end marker. Readers stop at the end
marker, or when the writer has stopped and the next offset is empty (its state is read before the values, so
everything written before it stopped is drained). In a workflow body every read outcome is one checkpointed step,
recorded as a tagged value so that "end of stream" and a None value stay distinct."""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from .._context import current_or_empty
from .._store.base import TERMINAL_STATUSES, NewStep, Payload, StepRow, Write, digest
from .._validation import _fail, check_identifier
from ..error import (
    DBOSException,
    DBOSNonExistentWorkflowError,
    DBOSStreamNondeterminismError,
    DBOSStreamTimeoutError,
    DBOSWorkflowConflictIDError,
)
from .engine import Engine
from .execution import Execution
from .messaging import FALLBACK_S, Wait, check_key, check_wait_timeout
from .outcomes import replay_step
from .steps import StepCall, begin_step
from .workflows import write_step

WRITE = "DBOS.writeStream"
CLOSE = "DBOS.closeStream"
READ = "DBOS.readStream"
READ_OFFSET = "DBOS.readStreamOffset"
_END = {"dbos_stream": "end"}


# --- writing ------------------------------------------------------------------------------------------------


@dataclass
class StreamWritePlan:
    ex: Execution
    key: str
    payload: Payload | None  # None: close
    call: StepCall | None
    writer_step_id: int
    step_seq: int | None


def plan_write(engine: Engine, key: Any, value: Any, *, close: bool) -> StreamWritePlan:
    ctx = current_or_empty()
    api = "close_stream" if close else "write_stream"
    if ctx.in_transaction:
        raise DBOSException(f"DBOS.{api} cannot be called inside a transaction")
    if ctx.execution is None:
        raise DBOSException(f"DBOS.{api} can only be called from a workflow (its body or one of its steps)")
    k = check_key(key, "stream key")
    payload = None
    if not close:
        payload = engine.serializers.serialize_value(
            value, what=f"value of stream {k!r}", max_bytes=engine.settings.max_payload_bytes
        )
    if not ctx.in_step:
        call = begin_step(CLOSE if close else WRITE)
        assert call is not None
        return StreamWritePlan(call.ex, k, payload, call, call.step_id, None)
    status = ctx.step_status
    seqs = ctx.extras.setdefault("stream_seq", {})
    seq = seqs.get(k, 0)
    seqs[k] = seq + 1  # the k-th write to this key in this attempt of the step (04 §8 rule 4)
    return StreamWritePlan(ctx.execution, k, payload, None, status.step_id if status else 0, seq)


def run_write(engine: Engine, plan: StreamWritePlan) -> None:
    call = plan.call
    if call is not None and call.recorded is not None:
        replay_step(engine, call.recorded)
        return
    name = CLOSE if plan.payload is None else WRITE
    checkpoint = None if call is None else NewStep(call.step_id, name, None, None, secrets.token_hex(16))
    res = engine.db.write_stream(
        plan.ex.fence,
        plan.key,
        plan.payload,
        writer_step_id=plan.writer_step_id,
        step_seq=plan.step_seq,
        checkpoint=checkpoint,
    )
    if res.write is not Write.APPLIED:
        if res.write is Write.FENCED:
            plan.ex.fence_off()
        raise DBOSWorkflowConflictIDError(plan.ex.workflow_id)
    if res.closed and plan.payload is not None:
        err = DBOSException(f"stream '{plan.key}' of workflow '{plan.ex.workflow_id}' is closed")
        if call is not None:
            payload = engine.serializers.serialize_error(err, max_bytes=engine.settings.max_payload_bytes)
            write_step(engine, plan.ex, NewStep(call.step_id, WRITE, None, payload, secrets.token_hex(16)))
        raise err
    if res.closed and call is not None:  # closing a closed stream is a no-op, but the step is recorded
        write_step(engine, plan.ex, NewStep(call.step_id, CLOSE, None, None, secrets.token_hex(16)))


# --- reading ------------------------------------------------------------------------------------------------


def check_offset(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail("offset", value, "must be an int >= 0")
    return int(value)


def _opt_timeout(value: Any) -> float | None:
    return None if value is None else check_wait_timeout(value)


def _poll_cap(value: Any) -> float:
    if value is None:
        return FALLBACK_S
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise _fail("polling_interval_sec", value, "must be a finite number > 0")
    return min(FALLBACK_S, float(value))


@dataclass
class StreamReader:
    """One reader of (workflow, key) from an offset: the state machine behind the sync and async iterators."""

    engine: Engine
    workflow_id: str
    key: str
    offset: int
    timeout_s: float | None
    cap_s: float
    step_name: str = READ
    buffer: list[tuple[int, Payload]] = field(default_factory=list)
    done: bool = False

    def fetch(self) -> tuple[str, Any]:
        """One database check: ("value", v) | ("end", None) | ("missing", None) | ("wait", None)."""
        if self.buffer:
            return self._take()
        read = self.engine.db.read_stream(self.workflow_id, self.key, from_offset=self.offset, limit=1000)
        if read.values:
            self.buffer = list(read.values)
            return self._take()
        if read.end_offset is not None and read.end_offset <= self.offset:
            return "end", None
        if not read.writer.exists:
            return "missing", None
        if read.writer.status in TERMINAL_STATUSES:
            return "end", None
        if (
            read.end_offset is not None
        ):  # closed earlier than this offset? (end_offset > offset with no values)
            return "end", None
        return "wait", None

    def _take(self) -> tuple[str, Any]:
        off, payload = self.buffer.pop(0)
        self.offset = off + 1
        return "value", self.engine.serializers.deserialize_value(payload)

    def keys(self) -> list[tuple[str | None, ...]]:
        return [("stream", self.workflow_id, digest(self.key)), ("wf", self.workflow_id)]

    def timed_out(self) -> DBOSStreamTimeoutError:
        return DBOSStreamTimeoutError(self.workflow_id, self.key, self.timeout_s)

    def next_outcome(self, ex: Execution | None) -> tuple[str, Any]:
        """Block until the next outcome; raises the stream errors."""
        started = time.monotonic()
        with Wait(self.engine, self.keys(), ex) as w:
            while True:
                kind, value = self.fetch()
                if kind != "wait":
                    return kind, value
                left = None if self.timeout_s is None else self.timeout_s - (time.monotonic() - started)
                if left is not None and left <= 0:
                    raise self.timed_out()
                w.waiter.wait(self.cap_s if left is None else min(self.cap_s, left))
                w.after_wake()

    async def next_outcome_async(self, ex: Execution | None) -> tuple[str, Any]:
        started = time.monotonic()
        with Wait(self.engine, self.keys(), ex) as w:
            while True:
                kind, value = await self.engine.io(self.fetch)
                if kind != "wait":
                    return kind, value
                left = None if self.timeout_s is None else self.timeout_s - (time.monotonic() - started)
                if left is not None and left <= 0:
                    raise self.timed_out()
                await w.waiter.wait_async(self.cap_s if left is None else min(self.cap_s, left))
                w.after_wake()


def make_reader(
    engine: Engine, workflow_id: Any, key: Any, offset: Any, timeout: Any, poll: Any
) -> StreamReader:
    ctx = current_or_empty()
    if ctx.in_transaction:
        raise DBOSException("DBOS.read_stream cannot be called inside a transaction")
    return StreamReader(
        engine,
        check_identifier(workflow_id, "workflow_id"),
        check_key(key, "stream key"),
        check_offset(offset),
        _opt_timeout(timeout),
        _poll_cap(poll),
    )


# --- checkpointed reads in a workflow body ------------------------------------------------------------------


def _body() -> Execution | None:
    ctx = current_or_empty()
    return None if ctx.execution is None or ctx.in_step or ctx.in_transaction else ctx.execution


class _Reading:
    """Refuses a checkpointed read while another checkpointed read of the workflow is waiting (04 §10 rule 9)."""

    def __init__(self, engine: Engine, ex: Execution, call: StepCall, key: str) -> None:
        self.engine, self.ex, self.call, self.key = engine, ex, call, key

    def __enter__(self) -> _Reading:
        if self.ex.extras.get("stream_reading"):
            err = DBOSStreamNondeterminismError(self.ex.workflow_id, self.key)
            _record_error(self.engine, self.call, err)
            raise err
        self.ex.extras["stream_reading"] = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.ex.extras["stream_reading"] = False


def _record(engine: Engine, call: StepCall, tagged: Any) -> None:
    out = engine.serializers.serialize_value(
        tagged, what="stream read", max_bytes=engine.settings.max_payload_bytes
    )
    write_step(engine, call.ex, NewStep(call.step_id, call.name, out, None, secrets.token_hex(16)))


def _record_error(engine: Engine, call: StepCall, err: Exception) -> None:
    payload = engine.serializers.serialize_error(err, max_bytes=engine.settings.max_payload_bytes)
    write_step(engine, call.ex, NewStep(call.step_id, call.name, None, payload, secrets.token_hex(16)))


def _replayed(engine: Engine, row: StepRow) -> tuple[str, Any]:
    tagged = replay_step(engine, row)  # re-raises a recorded error
    if isinstance(tagged, dict) and tagged.get("dbos_stream") == "end":
        return "end", None
    if isinstance(tagged, dict) and tagged.get("dbos_stream") == "value":
        return "value", tagged.get("v")
    return "value", tagged


def _tag(kind: str, value: Any) -> Any:
    return dict(_END) if kind == "end" else {"dbos_stream": "value", "v": value}


def checkpointed_next(reader: StreamReader, ex: Execution) -> tuple[str, Any]:
    engine = reader.engine
    call = begin_step(reader.step_name)
    assert call is not None
    if call.recorded is not None:
        return _replayed(engine, call.recorded)
    with _Reading(engine, ex, call, reader.key):
        try:
            kind, value = _outcome_or_missing(reader, reader.next_outcome(ex))
        except (DBOSStreamTimeoutError, DBOSNonExistentWorkflowError) as e:
            _record_error(engine, call, e)
            raise
    _record(engine, call, _tag(kind, value))
    return kind, value


async def checkpointed_next_async(reader: StreamReader, ex: Execution) -> tuple[str, Any]:
    engine = reader.engine
    call = begin_step(reader.step_name)
    assert call is not None
    if call.recorded is not None:
        return _replayed(engine, call.recorded)
    with _Reading(engine, ex, call, reader.key):
        try:
            kind, value = _outcome_or_missing(reader, await reader.next_outcome_async(ex))
        except (DBOSStreamTimeoutError, DBOSNonExistentWorkflowError) as e:
            await engine.io(_record_error, engine, call, e)
            raise
    await engine.io(_record, engine, call, _tag(kind, value))
    return kind, value


def _outcome_or_missing(reader: StreamReader, outcome: tuple[str, Any]) -> tuple[str, Any]:
    if outcome[0] == "missing":
        raise DBOSNonExistentWorkflowError(reader.workflow_id)
    return outcome


# --- the iterators ------------------------------------------------------------------------------------------


def iterate(reader: StreamReader) -> Iterator[Any]:
    from .._dbos import refuse_on_loop

    refuse_on_loop("DBOS.read_stream", "DBOS.read_stream_async")
    while True:
        ex = _body()
        if ex is not None:
            kind, value = checkpointed_next(reader, ex)
        else:
            kind, value = _outcome_or_missing(reader, reader.next_outcome(None))
        if kind == "end":
            return
        yield value


async def iterate_async(reader: StreamReader) -> AsyncIterator[Any]:
    while True:
        ex = _body()
        if ex is not None:
            kind, value = await checkpointed_next_async(reader, ex)
        else:
            kind, value = _outcome_or_missing(reader, await reader.next_outcome_async(None))
        if kind == "end":
            return
        yield value


def _ended(reader: StreamReader, offset: int) -> DBOSStreamTimeoutError:
    return DBOSStreamTimeoutError(
        reader.workflow_id, reader.key, reader.timeout_s, f"stream ended before offset {offset}"
    )


def read_offset(reader: StreamReader) -> Any:
    """`read_stream_offset`: the value at reader.offset, or DBOSStreamTimeoutError if the stream ended first."""
    reader.step_name = READ_OFFSET
    target = reader.offset
    ex = _body()
    if ex is not None:
        kind, value = checkpointed_next(reader, ex)
    else:
        kind, value = _outcome_or_missing(reader, reader.next_outcome(None))
    if kind == "end":
        raise _ended(reader, target)
    return value


async def read_offset_async(reader: StreamReader) -> Any:
    reader.step_name = READ_OFFSET
    target = reader.offset
    ex = _body()
    if ex is not None:
        kind, value = await checkpointed_next_async(reader, ex)
    else:
        kind, value = _outcome_or_missing(reader, await reader.next_outcome_async(None))
    if kind == "end":
        raise _ended(reader, target)
    return value
