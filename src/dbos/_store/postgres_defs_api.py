"""PostgresStore's database-backed queue definitions and pauses (03 §18) and application versions (05 §7)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from . import base, records
from . import queue_defs as qd
from . import textcheck as tc
from .postgres_defs import update_once, upsert_once
from .postgres_manage_api import Plumbing


class DefinitionMethods(Plumbing):
    settings: base.StoreSettings
    _dsql: Any
    _vsql: Any

    # queue definitions and pauses --------------------------------------------------------------------------------

    def upsert_queue(
        self, name: str, config: str, *, overwrite: bool, application_name: str | None
    ) -> base.QueueDefRow:
        qd.check_queue_name(name)
        qd.check_config(config, self.settings.max_payload_bytes)
        records.check_opt_name(application_name, "application name")
        params = {"name": name, "config": config, "application_name": application_name}
        row, wrote = self._pooled(
            "upsert_queue", lambda conn: upsert_once(conn, self._dsql, params, overwrite, self._count)
        )
        if wrote:
            self._publish(qd.changes_of(name))
        return row

    def update_queue(
        self, name: str, patch: Mapping[str, Any], validate: Callable[[Mapping[str, Any]], None]
    ) -> base.QueueDefRow | None:
        qd.check_queue_name(name)
        limit = self.settings.max_payload_bytes
        row = self._pooled(
            "update_queue",
            lambda conn: update_once(conn, self._dsql, name, patch, validate, limit, self._count),
        )
        if row is not None:
            self._publish(qd.changes_of(name))
        return row

    def get_queue(self, name: str) -> base.QueueDefRow | None:
        qd.check_queue_name(name)
        row = self._pooled(
            "get_queue",
            lambda conn: self._one(conn, "get_queue", self._dsql.get, {"name": name}, write=False),
        )
        return None if row is None else qd.def_row(row)

    def list_queues(self) -> list[base.QueueDefRow]:
        rows = self._pooled(
            "list_queues", lambda conn: self._all(conn, "list_queues", self._dsql.list, {}, write=False)
        )
        return [qd.def_row(r) for r in rows]

    def delete_queue(self, name: str) -> bool:
        qd.check_queue_name(name)
        row = self._pooled(
            "delete_queue",
            lambda conn: self._one(conn, "delete_queue", self._dsql.delete, {"name": name}, write=True),
        )
        if row is not None:
            self._publish(qd.changes_of(name))
        return row is not None

    def set_queue_paused(self, name: str, paused: bool) -> None:
        qd.check_queue_name(name)
        query = self._dsql.pause if paused else self._dsql.resume
        row = self._pooled(
            "set_queue_paused",
            lambda conn: self._one(conn, "set_queue_paused", query, {"name": name}, write=True),
        )
        if row is not None:
            self._publish(qd.changes_of(name))

    def list_paused_queues(self) -> frozenset[str]:
        rows = self._pooled(
            "list_paused_queues",
            lambda conn: self._all(conn, "list_paused_queues", self._dsql.list_paused, {}, write=False),
        )
        return frozenset(str(r[0]) for r in rows)

    # application versions (05 §7) -------------------------------------------------------------------------

    def list_app_versions(self, application_name: str | None) -> list[base.AppVersionRow]:
        records.check_opt_name(application_name, "application name")
        params = {"app": records.app_key(application_name)}
        rows = self._pooled(
            "list_app_versions",
            lambda conn: self._all(conn, "list_app_versions", self._vsql.list, params, write=False),
        )
        return [base.AppVersionRow(str(r[0]), str(r[1]), int(r[2]), int(r[3])) for r in rows]

    def set_latest_app_version(self, application_name: str | None, version_name: str) -> bool:
        records.check_opt_name(application_name, "application name")
        tc.check_name(version_name, "application version")
        params = {"app": records.app_key(application_name), "version": version_name}
        row = self._pooled(
            "set_latest_app_version",
            lambda conn: self._one(conn, "set_latest_app_version", self._vsql.set_latest, params, write=True),
        )
        if row is None:
            return False
        self._publish([base.Change("ctl", ("versions",))])
        return True
