"""The DBOS context (a ContextVar) and the context managers that configure it (01 §11).

Each context manager installs a shallow copy of the current context with its fields changed and resets the
ContextVar on exit, so every value is restored even when the block raises. A `SetWorkflowID` block shares one
mutable "pending ID" box among its nested contexts so that the first start in the block consumes it.
"""

from __future__ import annotations

import contextvars
import logging
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from ._types import StepStatus
from ._validation import (
    check_identifier,
    check_priority,
    check_roles,
    check_seconds,
    check_user,
)

if TYPE_CHECKING:
    from ._engine.execution import Execution

DuplicationPolicy = Literal["return-existing", "reject"]


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


@dataclass
class EnqueueOptions:
    deduplication_id: str | None = None
    priority: int | None = None
    app_version: str | None = None
    queue_partition_key: str | None = None
    delay_seconds: float | None = None
    duplication_policy: DuplicationPolicy | None = None


@dataclass
class PendingID:
    workflow_id: str | None


@dataclass
class ContextState:
    pending: PendingID | None = None
    timeout: Any = UNSET  # UNSET: inherit; None: no timeout; float: seconds
    enqueue: EnqueueOptions | None = None
    authenticated_user: str | None = None
    authenticated_roles: list[str] | None = None
    assumed_role: str | None = None
    execution: Execution | None = None
    step_status: StepStatus | None = None
    in_step: bool = False
    in_transaction: bool = False
    sql_session: Any = None
    extras: dict[str, Any] = field(default_factory=dict)

    def copy(self, **changes: Any) -> ContextState:
        # A shallow copy without __init__ (dataclasses.replace costs ~5 µs; this runs on every step).
        new = object.__new__(ContextState)
        new.__dict__.update(self.__dict__)
        new.__dict__.update(changes)
        return new


_current: contextvars.ContextVar[ContextState | None] = contextvars.ContextVar("dbos_context", default=None)


def current() -> ContextState | None:
    return _current.get()


def current_or_empty() -> ContextState:
    return _current.get() or _EMPTY


_EMPTY = ContextState()


def push(state: ContextState) -> contextvars.Token[ContextState | None]:
    return _current.set(state)


def pop(token: contextvars.Token[ContextState | None]) -> None:
    _current.reset(token)


def take_pending_id() -> str | None:
    """Consume the pending ID of the innermost SetWorkflowID block (01 §5 rule 6)."""
    ctx = _current.get()
    if ctx is None or ctx.pending is None:
        return None
    wid = ctx.pending.workflow_id
    if wid is None:
        logging.getLogger("dbos").warning(
            "a second workflow was started in one SetWorkflowID block; it gets a generated ID"
        )
        return None
    ctx.pending.workflow_id = None
    return wid


class _Scoped:
    """Base of the context managers: install a modified copy of the context, restore on exit."""

    _token: contextvars.Token[ContextState | None] | None = None

    def _changes(self) -> dict[str, Any]:
        return {}

    def __enter__(self) -> Any:
        base = _current.get() or ContextState()
        self._token = _current.set(base.copy(**self._changes()))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        if self._token is not None:
            _current.reset(self._token)
            self._token = None
        return False


class SetWorkflowID(_Scoped):
    """The first workflow started in the block gets `workflow_id` (01 §11.2)."""

    def __init__(self, workflow_id: str) -> None:
        self.workflow_id = check_identifier(workflow_id, "workflow ID")

    def _changes(self) -> dict[str, Any]:
        return {"pending": PendingID(self.workflow_id)}


class SetWorkflowTimeout(_Scoped):
    """Every workflow started in the block gets this timeout; None clears an inherited deadline (02 §2)."""

    def __init__(self, workflow_timeout_sec: float | None) -> None:
        self.workflow_timeout_sec = check_seconds(
            workflow_timeout_sec, "workflow timeout", positive=True, allow_none=True
        )

    def _changes(self) -> dict[str, Any]:
        return {"timeout": self.workflow_timeout_sec}


class SetEnqueueOptions(_Scoped):
    """Options for `Queue.enqueue` calls in the block (03)."""

    def __init__(
        self,
        *,
        deduplication_id: str | None = None,
        priority: int | None = None,
        app_version: str | None = None,
        queue_partition_key: str | None = None,
        delay_seconds: float | None = None,
        duplication_policy: DuplicationPolicy | None = None,
    ) -> None:
        if duplication_policy not in (None, "return-existing", "reject"):
            from .error import DBOSValidationError

            raise DBOSValidationError(
                f"duplication_policy must be 'return-existing' or 'reject', got {duplication_policy!r}"
            )
        self.options = EnqueueOptions(
            deduplication_id=None
            if deduplication_id is None
            else check_identifier(deduplication_id, "deduplication ID"),
            priority=check_priority(priority),
            app_version=None if app_version is None else check_identifier(app_version, "application version"),
            queue_partition_key=None
            if queue_partition_key is None
            else check_identifier(queue_partition_key, "partition key"),
            delay_seconds=check_seconds(delay_seconds, "delay_seconds", positive=False, allow_none=True),
            duplication_policy=duplication_policy,
        )

    def _changes(self) -> dict[str, Any]:
        # Nested blocks: the inner block's set fields override, its None fields inherit (03 §5 rule 3).
        outer = (_current.get() or ContextState()).enqueue
        if outer is None:
            return {"enqueue": self.options}
        merged = {k: v if v is not None else getattr(outer, k) for k, v in vars(self.options).items()}
        return {"enqueue": EnqueueOptions(**merged)}


class DBOSContextSetAuth(_Scoped):
    """Authenticated user and roles for the block; clears the assumed role (01 §11.5)."""

    def __init__(self, user: str | None, roles: list[str] | None) -> None:
        self.user = check_user(user)
        self.roles = check_roles(roles, "roles", allow_none=True)

    def _changes(self) -> dict[str, Any]:
        return {"authenticated_user": self.user, "authenticated_roles": self.roles, "assumed_role": None}


class DBOSContext:
    """Read-only view of the current DBOS context (yielded by DBOSContextEnsure)."""

    @property
    def _state(self) -> ContextState:
        return current_or_empty()

    @property
    def workflow_id(self) -> str | None:
        ex = self._state.execution
        return ex.workflow_id if ex is not None else None

    @property
    def step_id(self) -> int | None:
        st = self._state
        if st.in_step or st.in_transaction:
            return st.step_status.step_id if st.step_status else None
        return None

    @property
    def step_status(self) -> StepStatus | None:
        st = self._state
        return st.step_status if st.in_step else None

    @property
    def authenticated_user(self) -> str | None:
        return self._state.authenticated_user

    @property
    def authenticated_roles(self) -> list[str] | None:
        roles = self._state.authenticated_roles
        return list(roles) if roles is not None else None

    @property
    def assumed_role(self) -> str | None:
        return self._state.assumed_role

    @property
    def logger(self) -> logging.Logger:
        return logging.getLogger("dbos")

    @property
    def sql_session(self) -> Any:
        return self._state.sql_session


class DBOSContextEnsure(_Scoped):
    """Guarantee that a DBOS context exists in the block (01 §11.1)."""

    def __enter__(self) -> DBOSContext:
        if _current.get() is None:
            self._token = _current.set(ContextState())
        return DBOSContext()
