"""Application versions on SQLite (05 §7): the versions table, newest first, and promoting one to the latest."""

from __future__ import annotations

import sqlite3

from . import base, records
from .sqlite_conn import WriteTx

_COLUMNS = "version_id, version_name, version_timestamp, created_at"
_LIST = (
    f"SELECT {_COLUMNS} FROM dbos_app_versions WHERE application_name = ? "
    "ORDER BY version_timestamp DESC, version_name DESC"
)
# Above every other version of the application, as registration does (05 §7 rules 4-5).
_SET_LATEST = """
UPDATE dbos_app_versions
SET version_timestamp = MAX(:now, COALESCE((SELECT MAX(version_timestamp) + 1 FROM dbos_app_versions
                                            WHERE application_name = :app AND version_name <> :version), :now))
WHERE application_name = :app AND version_name = :version
"""


def list_versions(conn: sqlite3.Connection, application_name: str | None) -> list[base.AppVersionRow]:
    rows = conn.execute(_LIST, (records.app_key(application_name),)).fetchall()
    return [base.AppVersionRow(str(r[0]), str(r[1]), int(r[2]), int(r[3])) for r in rows]


def set_latest(tx: WriteTx, application_name: str | None, version_name: str) -> bool:
    params = {"app": records.app_key(application_name), "version": version_name, "now": tx.now}
    if tx.execute(_SET_LATEST, params).rowcount == 0:
        return False
    tx.emit("ctl", "versions")  # the newest live version may have changed: dispatchers re-claim
    return True
