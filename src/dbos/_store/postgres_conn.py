"""PostgreSQL connection setup: URL handling, database creation, server checks, advisory keys, channels and the
(07 §3.4 rule 4, §6.1, §6.5 rule 5, §6.6 rule 1)."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import conninfo as pg_conninfo
from psycopg import sql

_log = logging.getLogger("dbos")
_MISSING_DB = re.compile(r'database ".*" does not exist')

MIN_SERVER_VERSION = 130000
# plan_cache_mode: every store statement is a keyed point or range access whose plan does not depend on the
# values; generic plans skip per-execution re-planning of the prepared statements (~25 µs per checkpoint).
# jit=off: a generic plan's cost estimates (LIMIT and lane counts unknown) can cross jit_above_cost, and compiling
# costs ~100 ms on statements that run in under 1 ms (the claim).
SESSION_OPTIONS = (
    "-c TimeZone=UTC -c client_encoding=UTF8 -c statement_timeout=30000 -c lock_timeout=10000 "
    "-c idle_in_transaction_session_timeout=60000 -c plan_cache_mode=force_generic_plan -c jit=off"
)
_DEFAULTS = {
    "connect_timeout": "10",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "30000",
}
# The server time in epoch milliseconds, evaluated once per statement through the `_t` CTE.
NOW_MS = "(extract(epoch from clock_timestamp()) * 1000)::bigint"


def _init_error(message: str) -> Exception:
    from ..error import DBOSInitializationError

    return DBOSInitializationError(message)


# ---------------------------------------------------------------------------------------------------------------
# URL
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnSpec:
    conninfo: str  # libpq connection string with every default applied
    dbname: str
    prepare: bool  # False with dbos_prepare=off (PgBouncer transaction pooling)

    def for_database(self, dbname: str) -> str:
        return pg_conninfo.make_conninfo(self.conninfo, dbname=dbname)


def mask_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def parse_url(url: str, *, app_label: str) -> ConnSpec:
    """Strip `+psycopg` and the `dbos_*` query parameters, then add the defaults of 07 §6.1 rule 2."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.split("+", 1)[0] not in ("postgresql", "postgres"):
        raise _init_error(f"not a PostgreSQL URL: {mask_password(url)!r}")
    parts = urlsplit("postgresql://" + rest)
    query = parse_qsl(parts.query, keep_blank_values=True)
    dbos_params = {k: v for k, v in query if k.startswith("dbos_")}
    clean = urlunsplit(
        parts._replace(query=urlencode([(k, v) for k, v in query if not k.startswith("dbos_")]))
    )
    params: dict[str, Any] = pg_conninfo.conninfo_to_dict(clean)
    for key, value in _DEFAULTS.items():
        params.setdefault(key, value)
    params.setdefault("application_name", f"dbos:{app_label}"[:63])
    params["options"] = (str(params.get("options", "")) + " " + SESSION_OPTIONS).strip()
    dbname = str(params.get("dbname") or params.get("user") or "postgres")
    prepare = dbos_params.get("dbos_prepare", "on").lower() != "off"
    return ConnSpec(conninfo=pg_conninfo.make_conninfo(**params), dbname=dbname, prepare=prepare)


def connect_kwargs(spec: ConnSpec) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"autocommit": True}
    if not spec.prepare:
        kwargs["prepare_threshold"] = None
    return kwargs


# ---------------------------------------------------------------------------------------------------------------
# Opening: database creation and server checks
# ---------------------------------------------------------------------------------------------------------------


def is_missing_database(exc: psycopg.Error) -> bool:
    if getattr(exc, "sqlstate", None) == "3D000":
        return True
    return _MISSING_DB.search(str(exc)) is not None


def create_database(spec: ConnSpec) -> None:
    """CREATE DATABASE through the `postgres` database with the same credentials (07 §6.1 rule 3)."""
    try:
        with psycopg.connect(spec.for_database("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(spec.dbname)))
        _log.info("created PostgreSQL database %r", spec.dbname)
    except psycopg.errors.DuplicateDatabase:
        pass
    except psycopg.errors.InsufficientPrivilege as exc:
        raise _init_error(
            f"database {spec.dbname!r} does not exist and this user may not create it: create the database, "
            "or grant CREATEDB"
        ) from exc


def open_connection(spec: ConnSpec, *, create: bool) -> psycopg.Connection[tuple[Any, ...]]:
    """A new autocommit connection; creates the database first if it is missing and `create` is true."""
    try:
        return psycopg.connect(spec.conninfo, **connect_kwargs(spec))
    except psycopg.OperationalError as exc:
        if not (create and is_missing_database(exc)):
            raise
    create_database(spec)
    return psycopg.connect(spec.conninfo, **connect_kwargs(spec))


def database_exists(spec: ConnSpec) -> bool:
    try:
        psycopg.connect(spec.conninfo, **connect_kwargs(spec)).close()
        return True
    except psycopg.OperationalError as exc:
        if is_missing_database(exc):
            return False
        raise


def check_server(conn: psycopg.Connection[tuple[Any, ...]]) -> int:
    """Require PG >= 13 and UTF8 (07 §6.1 rule 1, §3.4 rule 4). Returns the server clock in epoch ms."""
    row = conn.execute(
        "SELECT current_setting('server_version_num')::int, current_setting('server_encoding'), " + NOW_MS
    ).fetchone()
    assert row is not None
    version, encoding, server_ms = int(row[0]), str(row[1]), int(row[2])
    if version < MIN_SERVER_VERSION:
        raise _init_error(f"PostgreSQL {version} is not supported; dbosx requires PostgreSQL 13 or newer")
    if encoding.upper().replace("-", "") != "UTF8":
        raise _init_error(f"the database's server_encoding is {encoding}; dbosx requires UTF8")
    return server_ms


# ---------------------------------------------------------------------------------------------------------------
# Keys and channels
# ---------------------------------------------------------------------------------------------------------------


def advisory_key(schema: str, purpose: str, *parts: str) -> int:
    """int.from_bytes(sha256(b"dbos\\0" + schema + b"\\0" + purpose + b"\\0" + b"\\0".join(parts))[:8], signed)."""
    data = (
        b"dbos\x00"
        + schema.encode()
        + b"\x00"
        + purpose.encode()
        + b"\x00"
        + b"\x00".join(p.encode() for p in parts)
    )
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big", signed=True)


CHANNEL_SUFFIX: dict[str, str] = {
    "wf": "wf",
    "msg": "msg",
    "evt": "evt",
    "stream": "evt",
    "queue": "queue",
    "ctl": "ctl",
}


def channel_prefix(schema: str) -> str:
    if schema == "dbos":
        return "dbos"
    return "dbos_" + hashlib.sha256(schema.encode()).hexdigest()[:12]


def channels(schema: str) -> dict[str, str]:
    """Change kind -> channel name."""
    prefix = channel_prefix(schema)
    return {kind: f"{prefix}_{suffix}" for kind, suffix in CHANNEL_SUFFIX.items()}


def listen_channels(schema: str) -> list[str]:
    return sorted(set(channels(schema).values()))
