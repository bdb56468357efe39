"""Application versions on PostgreSQL (05 §7): the versions table, newest first, and promoting one to the latest."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from .postgres_conn import NOW_MS
from .postgres_sql import notify, render

_COLUMNS = "version_id, version_name, version_timestamp, created_at"


@dataclass(frozen=True)
class VersionStatements:
    list: str
    set_latest: str


def build_version_statements(schema: str, ctl_channel: str) -> VersionStatements:
    ident = sql.Identifier(schema)
    listing = (
        f"SELECT {_COLUMNS} FROM {{s}}.app_versions WHERE application_name = %(app)s "
        "ORDER BY version_timestamp DESC, version_name DESC"
    )
    # Above every other version of the application, as registration does (05 §7 rules 4-5); the NOTIFY wakes
    # dispatchers, since the newest live version may have changed.
    set_latest = (
        "WITH u AS (UPDATE {s}.app_versions v SET version_timestamp = GREATEST("
        f"{NOW_MS}, (SELECT max(x.version_timestamp) + 1 FROM {{s}}.app_versions x "
        "WHERE x.application_name = %(app)s AND x.version_name <> %(version)s)) "
        "WHERE v.application_name = %(app)s AND v.version_name = %(version)s RETURNING v.version_name) "
        f"SELECT {notify(ctl_channel, 'ctl', chr(39) + 'versions' + chr(39))} FROM u"
    )
    return VersionStatements(render(listing, ident), render(set_latest, ident))
