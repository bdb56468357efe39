"""Messages and events (04 §2-§7): send, recv, set_event, get_event, get_all_events.

Where each call may run and how it is checkpointed is 04 §1.1. Waits are event-driven: a waiter registers under
("msg", workflow, topic digest) or ("evt", workflow, key digest) before its final database check, writers in this
process signal after commit, other processes arrive through the store's change feed; a 1 s fallback re-check
covers lost notifications. `recv` and `get_event` in a workflow body record their absolute wait deadline as the
`DBOS.sleep` step that follows their own, so a recovered wait only waits for the remainder."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from .._context import ContextState, current_or_empty
from .._store.base import (
    EventRead,
    NewMessage,
    NewStep,
    Payload,
    StepRow,
    Write,
    digest,
    message_id_for_key,
    topic_digest,
)
from .._validation import _fail, _finite_number, check_identifier, check_topic
from ..error import DBOSException, DBOSNonExistentWorkflowError, DBOSWorkflowConflictIDError
from .engine import Engine
from .execution import Execution
from .outcomes import replay_step
from .steps import SLEEP, StepCall, begin_step, deadline_after
from .waits import Waiter
from .workflows import verify_recorded, write_step

SEND = "DBOS.send"
RECV = "DBOS.recv"
SET_EVENT = "DBOS.setEvent"
GET_EVENT = "DBOS.getEvent"
GET_EVENTS = "DBOS.get_events"
FALLBACK_S = 1.0
MAX_WAIT_S = 315_360_000


# --- validation ---------------------------------------------------------------------------------------------


def check_wait_timeout(value: Any, what: str = "timeout_seconds") -> float:
    seconds = _finite_number(value, what)
    if seconds < 0:
        raise _fail(what, value, "must be at least 0")
    return seconds


def check_key(value: Any, what: str = "key") -> str:
    key = check_topic(value, what)
    if key is None:
        raise _fail(what, value, "must be a str, not None")
    return key


def _refuse_in_transaction(ctx: ContextState, api: str) -> None:
    if ctx.in_transaction:
        raise DBOSException(f"DBOS.{api} cannot be called inside a transaction")


def _body(ctx: ContextState) -> Execution | None:
    """The execution whose *body* is running here (not a step, not a transaction)."""
    if ctx.execution is None or ctx.in_step or ctx.in_transaction:
        return None
    return ctx.execution


def _serialize(engine: Engine, value: Any, what: str) -> Payload:
    return engine.serializers.serialize_value(value, what=what, max_bytes=engine.settings.max_payload_bytes)


def _none_payload(engine: Engine) -> Payload:
    return _serialize(engine, None, "recorded value")


# --- send ---------------------------------------------------------------------------------------------------


@dataclass
class SendPlan:
    message: NewMessage
    call: StepCall | None  # the body's DBOS.send step


def _message_id(ctx: ContextState, destination: str, key: str | None) -> str:
    if key is not None:
        return message_id_for_key(destination, key)
    status = ctx.step_status
    if ctx.in_step and ctx.execution is not None and status is not None:
        # A step is not checkpointed per send: derive a key from (workflow, step, k) so a retried or re-executed
        # step delivers each of its sends once (04 §2 rule 6).
        k = ctx.extras.get("sends", 0)
        ctx.extras["sends"] = k + 1
        return message_id_for_key(destination, f"dbos-step:{ctx.execution.workflow_id}:{status.step_id}:{k}")
    return "u:" + uuid.uuid4().hex


def check_send_args(
    destination_id: Any, topic: Any, idempotency_key: Any, send_to_forks: Any
) -> tuple[str, str | None, str | None]:
    """The validated (destination, topic, idempotency key) of a send (04 §1.2), shared with DBOSClient."""
    dest = check_identifier(destination_id, "destination_id")
    t = check_topic(topic, "topic")
    key = None if idempotency_key is None else check_identifier(idempotency_key, "idempotency_key")
    if not isinstance(send_to_forks, bool):
        raise _fail("send_to_forks", send_to_forks, "must be a bool")
    return dest, t, key


def plan_send(
    engine: Engine, destination_id: Any, message: Any, topic: Any, idempotency_key: Any, send_to_forks: Any
) -> SendPlan:
    """Validate, serialize and take the step ID (synchronously, before any I/O)."""
    ctx = current_or_empty()
    _refuse_in_transaction(ctx, "send")
    dest, t, key = check_send_args(destination_id, topic, idempotency_key, send_to_forks)
    payload = _serialize(engine, message, "message")
    call = begin_step(SEND) if _body(ctx) is not None else None
    msg = NewMessage(_message_id(ctx, dest, key), dest, t, payload)
    return SendPlan(msg, call)


def run_send(engine: Engine, plan: SendPlan, send_to_forks: bool) -> None:
    call = plan.call
    if call is not None and call.recorded is not None:
        replay_step(engine, call.recorded)  # re-raises a recorded error
        return
    checkpoint = None
    if call is not None:
        checkpoint = (call.ex.fence, NewStep(call.step_id, SEND, None, None, secrets.token_hex(16)))
    res = engine.db.send_messages([plan.message], send_to_forks=send_to_forks, checkpoint=checkpoint)
    if res.missing is not None:
        err = DBOSNonExistentWorkflowError(res.missing)
        if call is not None:
            payload = engine.serializers.serialize_error(err, max_bytes=engine.settings.max_payload_bytes)
            write_step(engine, call.ex, NewStep(call.step_id, SEND, None, payload, secrets.token_hex(16)))
        raise err
    if call is not None:
        _check_write(call.ex, res.write)


def _check_write(ex: Execution, w: Write) -> None:
    if w is Write.APPLIED:
        ex.check_boundary()
        return
    if w is Write.FENCED:
        ex.fence_off()
    raise DBOSWorkflowConflictIDError(ex.workflow_id)


# --- send_bulk ----------------------------------------------------------------------------------------------

SEND_BULK = "DBOS.send_bulk"
MAX_BULK = 10_000


@dataclass(frozen=True)
class SendMessage:
    """One message of `DBOS.send_bulk` (04 §3)."""

    destination_id: str
    message: Any
    topic: str | None = None
    idempotency_key: str | None = None


@dataclass
class BulkPlan:
    messages: list[NewMessage]
    call: StepCall | None


def plan_send_bulk(engine: Engine, messages: Any, send_to_forks: Any) -> BulkPlan:
    ctx = current_or_empty()
    _refuse_in_transaction(ctx, "send_bulk")
    if (
        isinstance(messages, (str, bytes))
        or not hasattr(messages, "__len__")
        or not hasattr(messages, "__iter__")
    ):
        raise _fail("messages", messages, "must be a sequence of SendMessage")
    if len(messages) > MAX_BULK:
        raise _fail("messages", f"{len(messages)} messages", f"at most {MAX_BULK} per call")
    if not isinstance(send_to_forks, bool):
        raise _fail("send_to_forks", send_to_forks, "must be a bool")
    out: list[NewMessage] = []
    seen: set[tuple[str, str]] = set()
    for i, m in enumerate(messages):
        if not isinstance(m, SendMessage):
            raise _fail(f"messages[{i}]", m, "must be a SendMessage")
        dest = check_identifier(m.destination_id, f"messages[{i}].destination_id")
        topic = check_topic(m.topic, f"messages[{i}].topic")
        key = (
            None
            if m.idempotency_key is None
            else check_identifier(m.idempotency_key, f"messages[{i}].idempotency_key")
        )
        if key is not None:
            if (dest, key) in seen:
                raise DBOSException(f"send_bulk: messages to {dest!r} share idempotency_key {key!r}")
            seen.add((dest, key))
        payload = _serialize(engine, m.message, f"messages[{i}].message")
        out.append(NewMessage(_message_id(ctx, dest, key), dest, topic, payload))
    call = begin_step(SEND_BULK) if _body(ctx) is not None else None
    return BulkPlan(out, call)


def run_send_bulk(engine: Engine, plan: BulkPlan, send_to_forks: bool) -> None:
    call = plan.call
    if call is not None and call.recorded is not None:
        replay_step(engine, call.recorded)
        return
    checkpoint = None
    if call is not None:
        checkpoint = (call.ex.fence, NewStep(call.step_id, SEND_BULK, None, None, secrets.token_hex(16)))
    if not plan.messages and checkpoint is None:
        return
    res = engine.db.send_messages(plan.messages, send_to_forks=send_to_forks, checkpoint=checkpoint)
    if res.missing is not None:
        err = DBOSNonExistentWorkflowError(res.missing)
        if call is not None:
            payload = engine.serializers.serialize_error(err, max_bytes=engine.settings.max_payload_bytes)
            write_step(
                engine, call.ex, NewStep(call.step_id, SEND_BULK, None, payload, secrets.token_hex(16))
            )
        raise err
    if call is not None:
        _check_write(call.ex, res.write)


# --- durable wait deadlines ---------------------------------------------------------------------------------


@dataclass
class WaitCall:
    """A recv or get_event in a workflow body: its own step and the DBOS.sleep step that holds its deadline."""

    call: StepCall
    sleep_id: int
    name: str


def begin_wait(ctx: ContextState, name: str) -> WaitCall | None:
    ex = _body(ctx)
    if ex is None:
        return None
    call = begin_step(name)
    assert call is not None
    sleep_id = ex.next_step_id()
    return WaitCall(call, sleep_id, name)


def wait_deadline_ms(engine: Engine, w: WaitCall, timeout_s: float) -> int:
    """The recorded absolute deadline of the wait, recording it first on a first execution (04 §1.3 rule 3)."""
    ex = w.call.ex
    recorded = ex.checkpoints.get(w.sleep_id)
    if recorded is not None:
        verify_recorded(ex, w.sleep_id, SLEEP, recorded.name)
        return int(replay_step(engine, recorded))
    deadline = deadline_after(engine, timeout_s)
    out = _serialize(engine, deadline, "wait deadline")
    write_step(engine, ex, NewStep(w.sleep_id, SLEEP, out, None, secrets.token_hex(16)))
    return deadline


def record_value(engine: Engine, w: WaitCall, payload: Payload) -> None:
    write_step(engine, w.call.ex, NewStep(w.call.step_id, w.name, payload, None, secrets.token_hex(16)))


class Wait:
    """Registration of one waiter under some keys (before the final check), shared by sync and async drivers."""

    def __init__(self, engine: Engine, keys: list[tuple[str | None, ...]], ex: Execution | None) -> None:
        self.engine = engine
        self.keys = keys
        self.ex = ex
        self.waiter = ex.waiter if ex is not None else Waiter()

    def __enter__(self) -> Wait:
        self.engine.wake.register(self.keys, self.waiter)
        return self

    def __exit__(self, *exc: object) -> None:
        self.engine.wake.unregister(self.keys, self.waiter)

    def after_wake(self) -> None:
        if self.ex is not None:
            self.ex.check_boundary()
        elif self.engine.stopping.is_set():
            raise DBOSException("DBOS was destroyed")

    def slice_s(self, deadline_ms: int) -> float:
        return max(0.0, min(FALLBACK_S, (deadline_ms - self.engine.db.now_ms()) / 1000))


# --- recv ---------------------------------------------------------------------------------------------------


@dataclass
class RecvPlan:
    wait: WaitCall
    topic: str | None
    timeout_s: float


def plan_recv(topic: Any, timeout_seconds: Any) -> RecvPlan:
    ctx = current_or_empty()
    if _body(ctx) is None:
        raise DBOSException("recv can only be called from a workflow body")
    t = check_topic(topic, "topic")
    timeout = check_wait_timeout(timeout_seconds)
    w = begin_wait(ctx, RECV)
    assert w is not None
    return RecvPlan(w, t, timeout)


class Receiving:
    """Marks (workflow, topic) as being received, refusing a concurrent second recv (04 §4 rule 7)."""

    def __init__(self, engine: Engine, plan: RecvPlan) -> None:
        self.engine = engine
        self.plan = plan
        self.ex = plan.wait.call.ex
        self.marker = ("recv", plan.topic)

    def __enter__(self) -> Receiving:
        active = self.ex.extras.setdefault("receiving", set())
        if self.marker in active:
            err = DBOSException(
                f"another recv on topic {self.plan.topic!r} is already waiting in this workflow"
            )
            payload = self.engine.serializers.serialize_error(
                err, max_bytes=self.engine.settings.max_payload_bytes
            )
            call = self.plan.wait.call
            write_step(
                self.engine, self.ex, NewStep(call.step_id, RECV, None, payload, secrets.token_hex(16))
            )
            raise err
        active.add(self.marker)
        return self

    def __exit__(self, *exc: object) -> None:
        self.ex.extras.get("receiving", set()).discard(self.marker)


def recv_replayed(engine: Engine, plan: RecvPlan) -> tuple[bool, Any]:
    recorded = plan.wait.call.recorded
    if recorded is None:
        return False, None
    return True, replay_step(engine, recorded)


def try_consume(engine: Engine, plan: RecvPlan, token: str) -> StepRow | None:
    call = plan.wait.call
    res = engine.db.consume_message(call.ex.fence, NewStep(call.step_id, RECV, None, None, token), plan.topic)
    if res.write is not Write.APPLIED:
        _check_write(call.ex, res.write)
    return res.step


def recv(engine: Engine, plan: RecvPlan) -> Any:
    done, value = recv_replayed(engine, plan)
    if done:
        return value
    with Receiving(engine, plan):
        deadline = wait_deadline_ms(engine, plan.wait, plan.timeout_s)
        ex = plan.wait.call.ex
        token = secrets.token_hex(16)
        with Wait(engine, [("msg", ex.workflow_id, topic_digest(plan.topic))], ex) as w:
            while True:
                step = try_consume(engine, plan, token)
                if step is not None:
                    return replay_step(engine, step)
                if engine.db.now_ms() >= deadline:
                    record_value(engine, plan.wait, _none_payload(engine))
                    return None
                w.waiter.wait(w.slice_s(deadline))
                w.after_wake()


async def recv_async(engine: Engine, plan: RecvPlan) -> Any:
    done, value = recv_replayed(engine, plan)
    if done:
        return value
    with Receiving(engine, plan):
        deadline = await engine.io(wait_deadline_ms, engine, plan.wait, plan.timeout_s)
        ex = plan.wait.call.ex
        token = secrets.token_hex(16)
        with Wait(engine, [("msg", ex.workflow_id, topic_digest(plan.topic))], ex) as w:
            while True:
                step = await engine.io(try_consume, engine, plan, token)
                if step is not None:
                    return replay_step(engine, step)
                if engine.db.now_ms() >= deadline:
                    await engine.io(record_value, engine, plan.wait, _none_payload(engine))
                    return None
                await w.waiter.wait_async(w.slice_s(deadline))
                w.after_wake()


# --- set_event ----------------------------------------------------------------------------------------------


@dataclass
class SetEventPlan:
    ex: Execution
    key: str
    payload: Payload
    history_step_id: int
    call: StepCall | None


def plan_set_event(engine: Engine, key: Any, value: Any) -> SetEventPlan:
    ctx = current_or_empty()
    _refuse_in_transaction(ctx, "set_event")
    if ctx.execution is None:
        raise DBOSException("set_event can only be called from a workflow (its body or one of its steps)")
    k = check_key(key)
    payload = _serialize(engine, value, f"value of event {k!r}")
    call = begin_step(SET_EVENT) if _body(ctx) is not None else None
    if call is not None:
        return SetEventPlan(call.ex, k, payload, call.step_id, call)
    status = ctx.step_status
    step_id = status.step_id if status is not None else 0
    return SetEventPlan(ctx.execution, k, payload, step_id, None)


def run_set_event(engine: Engine, plan: SetEventPlan) -> None:
    call = plan.call
    if call is not None and call.recorded is not None:
        return
    checkpoint = None if call is None else NewStep(call.step_id, SET_EVENT, None, None, secrets.token_hex(16))
    w = engine.db.set_event(
        plan.ex.fence, plan.key, plan.payload, history_step_id=plan.history_step_id, checkpoint=checkpoint
    )
    if w is not Write.APPLIED:
        _check_write(plan.ex, w)


# --- get_event ----------------------------------------------------------------------------------------------


@dataclass
class GetEventPlan:
    workflow_id: str
    key: str
    timeout_s: float
    wait: WaitCall | None
    ex: Execution | None


def plan_get_event(workflow_id: Any, key: Any, timeout_seconds: Any) -> GetEventPlan:
    ctx = current_or_empty()
    _refuse_in_transaction(ctx, "get_event")
    wid = check_identifier(workflow_id, "workflow_id")
    k = check_key(key)
    timeout = check_wait_timeout(timeout_seconds)
    w = begin_wait(ctx, GET_EVENT)
    return GetEventPlan(wid, k, timeout, w, _body(ctx))


def _event_outcome(engine: Engine, read: EventRead) -> tuple[bool, Any]:
    """(done, value): a set key, or a writer that can no longer set it (SUCCESS or ERROR)."""
    if read.is_set:
        return True, None if read.value is None else engine.serializers.deserialize_value(read.value)
    if read.writer.exists and read.writer.status in ("SUCCESS", "ERROR"):
        return True, None
    return False, None


def _event_keys(plan: GetEventPlan) -> list[tuple[str | None, ...]]:
    return [("evt", plan.workflow_id, digest(plan.key)), ("wf", plan.workflow_id)]


def _get_event_deadline(engine: Engine, plan: GetEventPlan) -> int:
    if plan.wait is None:
        return deadline_after(engine, plan.timeout_s)
    return wait_deadline_ms(engine, plan.wait, plan.timeout_s)


def _finish_get_event(engine: Engine, plan: GetEventPlan, read: EventRead | None) -> Any:
    """Record (in a body) and return the outcome of a finished read, None on timeout."""
    value = _event_outcome(engine, read)[1] if read is not None else None
    if plan.wait is not None:
        payload = read.value if read is not None and read.is_set and read.value is not None else None
        record_value(engine, plan.wait, payload or _serialize(engine, value, "event value"))
    return value


def get_event(engine: Engine, plan: GetEventPlan) -> Any:
    if plan.wait is not None and plan.wait.call.recorded is not None:
        return replay_step(engine, plan.wait.call.recorded)
    deadline = _get_event_deadline(engine, plan)
    with Wait(engine, _event_keys(plan), plan.ex) as w:
        while True:
            read = engine.db.get_event(plan.workflow_id, plan.key)
            done, _ = _event_outcome(engine, read)
            if done:
                return _finish_get_event(engine, plan, read)
            if engine.db.now_ms() >= deadline:
                return _finish_get_event(engine, plan, None)
            w.waiter.wait(w.slice_s(deadline))
            w.after_wake()


async def get_event_async(engine: Engine, plan: GetEventPlan) -> Any:
    if plan.wait is not None and plan.wait.call.recorded is not None:
        return replay_step(engine, plan.wait.call.recorded)
    deadline = await engine.io(_get_event_deadline, engine, plan)
    with Wait(engine, _event_keys(plan), plan.ex) as w:
        while True:
            read = await engine.io(engine.db.get_event, plan.workflow_id, plan.key)
            done, _ = _event_outcome(engine, read)
            if done:
                return await engine.io(_finish_get_event, engine, plan, read)
            if engine.db.now_ms() >= deadline:
                return await engine.io(_finish_get_event, engine, plan, None)
            await w.waiter.wait_async(w.slice_s(deadline))
            w.after_wake()


# --- get_all_events -----------------------------------------------------------------------------------------


def read_all_events(engine: Engine, workflow_id: str) -> dict[str, Any]:
    raw = engine.db.get_all_events(workflow_id)
    return {k: engine.serializers.deserialize_value(v) for k, v in raw.items()}
