"""The DBOS facade: lifecycle, decorators and thin class-level methods that call the engine."""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from . import _failpoints
from ._config import DBOSConfig, Settings, build_settings
from ._context import DBOSContext, current, current_or_empty
from ._dbos_manage import ManagementAPI
from ._dbos_messaging import MessagingAPI
from ._decorators import (
    apply_dbos_class,
    apply_default_roles,
    apply_required_roles,
    make_step,
    make_transaction,
    make_workflow,
    refuse_bare,
    step_config,
    validated_roles,
)
from ._handles import PolledHandle, PolledHandleAsync, fetch_status, get_status_checkpointed
from ._registry import REGISTRY, FuncInfo, StepConfig
from ._types import StepStatus, WorkflowStatus
from ._validation import check_identifier, check_roles, check_user
from .error import DBOSException, DBOSInitializationError, DBOSNonExistentWorkflowError, DBOSValidationError

T = TypeVar("T")
_log = logging.getLogger("dbos")
__version__ = "0.1.0"

_instance: DBOS | None = None
_instance_lock = threading.RLock()


def current_engine_or_none() -> Any:
    inst = _instance
    if inst is None or inst._engine is None or inst._engine.store is None:
        return None
    return inst._engine


def current_engine() -> Any:
    engine = current_engine_or_none()
    if engine is None:
        raise DBOSException("DBOS is not launched: construct DBOS(config=...) and call DBOS.launch() first")
    return engine


def refuse_on_loop(api: str, twin: str) -> None:
    """Sync APIs that wait must not run on a thread whose event loop is running (01 §13 rule 2)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(f"{api}() was called while an event loop is running; use await {twin}(...)")


class _ClassProperty:
    def __init__(self, getter: Callable[[], Any]) -> None:
        self.getter = getter

    def __get__(self, obj: Any, owner: Any) -> Any:
        return self.getter()


def _configure_logging(level: str) -> None:
    logger = logging.getLogger("dbos")
    logger.setLevel(level)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] dbos: %(message)s"))
        logger.addHandler(handler)


class DBOS(ManagementAPI, MessagingAPI):
    """Process-wide singleton and the class-level API (01 §3)."""

    _engine: Any = None
    _settings: Settings
    _launched: bool = False
    _listen: list[str] | None = None

    def __new__(cls, *, config: DBOSConfig | None = None, **kwargs: Any) -> DBOS:
        global _instance
        with _instance_lock:
            if _instance is not None:
                if config is not None and dict(config) != _instance._settings.raw:
                    _log.warning("DBOS is already constructed; the new configuration is ignored")
                return _instance
            for key in ("conductor_url", "conductor_key"):
                if kwargs.get(key) is not None:
                    raise DBOSInitializationError(f"{key} is not supported by dbosx")
            _failpoints.load_from_env()
            settings = build_settings(config)
            inst = super().__new__(cls)
            inst._settings = settings
            inst._engine = None
            inst._launched = False
            inst._listen = None
            _configure_logging(settings.log_level)
            _instance = inst
            return inst

    def __init__(
        self,
        *,
        config: DBOSConfig | None = None,
        fastapi: Any = None,
        flask: Any = None,
        conductor_url: str | None = None,
        conductor_key: str | None = None,
    ) -> None:
        pass

    # --- lifecycle -----------------------------------------------------------------------------------------
    @classmethod
    def launch(cls) -> None:
        from ._lifecycle import launch

        with _instance_lock:
            if _instance is None:
                raise DBOSException("DBOS.launch() called before DBOS(config=...) was constructed")
            if _instance._launched:
                _log.warning("DBOS.launch() called twice; ignoring the second call")
                return
            _instance._engine = launch(_instance._settings, REGISTRY, _instance._listen)
            _instance._launched = True

    @classmethod
    def destroy(cls, *, destroy_registry: bool = False, workflow_completion_timeout_sec: float = 0) -> None:
        from ._lifecycle import shutdown

        global _instance
        with _instance_lock:
            inst = _instance
            _instance = None
        if inst is not None and inst._engine is not None:
            shutdown(inst._engine, grace_s=workflow_completion_timeout_sec)
        if destroy_registry:
            from ._queues.queue import QUEUES

            REGISTRY.clear()
            QUEUES.clear()

    @classmethod
    def reset_system_database(
        cls, *, system_database_url: str | None = None, schema: str | None = None, truncate: bool = False
    ) -> None:
        from ._lifecycle import reset_databases

        inst = _instance
        if inst is not None and inst._launched:
            raise DBOSException(
                "reset_system_database() cannot run while DBOS is launched; call DBOS.destroy() first"
            )
        if system_database_url is None and inst is None:
            _log.warning("reset_system_database(): no URL given and DBOS is not constructed; nothing to do")
            return
        reset_databases(inst._settings if inst else None, system_database_url, schema, truncate)

    # --- decorators ----------------------------------------------------------------------------------------
    @classmethod
    def workflow(
        cls, *args: Any, name: str | None = None, max_recovery_attempts: int | None = 100
    ) -> Callable[[T], T]:
        refuse_bare("DBOS.workflow", args[0] if args else None)
        if max_recovery_attempts is not None:
            from ._validation import check_count

            check_count(max_recovery_attempts, "max_recovery_attempts", minimum=0)
        return lambda f: make_workflow(f, name=name, max_recovery_attempts=max_recovery_attempts)

    @classmethod
    def step(
        cls,
        *args: Any,
        name: str | None = None,
        retries_allowed: bool = False,
        interval_seconds: float = 1.0,
        max_attempts: int = 3,
        backoff_rate: float = 2.0,
        should_retry: Callable[[BaseException], Any] | None = None,
        timeout_seconds: float | None = None,
    ) -> Callable[[T], T]:
        refuse_bare("DBOS.step", args[0] if args else None)
        cfg = step_config(
            retries_allowed=retries_allowed,
            interval_seconds=interval_seconds,
            max_attempts=max_attempts,
            backoff_rate=backoff_rate,
            should_retry=should_retry,
            timeout_seconds=timeout_seconds,
        )
        return lambda f: make_step(f, name=name, config=cfg)

    @classmethod
    def transaction(
        cls, isolation_level: Any = "SERIALIZABLE", *, name: str | None = None
    ) -> Callable[[T], T]:
        refuse_bare("DBOS.transaction", isolation_level)
        return lambda f: make_transaction(f, isolation_level=isolation_level, name=name)

    @classmethod
    def dbos_class(cls, class_name: Any = None) -> Callable[[T], T]:
        if isinstance(class_name, type):
            raise TypeError("DBOS.dbos_class must be called: write @DBOS.dbos_class() with parentheses")
        return lambda c: apply_dbos_class(c, class_name)  # type: ignore[arg-type, return-value]

    @classmethod
    def required_roles(cls, roles: list[str]) -> Callable[[T], T]:
        checked = validated_roles(roles)
        return lambda f: apply_required_roles(f, checked)

    @classmethod
    def default_required_roles(cls, roles: list[str]) -> Callable[[T], T]:
        checked = validated_roles(roles)
        return lambda c: apply_default_roles(c, checked)  # type: ignore[arg-type, return-value]

    @classmethod
    def listen_queues(cls, queues: Any) -> None:
        """Dispatch only these queues (plus the internal queue) in this process (03 §17)."""
        from ._queues.queue import Queue

        inst = _instance
        if inst is None:
            raise DBOSException("DBOS.listen_queues() needs a constructed DBOS: call DBOS(config=...) first")
        if inst._launched:
            raise DBOSException("DBOS.listen_queues() must be called before DBOS.launch()")
        if inst._listen is not None:
            raise DBOSException("DBOS.listen_queues() may be called only once")
        if isinstance(queues, (str, Queue)) or not isinstance(queues, (list, tuple)):
            raise DBOSValidationError(
                f"listen_queues expects a list of Queue objects or names, got {queues!r}"
            )
        names = []
        for q in queues:
            if isinstance(q, Queue):
                names.append(q.name)
            elif isinstance(q, str):
                names.append(check_identifier(q, "queue name"))
            else:
                raise DBOSValidationError(f"listen_queues: {q!r} is neither a Queue nor a queue name")
        inst._listen = names

    @classmethod
    def enqueue_workflow(
        cls, queue_name: str, func: Callable[..., T], *args: Any, **kwargs: Any
    ) -> PolledHandle[T]:
        from ._queues.enqueue import enqueue

        return enqueue(queue_name, func, args, kwargs)  # type: ignore[no-any-return]

    @classmethod
    async def enqueue_workflow_async(
        cls, queue_name: str, func: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> PolledHandleAsync[Any]:
        from ._queues.enqueue import enqueue_async

        return await enqueue_async(queue_name, func, args, kwargs)  # type: ignore[no-any-return]

    @classmethod
    def register_queue(
        cls, name: str, *, on_conflict: str = "update_if_latest_version", **settings: Any
    ) -> Any:
        """Define (or find) a database-backed queue shared by every process of the database (03 §18)."""
        from ._queues.definitions import register_queue

        return register_queue(name, on_conflict, settings)

    @classmethod
    def retrieve_queue(cls, name: str) -> Any:
        from ._queues.definitions import retrieve_queue

        return retrieve_queue(name)

    @classmethod
    def delete_queue(cls, name: str) -> None:
        from ._queues.definitions import delete_queue

        delete_queue(name)

    @classmethod
    def list_queues(cls) -> list[Any]:
        from ._queues.definitions import list_queues

        return list_queues()

    @classmethod
    def pause_queue(cls, name: str) -> None:
        from ._queues.definitions import set_paused

        set_paused(name, True)

    @classmethod
    def resume_queue(cls, name: str) -> None:
        from ._queues.definitions import set_paused

        set_paused(name, False)

    @classmethod
    def queue_stats(cls, queue_name: str | None = None) -> list[Any]:
        """Depth of every queue (or one) by status: enqueued, delayed, pending (03 §19)."""
        from ._queues.stats import queue_stats

        refuse_on_loop("DBOS.queue_stats", "DBOS.queue_stats_async")
        name = None if queue_name is None else check_identifier(queue_name, "queue name")
        return queue_stats(current_engine(), name)

    @classmethod
    async def queue_stats_async(cls, queue_name: str | None = None) -> list[Any]:
        from ._queues.stats import queue_stats

        engine = current_engine()
        name = None if queue_name is None else check_identifier(queue_name, "queue name")
        return await engine.io(queue_stats, engine, name)  # type: ignore[no-any-return]

    # --- starting and retrieving workflows -----------------------------------------------------------------
    @classmethod
    def start_workflow(cls, func: Callable[..., T], *args: Any, **kwargs: Any) -> PolledHandle[T]:
        from ._engine.workflows import resolve_callable, start_workflow

        engine = current_engine()
        info, lead = resolve_callable(engine.registry, func)
        wid = start_workflow(engine, info, (*lead, *args), kwargs)
        return PolledHandle(engine, wid)

    @classmethod
    async def start_workflow_async(
        cls, func: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> PolledHandleAsync[Any]:
        from ._engine.workflows import resolve_callable, start_workflow_async

        engine = current_engine()
        info, lead = resolve_callable(engine.registry, func)
        wid = await start_workflow_async(engine, info, (*lead, *args), kwargs)
        return PolledHandleAsync(engine, wid)

    @classmethod
    def retrieve_workflow(cls, workflow_id: str, existing_workflow: bool = True) -> PolledHandle[Any]:
        engine = current_engine()
        wid = check_identifier(workflow_id, "workflow ID")
        if existing_workflow and get_status_checkpointed(engine, wid) is None:
            raise DBOSNonExistentWorkflowError(wid)
        return PolledHandle(engine, wid, must_exist=existing_workflow)

    @classmethod
    async def retrieve_workflow_async(
        cls, workflow_id: str, existing_workflow: bool = True
    ) -> PolledHandleAsync[Any]:
        engine = current_engine()
        wid = check_identifier(workflow_id, "workflow ID")
        if existing_workflow and await engine.io(fetch_status, engine, wid) is None:
            raise DBOSNonExistentWorkflowError(wid)
        return PolledHandleAsync(engine, wid, must_exist=existing_workflow)

    @classmethod
    def get_workflow_status(cls, workflow_id: str) -> WorkflowStatus | None:
        refuse_on_loop("DBOS.get_workflow_status", "DBOS.get_workflow_status_async")
        return get_status_checkpointed(current_engine(), check_identifier(workflow_id, "workflow ID"))

    @classmethod
    async def get_workflow_status_async(cls, workflow_id: str) -> WorkflowStatus | None:
        engine = current_engine()
        return await engine.io(fetch_status, engine, check_identifier(workflow_id, "workflow ID"))  # type: ignore[no-any-return]

    @classmethod
    def get_result(cls, workflow_id: str, *, polling_interval_sec: float = 1.0) -> Any:
        refuse_on_loop("DBOS.get_result", "DBOS.get_result_async")
        return cls.retrieve_workflow(workflow_id).get_result(polling_interval_sec=polling_interval_sec)

    @classmethod
    async def get_result_async(cls, workflow_id: str, *, polling_interval_sec: float = 1.0) -> Any:
        handle = await cls.retrieve_workflow_async(workflow_id)
        return await handle.get_result(polling_interval_sec=polling_interval_sec)

    # --- inside workflows ----------------------------------------------------------------------------------
    @classmethod
    def sleep(cls, seconds: float) -> None:
        from ._engine.steps import sleep

        refuse_on_loop("DBOS.sleep", "DBOS.sleep_async")
        sleep(current_engine(), seconds)

    @classmethod
    async def sleep_async(cls, seconds: float) -> None:
        from ._engine.steps import sleep_async

        await sleep_async(current_engine(), seconds)

    @classmethod
    def run_step(
        cls, step_options: dict[str, Any] | None, func: Callable[..., T], *args: Any, **kwargs: Any
    ) -> T:
        from ._engine.steps import run_step, run_step_async

        info = _adhoc_step(step_options, func)
        engine = current_engine_or_none()
        if asyncio.iscoroutinefunction(func):
            refuse_on_loop("DBOS.run_step", "DBOS.run_step_async")
            if engine is None:
                return asyncio.run(func(*args, **kwargs))  # type: ignore[no-any-return]
            fut = engine.run_coroutine(
                _with_context(current(), run_step_async(engine, info, func, args, kwargs))
            )
            return fut.result()  # type: ignore[no-any-return]
        if info.step is not None and info.step.timeout_seconds is not None:
            raise DBOSException("timeout_seconds is only supported with async callables in run_step")
        if engine is None:
            return func(*args, **kwargs)
        return run_step(engine, info, func, args, kwargs)  # type: ignore[no-any-return]

    @classmethod
    async def run_step_async(
        cls, step_options: dict[str, Any] | None, func: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        from ._engine.steps import run_step_async

        info = _adhoc_step(step_options, func)
        engine = current_engine_or_none()
        if engine is None:
            result = func(*args, **kwargs)
            return await result if asyncio.iscoroutine(result) else result
        return await run_step_async(engine, info, func, args, kwargs)

    @classmethod
    def set_authentication(cls, user: str | None, roles: list[str] | None) -> None:
        ctx = current()
        if ctx is None:
            raise DBOSException(
                "DBOS.set_authentication() needs a context: open one with DBOSContextEnsure()"
            )
        ctx.authenticated_user = check_user(user)
        ctx.authenticated_roles = check_roles(roles, "roles", allow_none=True)
        ctx.assumed_role = None

    @classmethod
    def recover_pending_workflows(cls, executor_ids: list[str] | None = None) -> list[PolledHandle[Any]]:
        from ._lifecycle import force_recover

        engine = current_engine()
        if current_or_empty().execution is not None:
            raise DBOSException("recover_pending_workflows() cannot be called inside a workflow")
        return [PolledHandle(engine, wid) for wid in force_recover(engine, executor_ids)]

    _recover_pending_workflows = recover_pending_workflows

    # --- context properties --------------------------------------------------------------------------------
    workflow_id = _ClassProperty(lambda: DBOSContext().workflow_id)
    step_id = _ClassProperty(lambda: DBOSContext().step_id)
    step_status: StepStatus | None = _ClassProperty(lambda: DBOSContext().step_status)  # type: ignore[assignment]
    authenticated_user = _ClassProperty(lambda: DBOSContext().authenticated_user)
    authenticated_roles = _ClassProperty(lambda: DBOSContext().authenticated_roles)
    assumed_role = _ClassProperty(lambda: DBOSContext().assumed_role)
    logger: logging.Logger = _ClassProperty(lambda: logging.getLogger("dbos"))  # type: ignore[assignment]
    sql_session = _ClassProperty(lambda: DBOSContext().sql_session)
    application_version = _ClassProperty(lambda: _app_version())
    executor_id = _ClassProperty(lambda: _instance._settings.executor_id if _instance else None)


def _app_version() -> str | None:
    inst = _instance
    if inst is None:
        return None
    if inst._engine is not None:
        return inst._engine.application_version  # type: ignore[no-any-return]
    return inst._settings.application_version


def _adhoc_step(options: dict[str, Any] | None, func: Callable[..., Any]) -> FuncInfo:
    opts = dict(options or {})
    name = opts.pop("name", None) or getattr(func, "__qualname__", "step")
    cfg: StepConfig = step_config(
        retries_allowed=opts.get("retries_allowed", False),
        interval_seconds=opts.get("interval_seconds", 1.0),
        max_attempts=opts.get("max_attempts", 3),
        backoff_rate=opts.get("backoff_rate", 2.0),
        should_retry=opts.get("should_retry"),
        timeout_seconds=opts.get("timeout_seconds"),
    )
    return FuncInfo(name=name, kind="step", func=func, is_async=asyncio.iscoroutinefunction(func), step=cfg)


async def _with_context(state: Any, coro: Coroutine[Any, Any, T]) -> T:
    from ._context import push

    if state is not None:
        push(state)
    return await coro


def _atexit() -> None:
    inst = _instance
    if inst is not None and inst._engine is not None:
        from ._lifecycle import shutdown

        shutdown(inst._engine, grace_s=0, total_timeout_s=2.0)


atexit.register(_atexit)
