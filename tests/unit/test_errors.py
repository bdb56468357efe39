"""dbos.error: codes, bases, messages and pickle round trips of every class (01 §14, 07 §12.2)."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

import dbos.error as error_module
from dbos.error import (
    DBOSAwaitedWorkflowCancelledError,
    DBOSAwaitedWorkflowMaxRecoveryAttemptsExceeded,
    DBOSBaseException,
    DBOSConflictingRegistrationError,
    DBOSConflictingWorkflowError,
    DBOSDatabaseFullError,
    DBOSDatabaseReadOnlyError,
    DBOSDatabaseUnavailableError,
    DBOSErrorCode,
    DBOSException,
    DBOSInitializationError,
    DBOSMaxStepRetriesExceeded,
    DBOSNonExistentWorkflowError,
    DBOSNotAuthorizedError,
    DBOSPatchNondeterminismError,
    DBOSPayloadTooLargeError,
    DBOSQueueDeduplicatedError,
    DBOSRecoveryError,
    DBOSSchemaError,
    DBOSSerializationError,
    DBOSStepTimeoutError,
    DBOSStorageError,
    DBOSStorageTimeoutError,
    DBOSStreamNondeterminismError,
    DBOSStreamTimeoutError,
    DBOSUnexpectedStepError,
    DBOSValidationError,
    DBOSWorkflowCancelledError,
    DBOSWorkflowConflictIDError,
    DBOSWorkflowFunctionNotFoundError,
    DBOSWorkflowTimeoutError,
    MaxRecoveryAttemptsExceededError,
)

# (instance, code, bases that must hold)
CASES: list[tuple[DBOSException | DBOSBaseException, int, tuple[type, ...]]] = [
    (DBOSWorkflowConflictIDError("wf-1"), 1, (DBOSBaseException, BaseException)),
    (DBOSRecoveryError("wf-1", "missing status"), 2, (DBOSException,)),
    (DBOSInitializationError("bad config"), 3, (DBOSException,)),
    (DBOSWorkflowFunctionNotFoundError("wf-1", "no such function"), 4, (DBOSException,)),
    (DBOSNonExistentWorkflowError("wf-1"), 5, (DBOSException,)),
    (MaxRecoveryAttemptsExceededError("wf-1", 50), 6, (DBOSException,)),
    (DBOSMaxStepRetriesExceeded("step", 3, [ValueError("a"), KeyError("b")]), 7, (DBOSException,)),
    (DBOSNotAuthorizedError("denied"), 8, (DBOSException,)),
    (DBOSConflictingWorkflowError("wf-1", "other function"), 9, (DBOSException,)),
    (DBOSWorkflowCancelledError("cancelled", workflow_id="wf-1"), 10, (DBOSBaseException, BaseException)),
    (DBOSUnexpectedStepError("wf-1", 3, "step_a", "step_b"), 11, (DBOSException,)),
    (DBOSQueueDeduplicatedError("wf-1", "q", "dedup", existing_workflow_id="wf-0"), 12, (DBOSException,)),
    (DBOSAwaitedWorkflowCancelledError("wf-1"), 13, (DBOSException,)),
    (DBOSAwaitedWorkflowMaxRecoveryAttemptsExceeded("wf-1"), 14, (DBOSException,)),
    (DBOSPatchNondeterminismError("wf-1", "patch", "details"), 15, (DBOSException,)),
    (DBOSStreamTimeoutError("wf-1", "key", 0.2), 16, (DBOSException,)),
    (DBOSStreamNondeterminismError("wf-1", "key"), 17, (DBOSException,)),
    (DBOSStepTimeoutError("step", 0.2), 18, (DBOSException,)),
    (DBOSConflictingRegistrationError("name"), 25, (DBOSException,)),
    (
        DBOSWorkflowTimeoutError("wf-1", 30.0, 1_700_000_000_000),
        30,
        (DBOSAwaitedWorkflowCancelledError, DBOSException),
    ),
    (DBOSValidationError("bad"), 31, (DBOSException, ValueError)),
    (DBOSPayloadTooLargeError("inputs", 2000, 1024), 32, (DBOSValidationError, DBOSException, ValueError)),
    (DBOSSerializationError("inputs", "lambda"), 33, (DBOSException, TypeError)),
    (DBOSStorageError("disk error", outcome_unknown=True), 34, (DBOSException,)),
    (DBOSDatabaseUnavailableError("down"), 35, (DBOSStorageError, DBOSException)),
    (DBOSDatabaseFullError("full", outcome_unknown=True), 36, (DBOSStorageError, DBOSException)),
    (DBOSDatabaseReadOnlyError("read-only"), 37, (DBOSStorageError, DBOSException)),
    (DBOSStorageTimeoutError("busy"), 38, (DBOSStorageError, DBOSException)),
    (DBOSSchemaError("run dbos migrate"), 39, (DBOSStorageError, DBOSException)),
]

IDS = [type(case[0]).__name__ for case in CASES]


def _comparable(value: Any) -> Any:
    """Exceptions compare by identity, so compare lists of them by type and args."""
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    if isinstance(value, BaseException):
        return (type(value), value.args)
    return value


@pytest.mark.parametrize(("exc", "code", "bases"), CASES, ids=IDS)
def test_code_and_bases(exc: DBOSException | DBOSBaseException, code: int, bases: tuple[type, ...]) -> None:
    assert exc.dbos_error_code == code
    assert DBOSErrorCode(code).value == code
    for base in bases:
        assert isinstance(exc, base)


@pytest.mark.parametrize(("exc", "code", "bases"), CASES, ids=IDS)
def test_pickle_round_trip(
    exc: DBOSException | DBOSBaseException, code: int, bases: tuple[type, ...]
) -> None:
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is type(exc)
    assert str(back) == str(exc)
    assert back.args == exc.args
    assert {k: _comparable(v) for k, v in vars(back).items()} == {
        k: _comparable(v) for k, v in vars(exc).items()
    }
    assert back.message == exc.message
    assert back.dbos_error_code == code
    for base in bases:
        assert isinstance(back, base)


@pytest.mark.parametrize(("exc", "code", "bases"), CASES, ids=IDS)
def test_str_format(exc: DBOSException | DBOSBaseException, code: int, bases: tuple[type, ...]) -> None:
    assert str(exc) == f"DBOS Error {code}: {exc.message}"


def test_every_class_is_covered_and_exported() -> None:
    covered = {type(case[0]) for case in CASES}
    classes = {
        obj
        for obj in vars(error_module).values()
        if isinstance(obj, type) and issubclass(obj, BaseException) and obj.__module__ == "dbos.error"
    }
    assert classes - {DBOSException, DBOSBaseException} == covered
    assert set(error_module.__all__) == {c.__name__ for c in classes} | {"DBOSErrorCode"}
    assert {c.value for c in DBOSErrorCode} == {case[1] for case in CASES}


def test_base_shapes() -> None:
    plain = DBOSException("something went wrong")
    assert str(plain) == "DBOS Error: something went wrong"
    assert (plain.message, plain.dbos_error_code, plain.status_code) == ("something went wrong", None, None)
    coded = DBOSException("x", DBOSErrorCode.RecoveryError)
    assert coded.dbos_error_code == 2 and str(coded) == "DBOS Error 2: x"
    assert str(DBOSException("y", 7)) == "DBOS Error 7: y"
    base = DBOSBaseException("stop")
    assert not isinstance(base, Exception)
    assert str(base) == "DBOS Error: stop" and base.status_code is None
    for exc in (plain, coded, base):
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc) and str(back) == str(exc)


def test_base_exceptions_are_not_caught_by_except_exception() -> None:
    for exc in (DBOSWorkflowCancelledError("c"), DBOSWorkflowConflictIDError("wf")):
        with pytest.raises(BaseException) as info:
            try:
                raise exc
            except Exception:  # pragma: no cover - must not happen
                pytest.fail("a DBOSBaseException was caught by `except Exception`")
        assert info.value is exc


def test_workflow_timeout_caught_as_awaited_cancelled_and_exception() -> None:
    with pytest.raises(DBOSAwaitedWorkflowCancelledError) as info:
        raise DBOSWorkflowTimeoutError("wf-1", 30.0, 1_700_000_000_000)
    assert "30.0" in str(info.value)
    try:
        raise DBOSWorkflowTimeoutError("wf-1", 1.0, 1_700_000_000_000)
    except Exception as exc:
        assert isinstance(exc, DBOSWorkflowTimeoutError)
        assert "1.0" in str(exc)


def test_workflow_timeout_messages_and_attributes() -> None:
    own = DBOSWorkflowTimeoutError("wf-1", 30, 1_700_000_000_000)
    assert own.message == "Workflow wf-1 was cancelled because it exceeded its timeout of 30.0 seconds"
    assert (own.workflow_id, own.timeout_seconds, own.deadline_epoch_ms) == ("wf-1", 30, 1_700_000_000_000)
    inherited = DBOSWorkflowTimeoutError("child", None, 1_700_000_000_123, parent_workflow_id="parent")
    assert inherited.message == (
        "Workflow child was cancelled because it exceeded its deadline 2023-11-14T22:13:20.123Z "
        "inherited from workflow parent"
    )
    assert inherited.timeout_seconds is None and inherited.parent_workflow_id == "parent"
    back = pickle.loads(pickle.dumps(inherited))
    assert back.parent_workflow_id == "parent" and back.deadline_epoch_ms == 1_700_000_000_123


def test_validation_and_serialization_builtin_bases() -> None:
    with pytest.raises(ValueError):
        raise DBOSValidationError("bad")
    with pytest.raises(ValueError):
        raise DBOSPayloadTooLargeError("the inputs of workflow 'w'", 1025, 1024)
    with pytest.raises(TypeError):
        raise DBOSSerializationError("the inputs of workflow 'w'", "lambda")


def test_specific_attributes() -> None:
    auth = DBOSNotAuthorizedError("no")
    assert auth.status_code == 403 and pickle.loads(pickle.dumps(auth)).status_code == 403

    step = DBOSUnexpectedStepError("wf-9", 4, "expected_fn", "recorded_fn")
    assert all(part in str(step) for part in ("wf-9", "4", "expected_fn", "recorded_fn"))
    assert (step.step_id, step.expected_name, step.recorded_name) == (4, "expected_fn", "recorded_fn")

    retries = DBOSMaxStepRetriesExceeded("my_step", 3, [ValueError("a"), ValueError("b"), ValueError("c")])
    assert (retries.step_name, retries.max_retries, len(retries.errors)) == ("my_step", 3, 3)
    assert [str(e) for e in pickle.loads(pickle.dumps(retries)).errors] == ["a", "b", "c"]

    dedup = pickle.loads(
        pickle.dumps(DBOSQueueDeduplicatedError("wf-1", "q", "d", existing_workflow_id="wf-0"))
    )
    assert (dedup.workflow_id, dedup.queue_name, dedup.deduplication_id, dedup.existing_workflow_id) == (
        "wf-1",
        "q",
        "d",
        "wf-0",
    )

    big = DBOSPayloadTooLargeError("the output of step 's'", 2000, 1024)
    assert (big.what, big.size, big.limit) == ("the output of step 's'", 2000, 1024)
    assert all(part in str(big) for part in ("the output of step 's'", "2000", "1024"))

    ser = DBOSSerializationError("argument 'x'", "datetime")
    assert (ser.what, ser.detail) == ("argument 'x'", "datetime")


@pytest.mark.parametrize(
    "cls",
    [
        DBOSStorageError,
        DBOSDatabaseUnavailableError,
        DBOSDatabaseFullError,
        DBOSDatabaseReadOnlyError,
        DBOSStorageTimeoutError,
        DBOSSchemaError,
    ],
)
def test_storage_errors_keep_outcome_unknown(cls: type[DBOSStorageError]) -> None:
    for unknown in (False, True):
        exc = cls("enqueue of workflow 'x' on queue 'q' failed", outcome_unknown=unknown)
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is cls and back.outcome_unknown is unknown and back.message == exc.message
    assert cls("m").outcome_unknown is False


def test_user_subclass_with_its_own_signature_round_trips() -> None:
    class_under_test = _UserError
    exc = class_under_test(42, extra={"k": [1, 2]})
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is class_under_test
    assert (back.number, back.extra, str(back)) == (42, {"k": [1, 2]}, str(exc))


class _UserError(DBOSException):
    def __init__(self, number: int, *, extra: dict[str, Any]) -> None:
        self.number = number
        self.extra = extra
        super().__init__(f"user error {number}")
