"""`DBOSClient` against a launched application, on both backends (02 §9)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

from conftest import wait_for
from dbos import DBOS, DBOSClient, Queue, SetWorkflowID
from dbos.error import (
    DBOSException,
    DBOSInitializationError,
    DBOSNonExistentWorkflowError,
    DBOSQueueDeduplicatedError,
    DBOSValidationError,
    DBOSWorkflowTimeoutError,
)

client_queue = Queue("client-q")
seen_auth: list[Any] = []


@DBOS.workflow()
def process_order(order_id: str, *, quantity: int = 1) -> str:
    return f"{order_id}x{quantity}"


@DBOS.workflow()
def client_sleeper(seconds: float) -> str:
    DBOS.sleep(seconds)
    return "slept"


@DBOS.workflow()
def who_am_i() -> str:
    seen_auth.append((DBOS.authenticated_user, DBOS.authenticated_roles))
    return str(DBOS.authenticated_user)


@DBOS.required_roles(["admin"])
@DBOS.workflow()
def admins_only() -> str:
    return "secret"


@pytest.fixture
def client(dbos: Any, db_url: str) -> Any:
    c = DBOSClient(system_database_url=db_url)
    yield c
    c.destroy()


def test_client_enqueue_and_result(client: Any) -> None:
    handle = client.enqueue({"queue_name": "client-q", "workflow_name": "process_order"}, "o-1", quantity=3)
    assert handle.get_result() == "o-1x3"
    assert client.retrieve_workflow(handle.workflow_id).get_result() == "o-1x3"
    st = client.get_workflow_status(handle.workflow_id)
    assert st.status == "SUCCESS" and st.queue_name == "client-q"


def test_client_same_id_twice_one_execution(client: Any) -> None:
    opts = {"queue_name": "client-q", "workflow_name": "process_order", "workflow_id": "client-fixed"}
    a = client.enqueue(opts, "o-2")
    b = client.enqueue(opts, "o-2")
    assert a.workflow_id == b.workflow_id == "client-fixed"
    assert a.get_result() == "o-2x1"
    assert len(DBOS.list_workflows(workflow_ids=["client-fixed"])) == 1


def test_client_dedup(client: Any) -> None:
    opts = {"queue_name": "client-q", "workflow_name": "client_sleeper", "deduplication_id": "cd-1"}
    first = client.enqueue(opts, 0.3)
    second = client.enqueue(opts, 0.3)
    assert second.workflow_id == first.workflow_id
    with pytest.raises(DBOSQueueDeduplicatedError):
        client.enqueue({**opts, "duplication_policy": "reject"}, 0.3)
    assert first.get_result() == "slept"


def test_client_timeout_starts_at_dequeue(client: Any) -> None:
    handle = client.enqueue(
        {"queue_name": "client-q", "workflow_name": "client_sleeper", "workflow_timeout": 0.5}, 30
    )
    t0 = time.monotonic()
    with pytest.raises(DBOSWorkflowTimeoutError):
        handle.get_result()
    assert time.monotonic() - t0 < 1.5
    st = client.get_workflow_status(handle.workflow_id)
    assert st.workflow_deadline_epoch_ms == st.dequeued_at + 500


def test_client_auth_and_roles(client: Any) -> None:
    seen_auth.clear()
    h = client.enqueue(
        {
            "queue_name": "client-q",
            "workflow_name": "who_am_i",
            "authenticated_user": "alice",
            "authenticated_roles": ["user"],
        }
    )
    assert h.get_result() == "alice"
    assert seen_auth == [("alice", ["user"])]
    denied = client.enqueue(
        {"queue_name": "client-q", "workflow_name": "admins_only", "authenticated_user": "bob"}
    )
    with pytest.raises(Exception) as info:
        denied.get_result()
    assert type(info.value).__name__ == "DBOSNotAuthorizedError"
    assert client.get_workflow_status(denied.workflow_id).status == "ERROR"


def test_client_management_matches_dbos(client: Any) -> None:
    with SetWorkflowID("cm-1"):
        DBOS.start_workflow(client_sleeper, 30)
    wait_for(lambda: (client.get_workflow_status("cm-1") or None) is not None)
    client.cancel_workflow("cm-1")
    assert DBOS.get_workflow_status("cm-1").status == "CANCELLED"  # type: ignore[union-attr]
    client.resume_workflow("cm-1")
    wait_for(lambda: client.get_workflow_status("cm-1").status == "PENDING", 5)
    client.cancel_workflow("cm-1")
    with SetWorkflowID("cm-src"):
        process_order("o-9")
    fork = client.fork_workflow("cm-src", 1)
    assert fork.get_result() == "o-9x1"
    assert client.get_workflow_status(fork.workflow_id).forked_from == "cm-src"
    assert [s.workflow_id for s in client.list_workflows(workflow_ids=["cm-1"])] == ["cm-1"]
    assert client.list_workflow_steps("cm-1") == DBOS.list_workflow_steps("cm-1")
    data = client.export_workflow("cm-1")
    client.delete_workflow("cm-1")
    assert DBOS.get_workflow_status("cm-1") is None
    assert client.import_workflow(data) == ["cm-1"]
    with pytest.raises(DBOSNonExistentWorkflowError):
        client.retrieve_workflow("nope")
    assert client.garbage_collect(keep_last=0) >= 1


def test_client_bad_input(client: Any, db_url: str) -> None:
    for bad in (
        {"workflow_name": "process_order"},
        {"queue_name": "client-q"},
        {"queue_name": "client-q", "workflow_name": "process_order", "priority": 0},
        {"queue_name": "client-q", "workflow_name": "process_order", "bogus": 1},
        {"queue_name": "client-q", "workflow_name": "process_order", "workflow_timeout": -1},
        {"queue_name": "", "workflow_name": "process_order"},
    ):
        with pytest.raises(DBOSValidationError):
            client.enqueue(bad, "x")
    c2 = DBOSClient(system_database_url=db_url)
    c2.destroy()
    c2.destroy()  # idempotent
    with pytest.raises(DBOSException):
        c2.list_workflows()


def test_client_against_empty_database_creates_nothing(tmp_path: Any) -> None:
    path = tmp_path / "empty.sqlite"
    with pytest.raises(DBOSInitializationError):
        DBOSClient(system_database_url=f"sqlite:///{path}")
    assert not path.exists() or path.stat().st_size == 0


def test_unregistered_name_stays_enqueued(client: Any) -> None:
    h = client.enqueue({"queue_name": "client-q", "workflow_name": "nobody_registered_this"})
    time.sleep(0.5)
    assert client.get_workflow_status(h.workflow_id).status == "ENQUEUED"
    client.cancel_workflow(h.workflow_id)


_CLIENT_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from dbos import DBOSClient
    with DBOSClient(system_database_url=sys.argv[1]) as client:
        h = client.enqueue({"queue_name": "client-q", "workflow_name": "process_order"}, "remote", quantity=2)
        print(json.dumps([h.workflow_id, h.get_result()]))
    """
)


def test_client_in_another_process(dbos: Any, db_url: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", _CLIENT_SCRIPT, db_url], capture_output=True, text=True, timeout=60, env=env
    )
    assert out.returncode == 0, out.stderr
    import json

    wid, result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == "remotex2"
    st = DBOS.get_workflow_status(wid)
    assert st is not None and st.status == "SUCCESS"


woke_at: dict[str, float] = {}


@DBOS.workflow()
def client_parked() -> None:
    try:
        DBOS.sleep(60)
    finally:
        woke_at[DBOS.workflow_id or ""] = time.monotonic()


_CANCEL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from dbos import DBOSClient
    with DBOSClient(system_database_url=sys.argv[1]) as client:
        t = time.monotonic()
        client.cancel_workflow(sys.argv[2])
        print("CANCELLED", time.monotonic() - t)
    """
)


def test_cancel_from_another_process_wakes_sleep(dbos: Any, db_url: str) -> None:
    handle = DBOS.start_workflow(client_parked)
    wait_for(lambda: len(DBOS.list_workflow_steps(handle.workflow_id)) == 1, 5)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _CANCEL_SCRIPT, db_url, handle.workflow_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    out, err = proc.communicate(timeout=60)
    t_done = time.monotonic()
    assert proc.returncode == 0, err
    wait_for(lambda: handle.workflow_id in woke_at, 1.0)  # PG: NOTIFY; SQLite: the change detector's ceiling
    assert woke_at[handle.workflow_id] - t_done < 0.3
    assert handle.get_status().status == "CANCELLED"


@DBOS.workflow()
def client_streamer(n: int) -> None:
    DBOS.set_event("started", True)
    for i in range(n):
        DBOS.write_stream("out", i)
        DBOS.sleep(0.01)
    DBOS.close_stream("out")


def test_client_messages_events_streams(client: Any) -> None:
    with SetWorkflowID("cl-stream"):
        DBOS.start_workflow(client_streamer, 20)
    assert client.get_event("cl-stream", "started", timeout_seconds=5) is True
    assert list(client.read_stream("cl-stream", "out")) == list(range(20))
    assert client.get_all_events("cl-stream") == {"started": True}
    with SetWorkflowID("cl-rcv"):
        h = DBOS.start_workflow(recv_for_client)
    client.send("cl-rcv", "via-client", "t", idempotency_key="once")
    client.send("cl-rcv", "via-client", "t", idempotency_key="once")
    assert h.get_result() == ["via-client", None]
    with pytest.raises(DBOSNonExistentWorkflowError):
        client.send("nobody-here", 1)


@DBOS.workflow()
def recv_for_client() -> list[Any]:
    return [DBOS.recv("t", timeout_seconds=5), DBOS.recv("t", timeout_seconds=0.3)]


_READER_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from dbos import DBOSClient
    with DBOSClient(system_database_url=sys.argv[1]) as client:
        print(json.dumps(list(client.read_stream(sys.argv[2], "out"))))
    """
)


def test_stream_reader_in_another_process(dbos: Any, db_url: str) -> None:
    with SetWorkflowID("cl-live"):
        h = DBOS.start_workflow(client_streamer, 30)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", _READER_SCRIPT, db_url, "cl-live"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    import json

    assert json.loads(out.stdout.strip().splitlines()[-1]) == list(range(30))
    h.get_result()


def test_client_stream_offset_and_async(client: Any) -> None:
    from dbos.error import DBOSStreamTimeoutError

    with SetWorkflowID("cl-offset"):
        DBOS.start_workflow(client_streamer, 5).get_result()
    assert client.read_stream_offset("cl-offset", "out", 3) == 3
    with pytest.raises(DBOSStreamTimeoutError) as info:
        client.read_stream_offset("cl-offset", "out", 10)
    assert "ended" in str(info.value)

    async def collect() -> list[Any]:
        return [v async for v in client.read_stream_async("cl-offset", "out", offset=2)]

    import asyncio

    assert asyncio.run(collect()) == [2, 3, 4]
    assert asyncio.run(client.read_stream_offset_async("cl-offset", "out", 0)) == 0
