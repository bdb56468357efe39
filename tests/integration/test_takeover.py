"""Takeover of an executor on another host: no pid probe is possible, so its workflows move when its lease expires."""

from __future__ import annotations

import secrets
import time

from dbos import DBOS
from dbos._store import open_system_store
from dbos._store.base import ExecutorRegistration, NewWorkflow, StoreSettings


def test_remote_executor_is_taken_over_after_lease(db_url: str) -> None:
    DBOS.destroy()

    @DBOS.workflow()
    def remote_wf(x: int) -> int:
        return x * 3

    DBOS(
        config={
            "name": "takeover-app",
            "system_database_url": db_url,
            "executor_heartbeat_interval_sec": 0.2,
            "executor_lease_sec": 1.0,
            "application_version": "v1",
        }
    )
    DBOS.launch()
    try:
        store = open_system_store(db_url, StoreSettings(role="tool"))
        try:
            reg = store.register_executor(
                ExecutorRegistration(
                    executor_id="remote-host-exec",
                    application_name="takeover-app",
                    application_version="v1",
                    hostname="elsewhere",
                    host_identity="elsewhere|boot",
                    pid=1,
                    process_start=None,
                    heartbeat_interval_ms=200,
                    lease_ms=1500,
                )
            )
            from dbos._dbos import current_engine

            inputs = current_engine().serializers.serialize_inputs(
                (7,), {}, workflow_name="x", max_bytes=1 << 20
            )
            store.insert_workflow(
                NewWorkflow(
                    workflow_id="remote-1",
                    name=remote_wf.__qualname__,
                    class_name=None,
                    config_name=None,
                    inputs=inputs,
                    receiver=None,
                    status="PENDING",
                    owner=("remote-host-exec", reg.incarnation, secrets.token_hex(16)),
                    creator_token=secrets.token_hex(16),
                    application_name="takeover-app",
                    application_version="v1",
                    recovery_attempts=1,
                )
            )
        finally:
            store.close()
        start = time.monotonic()
        assert DBOS.retrieve_workflow("remote-1").get_result(polling_interval_sec=0.1) == 21
        waited = time.monotonic() - start
        assert 0.8 < waited < 5.0  # not before the lease expired (1.5 s from registration), soon after it
        status = DBOS.get_workflow_status("remote-1")
        assert status is not None and status.recovery_attempts == 2 and status.executor_id == DBOS.executor_id
    finally:
        DBOS.destroy()
