"""App-version gating and stranded work through the public API, on both backends (03 §13, §19; 05 §7).

A newer live executor of the same application is simulated by registering one directly in the system database
(a real executor record, no mock); a second real process, configured with another `application_version`, runs
the work pinned to that version.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import register_remote_executor, wait_for
from dbos import DBOS, DBOSClient, Queue, SetEnqueueOptions
from dbos._dbos import current_engine


@DBOS.workflow()
def vg_echo(x: int) -> int:
    return x


@pytest.fixture
def queues(dbos: type[DBOS]) -> Iterator[type[DBOS]]:
    from dbos._queues.queue import QUEUES

    QUEUES.clear()
    yield dbos
    QUEUES.clear()


def test_enqueue_pinned_to_own_version_runs(queues: Any) -> None:
    q = Queue("vg-own")
    own = DBOS.application_version
    assert own is not None
    with SetEnqueueOptions(app_version=own):
        handle = q.enqueue(vg_echo, 3)
    assert handle.get_result() == 3
    assert handle.get_status().app_version == own


def test_version_less_work_waits_while_a_newer_version_is_live(
    queues: Any, dbos_config: dict[str, Any]
) -> None:
    Queue("vg-null")
    db = current_engine().db
    incarnation = register_remote_executor(
        dbos_config["name"], "newer-executor", "v-newer", queues_json='{"vg-null": {}}'
    )
    client = DBOSClient(
        system_database_url=dbos_config["system_database_url"], application_name=dbos_config["name"]
    )
    try:
        handle = client.enqueue({"queue_name": "vg-null", "workflow_name": "vg_echo"}, 7)
        time.sleep(0.5)  # several dispatcher passes over the queue
        assert handle.get_status().status == "ENQUEUED"
        (stats,) = DBOS.queue_stats("vg-null")
        assert stats["stranded"] == 0 and stats["listeners"] == sorted([DBOS.executor_id, "newer-executor"])
        db.mark_stopped("newer-executor", incarnation)
        assert handle.get_result(polling_interval_sec=0.05) == 7
        status = handle.get_status()
        assert status.app_version == DBOS.application_version and status.executor_id == DBOS.executor_id
    finally:
        client.destroy()


_OTHER_VERSION_APP = textwrap.dedent(
    """
    import sys
    from dbos import DBOS, Queue

    @DBOS.workflow()
    def vg_echo(x: int) -> int:
        return x

    Queue("vg-other")
    DBOS(config={"name": sys.argv[2], "system_database_url": sys.argv[1], "application_version": "other",
                 "executor_heartbeat_interval_sec": 0.5, "executor_lease_sec": 3.0})
    DBOS.launch()
    try:
        print("RESULT", DBOS.retrieve_workflow(sys.argv[3]).get_result(polling_interval_sec=0.05), flush=True)
    finally:
        DBOS.destroy()
    """
)


def test_other_version_is_stranded_until_an_executor_of_it_runs(
    queues: Any, dbos_config: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    q = Queue("vg-other")
    with SetEnqueueOptions(app_version="other"):
        handle = q.enqueue(vg_echo, 5)
    time.sleep(0.3)
    assert handle.get_status().status == "ENQUEUED"
    (stats,) = DBOS.queue_stats("vg-other")
    assert (stats["enqueued"], stats["stranded"]) == (1, 1)
    with caplog.at_level(logging.WARNING, logger="dbos"):
        dispatcher = current_engine().dispatcher
        dispatcher.check_stranded(time.monotonic())
        dispatcher.check_stranded(time.monotonic())  # at most one WARNING per (queue, version) per 10 minutes
    warnings = [r.getMessage() for r in caplog.records if "stranded" in r.getMessage()]
    assert len(warnings) == 1 and "'vg-other'" in warnings[0] and "'other'" in warnings[0]

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    args = [dbos_config["system_database_url"], dbos_config["name"], handle.workflow_id]
    out = subprocess.run(
        [sys.executable, "-c", _OTHER_VERSION_APP, *args], capture_output=True, text=True, timeout=60, env=env
    )
    assert out.returncode == 0, out.stderr
    assert "RESULT 5" in out.stdout
    status = handle.get_status()
    assert status.status == "SUCCESS" and status.app_version == "other"
    assert status.executor_id != DBOS.executor_id
    assert DBOS.queue_stats("vg-other")[0]["stranded"] == 0


def test_executor_record_publishes_declared_queues(queues: Any) -> None:
    Queue("vg-pub", concurrency=2)

    def published() -> dict[str, Any]:
        (me,) = [e for e in DBOS.list_executors() if e.executor_id == DBOS.executor_id]
        return me.queues

    wait_for(lambda: "vg-pub" in published(), 5)  # the next heartbeat publishes a queue declared after launch
    assert published()["vg-pub"]["concurrency"] == 2
    assert DBOS.queue_stats("vg-pub")[0]["listeners"] == [DBOS.executor_id]


def test_queue_stats_config_and_mismatch(queues: Any, dbos_config: dict[str, Any]) -> None:
    from dataclasses import asdict

    from dbos._queues.queue import QueueConfig

    Queue("vg-mm", concurrency=1)
    (alone,) = DBOS.queue_stats("vg-mm")
    assert alone["database_backed"] is False and alone["config"] is not None
    assert alone["config"]["concurrency"] == 1 and alone["config_mismatch"] is False
    other = json.dumps({"vg-mm": asdict(QueueConfig(concurrency=2))})
    register_remote_executor(dbos_config["name"], "peer-mm", DBOS.application_version, queues_json=other)
    (both,) = DBOS.queue_stats("vg-mm")
    assert (
        both["config_mismatch"] is True and both["config"]["concurrency"] == 1
    )  # this process's declaration
    assert both["listeners"] == sorted([DBOS.executor_id, "peer-mm"])
    DBOS.register_queue("vg-db", concurrency=3)
    (stored,) = DBOS.queue_stats("vg-db")
    assert stored["database_backed"] is True and stored["config"]["concurrency"] == 3
