"""The decorators behind @DBOS.workflow / step / transaction / dbos_class / required_roles (01 §4)."""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from typing import Any

from ._registry import REGISTRY, FuncInfo, Kind, StepConfig, info_of
from ._validation import check_count, check_identifier, check_roles, check_seconds
from .error import DBOSException, DBOSValidationError

ISOLATION_LEVELS = ("SERIALIZABLE", "REPEATABLE READ", "READ COMMITTED")


def refuse_bare(decorator: str, arg: Any) -> None:
    """`@DBOS.workflow` without parentheses passes the function itself; say how to fix it (01 §4.1 rule 6)."""
    if callable(arg) or isinstance(arg, (staticmethod, classmethod)):
        raise TypeError(f"{decorator} must be called: write @{decorator}() with parentheses")


def _unwrap(obj: Any) -> tuple[Callable[..., Any], type | None]:
    if isinstance(obj, (staticmethod, classmethod)):
        return obj.__func__, type(obj)
    return obj, None


def _looks_like_method(func: Callable[..., Any]) -> bool:
    parts = func.__qualname__.split(".")
    if len(parts) < 2 or parts[-2] == "<locals>":
        return False
    params = list(inspect.signature(func).parameters)
    return bool(params) and params[0] in ("self", "cls")


def _check_plain_function(func: Any, decorator: str) -> None:
    if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
        raise DBOSException(
            f"{decorator} cannot decorate generator function {func.__qualname__}: it cannot be checkpointed"
        )


def _register(func: Callable[..., Any], kind: Kind, name: str | None, **fields: Any) -> FuncInfo:
    reg_name = check_identifier(name, "name") if name is not None else func.__qualname__
    info = FuncInfo(
        name=reg_name,
        kind=kind,
        func=func,
        is_async=inspect.iscoroutinefunction(func),
        required_roles=getattr(func, "__dbos_required_roles__", None),
        looks_like_method=_looks_like_method(func),
        **fields,
    )
    REGISTRY.register(info)
    return info


def _finish(info: FuncInfo, wrapper: Callable[..., Any], kind_wrapper: type | None) -> Any:
    wrapper.__dbos_info__ = info  # type: ignore[attr-defined]
    info.wrapper = wrapper
    if kind_wrapper is staticmethod:
        info.method_kind = "staticmethod"
        return staticmethod(wrapper)
    if kind_wrapper is classmethod:
        info.method_kind = "classmethod"
        return classmethod(wrapper)
    return wrapper


def make_workflow(obj: Any, *, name: str | None, max_recovery_attempts: int | None) -> Any:
    func, kind_wrapper = _unwrap(obj)
    _check_plain_function(func, "@DBOS.workflow()")
    info = _register(func, "workflow", name, max_recovery_attempts=max_recovery_attempts)
    from ._dbos import current_engine
    from ._engine.workflows import call_workflow, call_workflow_async

    if info.is_async:

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            return await call_workflow_async(current_engine(), info, args, kwargs)

        return _finish(info, async_wrapper, kind_wrapper)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return call_workflow(current_engine(), info, args, kwargs)

    return _finish(info, wrapper, kind_wrapper)


def step_config(
    *,
    retries_allowed: bool,
    interval_seconds: float,
    max_attempts: int,
    backoff_rate: float,
    should_retry: Callable[[BaseException], Any] | None,
    timeout_seconds: float | None,
) -> StepConfig:
    check_count(max_attempts, "max_attempts", minimum=1)
    if (
        isinstance(interval_seconds, bool)
        or not isinstance(interval_seconds, (int, float))
        or not (math.isfinite(interval_seconds) and interval_seconds >= 0)
    ):
        raise DBOSValidationError(f"interval_seconds must be a finite number >= 0, got {interval_seconds!r}")
    if (
        isinstance(backoff_rate, bool)
        or not isinstance(backoff_rate, (int, float))
        or not (math.isfinite(backoff_rate) and backoff_rate > 0)
    ):
        raise DBOSValidationError(f"backoff_rate must be a finite number > 0, got {backoff_rate!r}")
    timeout = check_seconds(timeout_seconds, "timeout_seconds", positive=True, allow_none=True)
    return StepConfig(
        bool(retries_allowed),
        float(interval_seconds),
        int(max_attempts),
        float(backoff_rate),
        should_retry,
        timeout,
    )


def make_step(obj: Any, *, name: str | None, config: StepConfig) -> Any:
    func, kind_wrapper = _unwrap(obj)
    _check_plain_function(func, "@DBOS.step()")
    is_async = inspect.iscoroutinefunction(func)
    if not is_async and config.timeout_seconds is not None:
        raise DBOSException(f"timeout_seconds is only supported on async steps; {func.__qualname__} is sync")
    if not is_async and config.should_retry is not None and inspect.iscoroutinefunction(config.should_retry):
        raise DBOSException(f"an async should_retry needs an async step; {func.__qualname__} is sync")
    info = _register(func, "step", name, step=config)
    from ._dbos import current_engine_or_none
    from ._engine.steps import run_step, run_step_async

    if is_async:

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            engine = current_engine_or_none()
            if engine is None:
                return await func(*args, **kwargs)
            return await run_step_async(engine, info, func, args, kwargs)

        return _finish(info, async_wrapper, kind_wrapper)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        engine = current_engine_or_none()
        if engine is None:
            return func(*args, **kwargs)
        return run_step(engine, info, func, args, kwargs)

    return _finish(info, wrapper, kind_wrapper)


def make_transaction(obj: Any, *, isolation_level: str, name: str | None) -> Any:
    func, kind_wrapper = _unwrap(obj)
    _check_plain_function(func, "@DBOS.transaction()")
    if inspect.iscoroutinefunction(func):
        raise DBOSException(f"@DBOS.transaction() supports sync functions only; {func.__qualname__} is async")
    if isolation_level not in ISOLATION_LEVELS:
        raise DBOSValidationError(
            f"isolation_level must be one of {ISOLATION_LEVELS}, got {isolation_level!r}"
        )
    info = _register(func, "transaction", name, isolation_level=isolation_level)
    from ._dbos import current_engine
    from ._engine.transactions import run_transaction

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return run_transaction(current_engine(), info, func, args, kwargs)

    return _finish(info, wrapper, kind_wrapper)


def apply_required_roles(obj: Any, roles: list[str]) -> Any:
    info = info_of(obj)
    if info is not None:
        info.required_roles = roles
    else:
        func, _ = _unwrap(obj)
        func.__dbos_required_roles__ = roles  # type: ignore[attr-defined]
    return obj


def apply_default_roles(cls: type, roles: list[str]) -> type:
    cls.__dbos_default_roles__ = roles  # type: ignore[attr-defined]
    name = getattr(cls, "__dbos_class_name__", None)
    if name is not None:
        REGISTRY.class_roles[name] = roles
    return cls


def apply_dbos_class(cls: type, class_name: str | None) -> type:
    name = check_identifier(class_name, "class_name") if class_name is not None else cls.__qualname__
    cls.__dbos_class_name__ = name  # type: ignore[attr-defined]
    for attr in vars(cls).values():
        info = info_of(attr)
        if info is None:
            continue
        info.class_name = name
        if isinstance(attr, staticmethod):
            info.method_kind = "staticmethod"
            info.class_name = None
        elif isinstance(attr, classmethod):
            info.method_kind = "classmethod"
        else:
            info.method_kind = "instance"
    roles = getattr(cls, "__dbos_default_roles__", None)
    if roles is not None:
        REGISTRY.class_roles[name] = roles
    REGISTRY.register_class(name, cls)
    return cls


def validated_roles(roles: Any) -> list[str]:
    checked = check_roles(roles, "roles", allow_none=False)
    assert checked is not None
    return checked
