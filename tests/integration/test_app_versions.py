"""Application versions through the public API, on both backends (05 §7; 03 §18 rule 2 `on_conflict`).

A newer version is registered the way a newly deployed executor registers it: a real executor record written to
the system database (no mock).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conftest import register_remote_executor
from dbos import DBOS, DBOSClient
from dbos.error import DBOSException, DBOSValidationError


def register_newer(dbos_config: dict[str, Any], version: str = "v-newer") -> None:
    register_remote_executor(dbos_config["name"], f"deploy-{version}", version)


def test_launch_registers_this_version_as_latest(dbos: type[DBOS]) -> None:
    own = DBOS.application_version
    versions = DBOS.list_application_versions()
    assert [v["version_name"] for v in versions] == [own]
    latest = DBOS.get_latest_application_version()
    assert latest == versions[0] and latest["version_timestamp"] > 0 and latest["version_id"]


def test_set_latest_rolls_back_and_forward(dbos: type[DBOS], dbos_config: dict[str, Any]) -> None:
    own = DBOS.application_version
    register_newer(dbos_config)
    assert DBOS.get_latest_application_version()["version_name"] == "v-newer"
    assert [v["version_name"] for v in DBOS.list_application_versions()] == ["v-newer", own]
    DBOS.set_latest_application_version(own)
    assert DBOS.get_latest_application_version()["version_name"] == own
    with pytest.raises(DBOSException, match="unknown application version 'nope'"):
        DBOS.set_latest_application_version("nope")
    with pytest.raises(DBOSValidationError, match="version_name"):
        DBOS.set_latest_application_version("")
    assert DBOS.get_latest_application_version()["version_name"] == own  # nothing changed


def test_register_queue_update_if_latest_version(dbos: type[DBOS], dbos_config: dict[str, Any]) -> None:
    queue = DBOS.register_queue("vq", concurrency=1)
    register_newer(dbos_config)  # this executor no longer runs the latest version
    DBOS.register_queue("vq", concurrency=5)  # default: update_if_latest_version
    assert queue.concurrency == 1
    DBOS.register_queue("vq", concurrency=5, on_conflict="always_update")
    assert queue.concurrency == 5
    DBOS.set_latest_application_version(DBOS.application_version)
    DBOS.register_queue("vq", concurrency=7)
    assert queue.concurrency == 7
    DBOS.register_queue("vq", concurrency=9, on_conflict="never_update")
    assert queue.concurrency == 7


def test_async_twins(dbos: type[DBOS], dbos_config: dict[str, Any]) -> None:
    register_newer(dbos_config)

    async def go() -> list[str]:
        assert (await DBOS.get_latest_application_version_async())["version_name"] == "v-newer"
        await DBOS.set_latest_application_version_async(DBOS.application_version)
        return [v["version_name"] for v in await DBOS.list_application_versions_async()]

    assert asyncio.run(go()) == [DBOS.application_version, "v-newer"]


def test_client_sees_and_sets_versions(dbos: type[DBOS], dbos_config: dict[str, Any]) -> None:
    register_newer(dbos_config)
    client = DBOSClient(
        system_database_url=dbos_config["system_database_url"], application_name=dbos_config["name"]
    )
    try:
        assert client.get_latest_application_version()["version_name"] == "v-newer"
        client.set_latest_application_version(DBOS.application_version)
        assert DBOS.get_latest_application_version()["version_name"] == DBOS.application_version
        assert len(client.list_application_versions()) == 2
        with pytest.raises(DBOSException, match="unknown application version"):
            client.set_latest_application_version("nope")
    finally:
        client.destroy()


def test_set_latest_inside_a_workflow_is_checkpointed(dbos: type[DBOS], dbos_config: dict[str, Any]) -> None:
    register_newer(dbos_config)

    @DBOS.workflow()
    def promote() -> str:
        DBOS.set_latest_application_version(DBOS.application_version)
        return DBOS.get_latest_application_version()["version_name"]

    assert promote() == DBOS.application_version
