"""Starting and running workflows: identity, child starts, inline and background execution, outcomes.

The flow of every start (direct call, start_workflow, recovery dispatch) is:
  `plan_start` (no I/O: validate, check roles, take the ID, serialize) ->
  `insert` (one write; detects an existing ID in the same statement) ->
  `run_execution(_async)` (the body, then one outcome write).
Sync and async drivers differ only in how they call the body and the store.
"""

from __future__ import annotations

import logging
import math
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from .. import _failpoints as fp
from .._context import UNSET, ContextState, current_or_empty, pop, push, take_pending_id
from .._registry import TEMP_PREFIX, FuncInfo, Registry
from .._store.base import Fence, InsertResult, NewStep, NewWorkflow, Outcome, ParentLink, Write
from .._validation import check_derived_id
from ..error import (
    DBOSConflictingWorkflowError,
    DBOSException,
    DBOSNotAuthorizedError,
    DBOSQueueDeduplicatedError,
    DBOSSerializationError,
    DBOSUnexpectedStepError,
    DBOSWorkflowCancelledError,
    DBOSWorkflowConflictIDError,
    DBOSWorkflowFunctionNotFoundError,
)
from .engine import Engine
from .execution import Execution
from .outcomes import await_result, await_result_async, replay_step

_log = logging.getLogger("dbos")
GET_RESULT = "DBOS.getResult"


@dataclass
class Auth:
    user: str | None
    roles: list[str] | None
    assumed_role: str | None


@dataclass(frozen=True)
class QueueTarget:
    """Where and how an enqueue puts its workflow (03 §4); None on a Plan means a direct start."""

    queue_name: str
    priority: int = 0
    partition_key: str | None = None
    deduplication_id: str | None = None
    duplication_policy: Literal["return-existing", "reject"] = "return-existing"
    delay_ms: int = 0
    app_version: str | None = None


@dataclass
class Plan:
    """Everything decided before the insert."""

    info: FuncInfo
    name: str
    workflow_id: str
    receiver: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    auth: Auth
    parent: Execution | None
    step_id: int | None  # the parent's step for the child start
    result_step_id: int | None  # the parent's getResult step (direct calls only)
    replayed_child: str | None  # the child recorded at step_id on replay
    new: NewWorkflow | None = None
    link: ParentLink | None = None
    queue: QueueTarget | None = None


def workflow_name(info: FuncInfo) -> str:
    return info.name if info.kind == "workflow" else TEMP_PREFIX + info.name


def check_roles(registry: Registry, info: FuncInfo, ctx: ContextState) -> str | None:
    """Return the role to assume for this call, or raise DBOSNotAuthorizedError (01 §4.5)."""
    required = registry.roles_for(info)
    if not required:
        return ctx.assumed_role
    roles = ctx.authenticated_roles or []
    for role in required:
        if role in roles:
            return role
    have = "no authenticated roles" if not roles else f"roles {roles}"
    raise DBOSNotAuthorizedError(
        f"Function {info.name} requires one of the roles {required}, but the caller has {have}"
    )


def split_receiver(info: FuncInfo, args: tuple[Any, ...]) -> tuple[Any, tuple[Any, ...]]:
    if info.uses_receiver:
        if not args:
            raise DBOSException(f"{info.name} is a method: call it on an instance or class")
        return args[0], args[1:]
    if info.looks_like_method and info.class_name is None:
        raise DBOSException(
            f"{info.name} looks like a method of a class that is not decorated with @DBOS.dbos_class(); "
            "add @DBOS.dbos_class() to the class"
        )
    return None, args


def verify_recorded(
    ex: Execution, step_id: int, name: str, recorded: str, *, child: str | None = None
) -> None:
    if recorded != name:
        raise DBOSUnexpectedStepError(ex.workflow_id, step_id, name, recorded)
    if child is not None:
        row = ex.checkpoints.get(step_id)
        if row is not None and row.child_workflow_id != child:
            raise DBOSUnexpectedStepError(
                ex.workflow_id, step_id, f"{name}({child})", f"{recorded}({row.child_workflow_id})"
            )


def _take_child_steps(
    engine: Engine, ctx: ContextState, plan_name: str, direct: bool
) -> tuple[int | None, int | None, str | None]:
    ex = ctx.execution
    if ex is None:
        return None, None, None
    step_id = ex.next_step_id()
    result_step = ex.next_step_id() if direct else None
    ex.check_boundary()
    recorded = ex.checkpoints.get(step_id)
    if recorded is None:
        return step_id, result_step, None
    verify_recorded(ex, step_id, plan_name, recorded.name)
    if recorded.error is not None:
        raise engine.serializers.deserialize_error(recorded.error)
    return step_id, result_step, recorded.child_workflow_id


def plan_start(
    engine: Engine,
    info: FuncInfo,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    direct: bool,
    queue: QueueTarget | None = None,
) -> Plan:
    ctx = current_or_empty()
    if ctx.in_step or ctx.in_transaction:
        verb = "enqueue" if queue is not None else "start"
        raise DBOSException(
            f"cannot {verb} workflow {info.name} inside a step or transaction; {verb} it from the workflow body"
        )
    if queue is None and ctx.enqueue is not None and any(v is not None for v in vars(ctx.enqueue).values()):
        raise DBOSException(
            f"SetEnqueueOptions applies only to enqueues (Queue.enqueue); {info.name} was started directly"
        )
    receiver, args = split_receiver(info, args)
    name = workflow_name(info)
    pending = take_pending_id()
    auth = Auth(ctx.authenticated_user, ctx.authenticated_roles, check_roles(engine.registry, info, ctx))
    step_id, result_step, replayed = _take_child_steps(engine, ctx, name, direct)
    plan = Plan(info, name, "", receiver, args, kwargs, auth, ctx.execution, step_id, result_step, replayed)
    plan.queue = queue
    if replayed is not None:
        plan.workflow_id = replayed
        return plan
    parent = ctx.execution
    wid = pending or (f"{parent.workflow_id}-{step_id}" if parent is not None else str(uuid.uuid4()))
    if parent is not None and wid == parent.workflow_id:
        raise DBOSException(f"workflow {wid} cannot start a child with its own ID (it would wait for itself)")
    plan.workflow_id = check_derived_id(wid)
    plan.new = _new_workflow(engine, plan, ctx)
    if parent is not None and step_id is not None:
        plan.link = ParentLink(parent.fence, step_id, name, secrets.token_hex(16))
    return plan


def _deadline(ctx: ContextState, *, queued: bool) -> tuple[int | None, int | None, bool]:
    """(timeout_ms, deadline_ms, deadline_from_now) from the context (02 §2 rules 2-3). A queued workflow's
    own timeout starts at its first claim (03 §15), so only the timeout is stored."""
    if ctx.timeout is UNSET:
        parent = ctx.execution
        return None, parent.deadline_ms if parent is not None else None, False
    if ctx.timeout is None:
        return None, None, False
    return int(math.ceil(float(ctx.timeout) * 1000)), None, not queued


def _receiver_fields(engine: Engine, plan: Plan) -> tuple[str | None, str | None]:
    """(receiver text, config_name) for instance methods (01 §4.4)."""
    info = plan.info
    if info.method_kind != "instance":
        return None, None
    from .._dbos_class import DBOSConfiguredInstance

    obj = plan.receiver
    if isinstance(obj, DBOSConfiguredInstance):
        if not hasattr(obj, "config_name"):
            raise DBOSException(f"{type(obj).__name__} must call super().__init__(config_name)")
        return None, obj.config_name
    class_name = info.class_name or type(obj).__qualname__
    limit = engine.settings.max_payload_bytes
    try:
        return engine.serializers.serialize_receiver(obj, class_name=class_name, max_bytes=limit), None
    except DBOSSerializationError:
        # A class that pickle cannot name (e.g. defined in a function): store its state; recovery rebuilds
        # the instance from the registered class (01 §4.4 rule 3).
        if "<locals>" not in type(obj).__qualname__ or not hasattr(obj, "__dict__"):
            raise
        state = ReceiverState(dict(vars(obj)))
        return engine.serializers.serialize_receiver(state, class_name=class_name, max_bytes=limit), None


@dataclass
class ReceiverState:
    """The stored state of a plain instance whose class pickle cannot reference by name."""

    state: dict[str, Any]

    def rebuild(self, cls: type) -> Any:
        obj: Any = object.__new__(cls)
        obj.__dict__.update(self.state)
        return obj


def _new_workflow(engine: Engine, plan: Plan, ctx: ContextState) -> NewWorkflow:
    inputs = engine.serializers.serialize_inputs(
        plan.args, plan.kwargs, workflow_name=plan.name, max_bytes=engine.settings.max_payload_bytes
    )
    receiver, config_name = _receiver_fields(engine, plan)
    q = plan.queue
    timeout_ms, deadline_ms, from_now = _deadline(ctx, queued=q is not None)
    common: dict[str, Any] = dict(
        workflow_id=plan.workflow_id,
        name=plan.name,
        class_name=plan.info.class_name,
        config_name=config_name,
        inputs=inputs,
        receiver=receiver,
        creator_token=secrets.token_hex(16),
        timeout_ms=timeout_ms,
        deadline_ms=deadline_ms,
        deadline_from_now=from_now,
        application_name=engine.settings.name,
        app_id=engine.settings.app_id,
        authenticated_user=plan.auth.user,
        authenticated_roles=plan.auth.roles,
        assumed_role=plan.auth.assumed_role,
        parent_workflow_id=plan.parent.workflow_id if plan.parent is not None else None,
    )
    if q is None:
        return NewWorkflow(
            status="PENDING",
            owner=(engine.executor_id, engine.incarnation, secrets.token_hex(16)),
            application_version=engine.application_version,
            recovery_attempts=1,
            **common,
        )
    return NewWorkflow(
        status="DELAYED" if q.delay_ms > 0 else "ENQUEUED",
        owner=None,
        application_version=q.app_version or engine.application_version,
        recovery_attempts=0,
        queue_name=q.queue_name,
        priority=q.priority,
        partition_key=q.partition_key,
        deduplication_id=q.deduplication_id,
        duplication_policy=q.duplication_policy,
        delay_until_ms=engine.db.now_ms() + q.delay_ms if q.delay_ms > 0 else None,
        **common,
    )


def check_insert(plan: Plan, res: InsertResult) -> None:
    """Turn an insert result that is not `created`/`existing`/`dedup_existing` into the error the caller sees."""
    if res.kind in ("created", "existing", "dedup_existing"):
        return
    if res.kind in ("dedup_rejected", "dedup_conflict"):
        raise _dedup_error(plan, res)
    if res.kind == "id_conflict":
        raise DBOSConflictingWorkflowError(
            plan.workflow_id, f"Workflow ID {plan.workflow_id} is already used by workflow {res.name}"
        )
    if plan.parent is not None:
        plan.parent.fence_off()
        raise DBOSWorkflowConflictIDError(plan.parent.workflow_id)
    raise DBOSException(f"unexpected insert result {res.kind} for workflow {plan.workflow_id}")


def _dedup_error(plan: Plan, res: InsertResult) -> DBOSQueueDeduplicatedError:
    q = plan.queue
    queue_name = q.queue_name if q is not None else ""
    dedup = q.deduplication_id if q is not None else ""
    detail = None
    if res.kind == "dedup_conflict":
        detail = (
            f"deduplication ID {dedup!r} on queue {queue_name!r} is held by workflow {res.workflow_id} of function "
            f"{res.name}, not {plan.name}"
        )
    return DBOSQueueDeduplicatedError(
        plan.workflow_id, queue_name, dedup or "", existing_workflow_id=res.workflow_id, detail=detail
    )


def insert(engine: Engine, plan: Plan) -> InsertResult:
    assert plan.new is not None
    res = engine.db.insert_workflow(plan.new, parent=plan.link)
    check_insert(plan, res)
    if res.kind == "created":
        fp.failpoint("workflow.insert.after_commit")
    return res


def execution_for(plan: Plan, res: InsertResult) -> Execution:
    assert plan.new is not None and plan.new.owner is not None
    return Execution(
        workflow_id=plan.workflow_id,
        name=plan.name,
        fence=Fence(plan.workflow_id, plan.new.owner[2]),
        deadline_ms=res.deadline_ms,
        is_async=plan.info.is_async,
    )


# --- running the body ---------------------------------------------------------------------------------------


def body_of(
    info: FuncInfo, receiver: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Callable[[], Any]:
    """The call that runs the workflow body (a temp workflow's body is its single step)."""
    fn = info.func if info.kind == "workflow" else info.wrapper
    assert fn is not None
    call_args = (receiver, *args) if info.uses_receiver else args
    return lambda: fn(*call_args, **kwargs)


def body_context(ex: Execution, auth: Auth) -> ContextState:
    return ContextState(
        execution=ex,
        authenticated_user=auth.user,
        authenticated_roles=auth.roles,
        assumed_role=auth.assumed_role,
    )


def _finish_success(engine: Engine, ex: Execution, value: Any) -> tuple[bool, Any]:
    """Record SUCCESS; (applied, value-or-error-to-raise)."""
    ex.check_boundary()
    try:
        payload = engine.serializers.serialize_value(
            value, what=f"return value of workflow {ex.name}", max_bytes=engine.settings.max_payload_bytes
        )
    except Exception as e:
        return _finish_error(engine, ex, e)
    fp.failpoint("outcome.before_commit")
    res = engine.db.record_outcome(ex.fence, Outcome("SUCCESS", output=payload))
    fp.failpoint("outcome.after_commit")
    return res.applied, value


def _finish_error(engine: Engine, ex: Execution, exc: Exception) -> tuple[bool, Any]:
    ex.check_boundary()
    payload = engine.serializers.serialize_error(exc, max_bytes=engine.settings.max_payload_bytes)
    fp.failpoint("outcome.before_commit")
    res = engine.db.record_outcome(ex.fence, Outcome("ERROR", error=payload))
    fp.failpoint("outcome.after_commit")
    return res.applied, exc


def release(engine: Engine, ex: Execution) -> None:
    """A BaseException escaped: hand the workflow back for recovery (01 §6.3 rule 8)."""
    try:
        engine.db.release([ex.fence], refund_attempt=False)
    except Exception:
        _log.exception("could not release workflow %s; recovery will pick it up", ex.workflow_id)


def _settle(engine: Engine, ex: Execution, step: Callable[[], tuple[bool, Any]]) -> tuple[bool, Any]:
    """Run a finishing step; a boundary stop means 'use the recorded outcome'."""
    try:
        return step()
    except (DBOSWorkflowCancelledError, DBOSWorkflowConflictIDError):
        return False, None


def run_execution(engine: Engine, ex: Execution, body: Callable[[], Any], auth: Auth) -> Any:
    """Run a sync workflow body in this thread and return (or raise) its outcome."""
    engine.add_active(ex)
    token = push(body_context(ex, auth))
    try:
        try:
            value = body()
            applied, result = _settle(engine, ex, lambda: _finish_success(engine, ex, value))
        except (DBOSWorkflowCancelledError, DBOSWorkflowConflictIDError):
            applied, result = False, None
        except Exception as e:
            err = e
            applied, result = _settle(engine, ex, lambda: _finish_error(engine, ex, err))
        except BaseException:
            release(engine, ex)
            raise
    finally:
        pop(token)
        engine.remove_active(ex)
    if applied:
        if isinstance(result, BaseException):
            raise result
        return result
    return await_result(engine, ex.workflow_id)


async def run_execution_async(engine: Engine, ex: Execution, body: Callable[[], Any], auth: Auth) -> Any:
    engine.add_active(ex)
    token = push(body_context(ex, auth))
    try:
        try:
            value = await body()
            applied, result = await engine.io(_settle, engine, ex, lambda: _finish_success(engine, ex, value))
        except (DBOSWorkflowCancelledError, DBOSWorkflowConflictIDError):
            applied, result = False, None
        except Exception as e:
            err = e
            applied, result = await engine.io(_settle, engine, ex, lambda: _finish_error(engine, ex, err))
        except BaseException:
            await engine.io(release, engine, ex)
            raise
    finally:
        pop(token)
        engine.remove_active(ex)
    if applied:
        if isinstance(result, BaseException):
            raise result
        return result
    return await await_result_async(engine, ex.workflow_id)


def run_in_background(
    engine: Engine,
    ex: Execution,
    body: Callable[[], Any],
    auth: Auth,
    on_done: Callable[[], None] | None = None,
) -> None:
    """Start the body on the pool (sync) or DBOS's loop (async); its outcome lives in the database.
    `on_done` runs when the execution has ended in this process (a queue's local slot is then free)."""
    if ex.is_async:

        async def runner() -> None:
            try:
                await run_execution_async(engine, ex, body, auth)
            except BaseException:
                pass
            finally:
                if on_done is not None:
                    on_done()

        engine.run_coroutine(runner())
        return

    def task() -> None:
        try:
            run_execution(engine, ex, body, auth)
        except BaseException:
            pass
        finally:
            if on_done is not None:
                on_done()

    engine.run_in_thread(task)


# --- parent-side checkpoints ----------------------------------------------------------------------------------


def record_result_step(
    engine: Engine, parent: Execution, step_id: int, child_id: str, value: Any, exc: Exception | None
) -> None:
    s = engine.serializers
    limit = engine.settings.max_payload_bytes
    if exc is not None:
        step = NewStep(
            step_id,
            GET_RESULT,
            None,
            s.serialize_error(exc, max_bytes=limit),
            secrets.token_hex(16),
            child_id,
        )
    else:
        out = s.serialize_value(value, what=f"result of workflow {child_id}", max_bytes=limit)
        step = NewStep(step_id, GET_RESULT, out, None, secrets.token_hex(16), child_id)
    write_step(engine, parent, step)


def write_step(engine: Engine, ex: Execution, step: NewStep) -> None:
    w = engine.db.record_step(ex.fence, step)
    if w is Write.APPLIED:
        return
    if w is Write.FENCED:
        ex.fence_off()
    raise DBOSWorkflowConflictIDError(ex.workflow_id)


def get_result_in_workflow(
    engine: Engine, parent: Execution, child_id: str, step_id: int | None = None
) -> Any:
    """`DBOS.getResult` as a checkpointed step of the parent (01 §6.1)."""
    if step_id is None:
        step_id = parent.next_step_id()
        parent.check_boundary()
    recorded = parent.checkpoints.get(step_id)
    if recorded is not None:
        verify_recorded(parent, step_id, GET_RESULT, recorded.name, child=child_id)
        return replay_step(engine, recorded)
    try:
        value = await_result(engine, child_id, must_exist=False, ex=parent)
    except Exception as e:
        record_result_step(engine, parent, step_id, child_id, None, e)
        raise
    record_result_step(engine, parent, step_id, child_id, value, None)
    return value


async def get_result_in_workflow_async(
    engine: Engine, parent: Execution, child_id: str, step_id: int | None = None
) -> Any:
    if step_id is None:
        step_id = parent.next_step_id()
        parent.check_boundary()
    recorded = parent.checkpoints.get(step_id)
    if recorded is not None:
        verify_recorded(parent, step_id, GET_RESULT, recorded.name, child=child_id)
        return replay_step(engine, recorded)
    try:
        value = await await_result_async(engine, child_id, must_exist=False, ex=parent)
    except Exception as e:
        await engine.io(record_result_step, engine, parent, step_id, child_id, None, e)
        raise
    await engine.io(record_result_step, engine, parent, step_id, child_id, value, None)
    return value


# --- public entry points -----------------------------------------------------------------------------------


def call_workflow(engine: Engine, info: FuncInfo, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A direct invocation of a sync workflow (01 §4.1 rule 2)."""
    plan = plan_start(engine, info, args, kwargs, direct=True)
    parent = plan.parent
    if plan.replayed_child is None:
        res = insert(engine, plan)
        if res.kind == "created":
            ex = execution_for(plan, res)
            body = body_of(info, plan.receiver, plan.args, plan.kwargs)
            if parent is None or plan.result_step_id is None:
                return run_execution(engine, ex, body, plan.auth)
            try:
                value = run_execution(engine, ex, body, plan.auth)
            except Exception as e:
                record_result_step(engine, parent, plan.result_step_id, plan.workflow_id, None, e)
                raise
            record_result_step(engine, parent, plan.result_step_id, plan.workflow_id, value, None)
            return value
    if parent is not None:
        return get_result_in_workflow(engine, parent, plan.workflow_id, plan.result_step_id)
    return await_result(engine, plan.workflow_id)


async def call_workflow_async(
    engine: Engine, info: FuncInfo, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    plan = plan_start(engine, info, args, kwargs, direct=True)
    parent = plan.parent
    if plan.replayed_child is None:
        res = await engine.io(insert, engine, plan)
        if res.kind == "created":
            ex = execution_for(plan, res)
            body = body_of(info, plan.receiver, plan.args, plan.kwargs)
            if parent is None or plan.result_step_id is None:
                return await run_execution_async(engine, ex, body, plan.auth)
            try:
                value = await run_execution_async(engine, ex, body, plan.auth)
            except Exception as e:
                await engine.io(
                    record_result_step, engine, parent, plan.result_step_id, plan.workflow_id, None, e
                )
                raise
            await engine.io(
                record_result_step, engine, parent, plan.result_step_id, plan.workflow_id, value, None
            )
            return value
    if parent is not None:
        return await get_result_in_workflow_async(engine, parent, plan.workflow_id, plan.result_step_id)
    return await await_result_async(engine, plan.workflow_id)


def start_workflow(engine: Engine, info: FuncInfo, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """Create the record (or find it) synchronously, run the body in the background; returns the ID."""
    plan = plan_start(engine, info, args, kwargs, direct=False)
    if plan.replayed_child is not None:
        return plan.workflow_id
    res = insert(engine, plan)
    if res.kind == "created":
        ex = execution_for(plan, res)
        run_in_background(engine, ex, body_of(info, plan.receiver, plan.args, plan.kwargs), plan.auth)
    return plan.workflow_id


async def start_workflow_async(
    engine: Engine, info: FuncInfo, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> str:
    plan = plan_start(engine, info, args, kwargs, direct=False)
    if plan.replayed_child is not None:
        return plan.workflow_id
    res = await engine.io(insert, engine, plan)
    if res.kind == "created":
        ex = execution_for(plan, res)
        run_in_background(engine, ex, body_of(info, plan.receiver, plan.args, plan.kwargs), plan.auth)
    return plan.workflow_id


def resolve_callable(registry: Registry, func: Any) -> tuple[FuncInfo, tuple[Any, ...]]:
    """(FuncInfo, leading receiver args) for a workflow/step/transaction or a bound method of one."""
    from .._registry import info_of

    info = info_of(func)
    if info is None:
        name = getattr(func, "__qualname__", repr(func))
        raise DBOSWorkflowFunctionNotFoundError(
            name,
            f"{name} is not a registered workflow, step or transaction; decorate it with @DBOS.workflow()",
        )
    bound_self = getattr(func, "__self__", None)
    if bound_self is not None and info.uses_receiver:
        return info, (bound_self,)
    return info, ()
