"""Bad input through the public API: clear errors, identical on both backends, and nothing written."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

import dbos
from dbos import DBOS, PortableWorkflowError, SetWorkflowID
from dbos.error import DBOSException, DBOSPayloadTooLargeError, DBOSSerializationError, DBOSValidationError


def _row_count(url: str) -> int:
    if url.startswith("sqlite:"):
        import sqlite3

        with sqlite3.connect(url[len("sqlite:///") :]) as conn:
            return int(conn.execute("SELECT count(*) FROM dbos_workflows").fetchone()[0])
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM dbos.workflows").fetchone()
        assert row is not None
        return int(row[0])


def test_public_names_are_pinned() -> None:
    assert sorted(dbos.__all__) == sorted(
        [
            "DBOS",
            "DBOSClient",
            "DBOSConfig",
            "DBOSConfiguredInstance",
            "DBOSContext",
            "DBOSContextEnsure",
            "DBOSContextSetAuth",
            "DuplicationPolicy",
            "EnqueueOptions",
            "ExecutorInfo",
            "PortableWorkflowError",
            "Queue",
            "QueueRateLimit",
            "QueueStats",
            "SendMessage",
            "Serializer",
            "SetEnqueueOptions",
            "SetWorkflowID",
            "SetWorkflowTimeout",
            "StepInfo",
            "StepStatus",
            "VersionInfo",
            "WorkflowHandle",
            "WorkflowHandleAsync",
            "WorkflowList",
            "WorkflowStatus",
            "WorkflowStatusString",
            "__version__",
            "error",
        ]
    )
    for name in dbos.__all__:
        assert hasattr(dbos, name)


def test_payload_limit(dbos_config: dict[str, Any]) -> None:
    limit = 4096
    DBOS.destroy()
    DBOS(config={**dbos_config, "max_payload_bytes": limit})  # type: ignore[typeddict-item]
    DBOS.launch()
    try:

        @DBOS.workflow()
        def wf(data: str) -> int:
            return len(data)

        with SetWorkflowID("too-big"):
            with pytest.raises(DBOSPayloadTooLargeError):
                wf("x" * limit)
        assert _row_count(dbos_config["system_database_url"]) == 0
        # a small argument is accepted
        assert wf("x" * 100) == 100
    finally:
        DBOS.destroy()


def test_rejected_calls_write_nothing(dbos: type[DBOS], dbos_config: dict[str, Any]) -> None:
    @DBOS.workflow()
    def wf(x: Any) -> None:
        pass

    with pytest.raises(DBOSSerializationError):
        wf(lambda: 1)
    with pytest.raises(DBOSValidationError):
        with SetWorkflowID(""):
            wf(1)
    assert _row_count(dbos_config["system_database_url"]) == 0


def test_child_with_own_id_raises(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def child() -> None:
        pass

    @DBOS.workflow()
    def parent() -> None:
        with SetWorkflowID("self-parent"):
            child()

    with SetWorkflowID("self-parent"):
        with pytest.raises(DBOSException, match="its own ID"):
            parent()


def test_workflow_inside_step_raises(dbos: type[DBOS]) -> None:
    @DBOS.workflow()
    def inner() -> None:
        pass

    @DBOS.step()
    def s() -> None:
        inner()

    @DBOS.workflow()
    def outer() -> None:
        s()

    with pytest.raises(DBOSException, match="inside a step"):
        outer()


def test_json_serializer(dbos_config: dict[str, Any]) -> None:
    DBOS.destroy()
    DBOS(config={**dbos_config, "serializer": "json"})  # type: ignore[typeddict-item]
    DBOS.launch()
    try:

        @DBOS.workflow()
        def echo(d: Any) -> Any:
            return d

        @DBOS.step()
        def fails() -> None:
            raise KeyError("missing")

        @DBOS.workflow()
        def catches() -> str:
            try:
                fails()
            except KeyError:
                return "live error is the original"
            return "no"

        value = {"a": [1, 2.5, "x", None, True]}
        with SetWorkflowID("json-1"):
            assert echo(value) == value
        status = DBOS.get_workflow_status("json-1")
        assert status is not None and status.output == value
        with SetWorkflowID("json-date"):
            with pytest.raises(DBOSSerializationError, match="datetime"):
                echo({"when": datetime.datetime.now()})
        assert DBOS.get_workflow_status("json-date") is None
        with SetWorkflowID("json-err"):
            assert catches() == "live error is the original"

        @DBOS.workflow()
        def raises() -> None:
            raise ValueError("json error")

        with SetWorkflowID("json-raise"):
            with pytest.raises(ValueError):
                raises()
        with SetWorkflowID("json-raise"):
            with pytest.raises(PortableWorkflowError, match="json error"):
                raises()
    finally:
        DBOS.destroy()
