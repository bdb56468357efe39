"""Process-global registry of decorated functions, classes and configured instances (01 §3.1 rule 4, §4)."""

from __future__ import annotations

import hashlib
import inspect
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from .error import DBOSConflictingRegistrationError

Kind = Literal["workflow", "step", "transaction"]
MethodKind = Literal["function", "instance", "classmethod", "staticmethod"]
TEMP_PREFIX = "<temp>."

_log = logging.getLogger("dbos")


@dataclass
class StepConfig:
    retries_allowed: bool = False
    interval_seconds: float = 1.0
    max_attempts: int = 3
    backoff_rate: float = 2.0
    should_retry: Callable[[BaseException], Any] | None = None
    timeout_seconds: float | None = None


@dataclass
class FuncInfo:
    """One registered workflow, step or transaction."""

    name: str
    kind: Kind
    func: Callable[..., Any]  # the user's function (unwrapped)
    is_async: bool
    method_kind: MethodKind = "function"
    class_name: str | None = None
    required_roles: list[str] | None = None
    max_recovery_attempts: int | None = 100
    step: StepConfig | None = None
    isolation_level: str = "SERIALIZABLE"
    wrapper: Callable[..., Any] | None = None
    looks_like_method: bool = False

    @property
    def uses_receiver(self) -> bool:
        return self.method_kind in ("instance", "classmethod")


@dataclass
class Registry:
    functions: dict[str, FuncInfo] = field(default_factory=dict)
    classes: dict[str, type] = field(default_factory=dict)
    class_roles: dict[str, list[str]] = field(default_factory=dict)
    instances: dict[str, Any] = field(default_factory=dict)
    generation: int = 0  # bumped on every registration, so dispatch can retry rows it could not run
    lock: threading.RLock = field(default_factory=threading.RLock)

    def register(self, info: FuncInfo) -> None:
        with self.lock:
            existing = self.functions.get(info.name)
            if existing is not None and existing.kind != info.kind:
                raise DBOSConflictingRegistrationError(info.name)
            if existing is not None and existing.func is not info.func:
                _log.warning("%s %r registered twice; the later definition wins", info.kind, info.name)
            self.functions[info.name] = info
            self.generation += 1

    def workflow(self, name: str) -> FuncInfo | None:
        info = self.functions.get(name)
        if info is not None and info.kind == "workflow":
            return info
        if name.startswith(TEMP_PREFIX):
            inner = self.functions.get(name[len(TEMP_PREFIX) :])
            if inner is not None and inner.kind != "workflow":
                return inner
        return None

    def workflow_names(self) -> frozenset[str]:
        names = set()
        for info in self.functions.values():
            names.add(info.name if info.kind == "workflow" else TEMP_PREFIX + info.name)
        return frozenset(names)

    def register_class(self, name: str, cls: type) -> None:
        with self.lock:
            self.classes[name] = cls
            self.generation += 1

    def register_instance(self, key: str, obj: Any) -> None:
        with self.lock:
            if key in self.instances and self.instances[key] is not obj:
                _log.warning("configured instance %r registered twice; the later one wins", key)
            self.instances[key] = obj
            self.generation += 1

    def roles_for(self, info: FuncInfo) -> list[str] | None:
        if info.required_roles is not None:
            return info.required_roles
        if info.class_name is not None:
            return self.class_roles.get(info.class_name)
        return None

    def clear(self) -> None:
        with self.lock:
            self.functions.clear()
            self.classes.clear()
            self.class_roles.clear()
            self.instances.clear()
            self.generation += 1

    def version_digest(self, library_version: str, app_name: str) -> str:
        """Deterministic application version over the registered workflows' names and sources (01 §3.2)."""
        h = hashlib.sha256()
        h.update(library_version.encode())
        h.update(b"\0" + app_name.encode())
        for name in sorted(n for n, i in self.functions.items() if i.kind == "workflow"):
            h.update(b"\0" + name.encode())
            try:
                h.update(b"\0" + inspect.getsource(self.functions[name].func).encode())
            except (OSError, TypeError):
                pass
        return h.hexdigest()[:32]


REGISTRY = Registry()


def info_of(obj: Any) -> FuncInfo | None:
    """The FuncInfo behind a decorated callable (function, bound method, static or class method)."""
    target = getattr(obj, "__func__", obj)
    info = getattr(target, "__dbos_info__", None)
    return info if isinstance(info, FuncInfo) else None
