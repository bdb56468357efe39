"""Public DBOS errors (01 §14, 07 §12.2).

Every class survives `pickle.loads(pickle.dumps(e))` with its type, message and attributes, because errors are
stored as workflow and step outcomes. The two bases implement `__reduce__` so that the round trip never calls a
subclass's `__init__` (whose signature differs from class to class): the object is rebuilt with `__new__` and its
`__dict__` is restored as-is.
"""

from __future__ import annotations

import datetime
from enum import Enum
from typing import Any

__all__ = [
    "DBOSErrorCode",
    "DBOSException",
    "DBOSBaseException",
    "DBOSWorkflowConflictIDError",
    "DBOSRecoveryError",
    "DBOSInitializationError",
    "DBOSWorkflowFunctionNotFoundError",
    "DBOSNonExistentWorkflowError",
    "MaxRecoveryAttemptsExceededError",
    "DBOSMaxStepRetriesExceeded",
    "DBOSNotAuthorizedError",
    "DBOSConflictingWorkflowError",
    "DBOSWorkflowCancelledError",
    "DBOSUnexpectedStepError",
    "DBOSQueueDeduplicatedError",
    "DBOSAwaitedWorkflowCancelledError",
    "DBOSAwaitedWorkflowMaxRecoveryAttemptsExceeded",
    "DBOSPatchNondeterminismError",
    "DBOSStreamTimeoutError",
    "DBOSStreamNondeterminismError",
    "DBOSStepTimeoutError",
    "DBOSConflictingRegistrationError",
    "DBOSWorkflowTimeoutError",
    "DBOSValidationError",
    "DBOSPayloadTooLargeError",
    "DBOSSerializationError",
    "DBOSStorageError",
    "DBOSDatabaseUnavailableError",
    "DBOSDatabaseFullError",
    "DBOSDatabaseReadOnlyError",
    "DBOSStorageTimeoutError",
    "DBOSSchemaError",
]


class DBOSErrorCode(Enum):
    ConflictingIDError = 1
    RecoveryError = 2
    InitializationError = 3
    WorkflowFunctionNotFound = 4
    NonExistentWorkflowError = 5
    MaxRecoveryAttemptsExceeded = 6
    MaxStepRetriesExceeded = 7
    NotAuthorized = 8
    ConflictingWorkflowError = 9
    WorkflowCancelled = 10
    UnexpectedStep = 11
    QueueDeduplicated = 12
    AwaitedWorkflowCancelled = 13
    AwaitedWorkflowMaxRecoveryAttemptsExceeded = 14
    PatchNondeterminism = 15
    StreamTimeout = 16
    StreamNondeterminism = 17
    StepTimeout = 18
    ConflictingRegistrationError = 25
    WorkflowTimeout = 30
    ValidationError = 31
    PayloadTooLarge = 32
    SerializationError = 33
    StorageError = 34
    DatabaseUnavailable = 35
    DatabaseFull = 36
    DatabaseReadOnly = 37
    StorageTimeout = 38
    SchemaError = 39


def _code_value(code: DBOSErrorCode | int | None) -> int | None:
    return code.value if isinstance(code, DBOSErrorCode) else code


def _format(message: str, code: int | None) -> str:
    return f"DBOS Error {code}: {message}" if code is not None else f"DBOS Error: {message}"


def _rebuild(cls: type[BaseException], args: tuple[Any, ...]) -> BaseException:
    """Unpickling helper: create the instance without running its `__init__`; `__dict__` is restored after."""
    return cls.__new__(cls, *args)


def _with_detail(base: str, detail: str | None) -> str:
    return f"{base}: {detail}" if detail else base


class DBOSException(Exception):
    """Base of every DBOS error that user code may catch with `except Exception`."""

    def __init__(self, message: str, dbos_error_code: DBOSErrorCode | int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.dbos_error_code: int | None = _code_value(dbos_error_code)
        self.status_code: int | None = None

    def __str__(self) -> str:
        return _format(self.message, self.dbos_error_code)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args), self.__dict__.copy())


class DBOSBaseException(BaseException):
    """Same shape as `DBOSException`, but a `BaseException`: control flow that user code must not swallow."""

    def __init__(self, message: str, dbos_error_code: DBOSErrorCode | int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.dbos_error_code: int | None = _code_value(dbos_error_code)
        self.status_code: int | None = None

    def __str__(self) -> str:
        return _format(self.message, self.dbos_error_code)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args), self.__dict__.copy())


# --------------------------------------------------------------------------------------------------------------
# 01 §14
# --------------------------------------------------------------------------------------------------------------


class DBOSWorkflowConflictIDError(DBOSBaseException):
    """This execution lost ownership of the workflow (another execution recorded first, fenced, or destroyed)."""

    def __init__(self, workflow_id: str, message: str | None = None) -> None:
        self.workflow_id = workflow_id
        super().__init__(
            _with_detail(f"Conflicting workflow ID {workflow_id}", message),
            DBOSErrorCode.ConflictingIDError,
        )


class DBOSRecoveryError(DBOSException):
    def __init__(self, workflow_id: str, message: str | None = None) -> None:
        self.workflow_id = workflow_id
        super().__init__(
            _with_detail(f"Recovery error for workflow ID {workflow_id}", message),
            DBOSErrorCode.RecoveryError,
        )


class DBOSInitializationError(DBOSException):
    def __init__(self, message: str) -> None:
        super().__init__(f"Error initializing DBOS: {message}", DBOSErrorCode.InitializationError)


class DBOSWorkflowFunctionNotFoundError(DBOSException):
    def __init__(self, workflow_id: str, message: str | None = None) -> None:
        self.workflow_id = workflow_id
        super().__init__(
            _with_detail(f"Workflow function not found for workflow {workflow_id}", message),
            DBOSErrorCode.WorkflowFunctionNotFound,
        )


class DBOSNonExistentWorkflowError(DBOSException):
    def __init__(self, workflow_id: str, message: str | None = None) -> None:
        self.workflow_id = workflow_id
        super().__init__(
            _with_detail(f"Workflow {workflow_id} does not exist", message),
            DBOSErrorCode.NonExistentWorkflowError,
        )


class MaxRecoveryAttemptsExceededError(DBOSException):
    def __init__(self, workflow_id: str, max_recovery_attempts: int) -> None:
        self.workflow_id = workflow_id
        self.max_recovery_attempts = max_recovery_attempts
        super().__init__(
            f"Workflow {workflow_id} has exceeded its maximum of {max_recovery_attempts} recovery attempts "
            "and was moved to MAX_RECOVERY_ATTEMPTS_EXCEEDED",
            DBOSErrorCode.MaxRecoveryAttemptsExceeded,
        )


class DBOSMaxStepRetriesExceeded(DBOSException):
    """`errors` lists every attempt's exception, in order."""

    def __init__(self, step_name: str, max_retries: int, errors: list[BaseException] | None = None) -> None:
        self.step_name = step_name
        self.max_retries = max_retries
        self.errors: list[BaseException] = list(errors) if errors is not None else []
        message = f"Step {step_name} has exceeded its maximum of {max_retries} attempts"
        if self.errors:
            message += f"; last error: {_describe(self.errors[-1])}"
        super().__init__(message, DBOSErrorCode.MaxStepRetriesExceeded)


def _describe(exc: BaseException) -> str:
    try:
        return f"{type(exc).__name__}: {exc}"
    except Exception:
        return type(exc).__name__


class DBOSNotAuthorizedError(DBOSException):
    def __init__(self, msg: str) -> None:
        super().__init__(msg, DBOSErrorCode.NotAuthorized)
        self.status_code = 403


class DBOSConflictingWorkflowError(DBOSException):
    def __init__(self, workflow_id: str, msg: str | None = None) -> None:
        self.workflow_id = workflow_id
        super().__init__(
            _with_detail(f"Conflicting workflow invocation with the same ID ({workflow_id})", msg),
            DBOSErrorCode.ConflictingWorkflowError,
        )


class DBOSWorkflowCancelledError(DBOSBaseException):
    """Raised at a boundary of a CANCELLED workflow; callers see code 13 or 30 instead."""

    def __init__(self, msg: str | None = None, *, workflow_id: str | None = None) -> None:
        self.workflow_id = workflow_id
        if msg is None:
            msg = (
                f"Workflow {workflow_id} was cancelled"
                if workflow_id is not None
                else "Workflow was cancelled"
            )
        super().__init__(msg, DBOSErrorCode.WorkflowCancelled)


class DBOSUnexpectedStepError(DBOSException):
    """The determinism check failed: the step recorded at `step_id` has another name than the one now called."""

    def __init__(self, workflow_id: str, step_id: int, expected_name: str, recorded_name: str) -> None:
        self.workflow_id = workflow_id
        self.step_id = step_id
        self.expected_name = expected_name
        self.recorded_name = recorded_name
        super().__init__(
            f"During execution of workflow {workflow_id} step {step_id}, function {recorded_name} was recorded "
            f"when {expected_name} was expected. Check that your workflow is deterministic.",
            DBOSErrorCode.UnexpectedStep,
        )


class DBOSQueueDeduplicatedError(DBOSException):
    def __init__(
        self,
        workflow_id: str,
        queue_name: str,
        deduplication_id: str,
        existing_workflow_id: str | None = None,
        detail: str | None = None,
    ) -> None:
        self.workflow_id = workflow_id
        self.queue_name = queue_name
        self.deduplication_id = deduplication_id
        self.existing_workflow_id = existing_workflow_id
        message = (
            f"Workflow {workflow_id} was deduplicated: deduplication ID {deduplication_id} is already held "
            f"on queue {queue_name}"
        )
        if existing_workflow_id is not None:
            message += f" by workflow {existing_workflow_id}"
        super().__init__(_with_detail(message, detail), DBOSErrorCode.QueueDeduplicated)


class DBOSAwaitedWorkflowCancelledError(DBOSException):
    def __init__(self, workflow_id: str) -> None:
        self.workflow_id = workflow_id
        super().__init__(
            f"Awaited workflow {workflow_id} was cancelled", DBOSErrorCode.AwaitedWorkflowCancelled
        )


class DBOSAwaitedWorkflowMaxRecoveryAttemptsExceeded(DBOSException):
    def __init__(self, workflow_id: str) -> None:
        self.workflow_id = workflow_id
        super().__init__(
            f"Awaited workflow {workflow_id} has exceeded its maximum number of recovery attempts",
            DBOSErrorCode.AwaitedWorkflowMaxRecoveryAttemptsExceeded,
        )


class DBOSPatchNondeterminismError(DBOSException):
    def __init__(self, workflow_id: str, patch_name: str, details: str) -> None:
        self.workflow_id = workflow_id
        self.patch_name = patch_name
        self.details = details
        super().__init__(
            f"Workflow {workflow_id} cannot decide patch {patch_name} deterministically: {details}",
            DBOSErrorCode.PatchNondeterminism,
        )


class DBOSStreamTimeoutError(DBOSException):
    def __init__(
        self, workflow_id: str, key: str, timeout_seconds: float | None, detail: str | None = None
    ) -> None:
        self.workflow_id = workflow_id
        self.key = key
        self.timeout_seconds = timeout_seconds
        if detail is None:
            detail = f"no value arrived within {timeout_seconds} seconds"
        super().__init__(
            f"Reading stream {key!r} of workflow {workflow_id} timed out: {detail}",
            DBOSErrorCode.StreamTimeout,
        )


class DBOSStreamNondeterminismError(DBOSException):
    def __init__(self, workflow_id: str, key: str) -> None:
        self.workflow_id = workflow_id
        self.key = key
        super().__init__(
            f"Workflow {workflow_id} started a checkpointed read of stream {key!r} while another checkpointed "
            "stream read of the same workflow was still waiting; read streams sequentially",
            DBOSErrorCode.StreamNondeterminism,
        )


class DBOSStepTimeoutError(DBOSException):
    def __init__(self, step_name: str, timeout_seconds: float) -> None:
        self.step_name = step_name
        self.timeout_seconds = timeout_seconds
        super().__init__(
            f"Step {step_name} exceeded its timeout of {timeout_seconds} seconds", DBOSErrorCode.StepTimeout
        )


class DBOSConflictingRegistrationError(DBOSException):
    def __init__(self, name: str, detail: str | None = None) -> None:
        self.name = name
        super().__init__(
            _with_detail(f"{name!r} is already registered as a different kind of function", detail),
            DBOSErrorCode.ConflictingRegistrationError,
        )


def _iso_utc(epoch_ms: int) -> str:
    moment = datetime.datetime.fromtimestamp(epoch_ms / 1000, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class DBOSWorkflowTimeoutError(DBOSAwaitedWorkflowCancelledError):
    """A workflow was cancelled by its deadline (02 §2 rule 8)."""

    def __init__(
        self,
        workflow_id: str,
        timeout_seconds: float | None,
        deadline_epoch_ms: int,
        parent_workflow_id: str | None = None,
    ) -> None:
        self.workflow_id = workflow_id
        self.timeout_seconds = timeout_seconds
        self.deadline_epoch_ms = deadline_epoch_ms
        self.parent_workflow_id = parent_workflow_id
        prefix = f"Workflow {workflow_id} was cancelled because it exceeded its"
        if timeout_seconds is not None:
            message = f"{prefix} timeout of {float(timeout_seconds)} seconds"
        else:
            message = f"{prefix} deadline {_iso_utc(deadline_epoch_ms)}"
            if parent_workflow_id is not None:
                message += f" inherited from workflow {parent_workflow_id}"
        DBOSException.__init__(self, message, DBOSErrorCode.WorkflowTimeout)


class DBOSValidationError(DBOSException, ValueError):
    """A bad-input rule failed (01 §15). Also a `ValueError`."""

    def __init__(self, message: str) -> None:
        super().__init__(message, DBOSErrorCode.ValidationError)


class DBOSPayloadTooLargeError(DBOSValidationError):
    def __init__(self, what: str, size: int, limit: int) -> None:
        self.what = what
        self.size = size
        self.limit = limit
        super().__init__(
            f"{what} is too large: {size} bytes after serialization, more than max_payload_bytes={limit}"
        )
        self.dbos_error_code = DBOSErrorCode.PayloadTooLarge.value


class DBOSSerializationError(DBOSException, TypeError):
    """A value cannot be serialized or deserialized, or its serializer is unavailable. Also a `TypeError`."""

    def __init__(self, what: str, detail: str) -> None:
        self.what = what
        self.detail = detail
        super().__init__(f"Serialization error for {what}: {detail}", DBOSErrorCode.SerializationError)


# --------------------------------------------------------------------------------------------------------------
# 07 §12.2
# --------------------------------------------------------------------------------------------------------------


class DBOSStorageError(DBOSException):
    """A storage failure that is not retried, or whose retries are exhausted.

    `outcome_unknown=True` means the call may have taken effect; repeating it with the same workflow ID or
    idempotency key is safe.
    """

    _storage_code = DBOSErrorCode.StorageError

    def __init__(self, message: str, *, outcome_unknown: bool = False) -> None:
        self.outcome_unknown = outcome_unknown
        super().__init__(message, type(self)._storage_code)


class DBOSDatabaseUnavailableError(DBOSStorageError):
    _storage_code = DBOSErrorCode.DatabaseUnavailable


class DBOSDatabaseFullError(DBOSStorageError):
    _storage_code = DBOSErrorCode.DatabaseFull


class DBOSDatabaseReadOnlyError(DBOSStorageError):
    _storage_code = DBOSErrorCode.DatabaseReadOnly


class DBOSStorageTimeoutError(DBOSStorageError):
    _storage_code = DBOSErrorCode.StorageTimeout


class DBOSSchemaError(DBOSStorageError):
    _storage_code = DBOSErrorCode.SchemaError
