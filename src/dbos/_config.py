"""DBOSConfig validation and defaults, resolved once at construction into frozen `Settings` (01 §2)."""

from __future__ import annotations

import math
import os
import secrets
import socket
import sys
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from ._serialization import Serializer
from ._validation import check_app_name, check_identifier, derive_app_name
from .error import DBOSInitializationError, DBOSValidationError


class DBOSConfig(TypedDict, total=False):
    name: str
    system_database_url: str
    application_database_url: str
    database_url: str
    dbos_system_schema: str
    sys_db_pool_size: int
    db_engine_kwargs: dict[str, Any]
    application_version: str
    enable_patching: bool
    executor_id: str
    log_level: str
    run_migrations: bool
    max_executor_threads: int
    serializer: Serializer | Literal["pickle", "json"]
    max_payload_bytes: int
    sqlite_synchronous: Literal["full", "normal"]
    use_listen_notify: bool
    notification_listener_polling_interval_sec: float
    executor_heartbeat_interval_sec: float
    executor_lease_sec: float
    retention_max_age_sec: float | None
    retention_keep_last: int | None
    retention_interval_sec: float
    run_admin_server: bool
    admin_port: int
    admin_host: str


_IGNORED_KEYS = {"sys_db_polling_concurrency", "notification_coalesce_sec"}
_REJECTED_KEYS = {"system_database_engine", "conductor_key", "conductor_url", "conductor_executor_metadata"}
_KNOWN_KEYS = set(DBOSConfig.__annotations__) | {
    "otlp_traces_endpoints",
    "otlp_logs_endpoints",
    "otlp_attributes",
}
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class Settings:
    name: str
    system_database_url: str
    application_database_url: str
    app_db_is_system_db: bool
    schema: str
    pool_size: int
    db_engine_kwargs: dict[str, Any]
    application_version: str | None
    enable_patching: bool
    executor_id: str
    executor_id_explicit: bool
    app_id: str | None
    log_level: str
    run_migrations: bool
    max_executor_threads: int
    serializer: Serializer | str
    max_payload_bytes: int
    sqlite_synchronous: Literal["full", "normal"]
    use_listen_notify: bool
    poll_ceiling_s: float
    heartbeat_interval_s: float
    lease_s: float
    retention_max_age_s: float | None
    retention_keep_last: int | None
    retention_interval_s: float
    raw: dict[str, Any]


def _edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _fail(key: str, message: str) -> DBOSInitializationError:
    return DBOSInitializationError(f"invalid config key {key!r}: {message}")


def _check_keys(config: dict[str, Any]) -> None:
    import logging

    for key in config:
        if key in _REJECTED_KEYS:
            raise _fail(key, "not supported by dbosx (no conductor); remove it")
        if key in _IGNORED_KEYS:
            logging.getLogger("dbos").warning("config key %r is accepted but ignored by dbosx", key)
            continue
        if key not in _KNOWN_KEYS:
            close = sorted(k for k in _KNOWN_KEYS if _edit_distance(key, k) <= 2)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise DBOSInitializationError(f"unknown config key {key!r}{hint}")


def _get(config: dict[str, Any], key: str, types: tuple[type, ...], default: Any) -> Any:
    if key not in config or config[key] is None and default is None:
        return default
    value = config[key]
    if isinstance(value, bool) and bool not in types:
        raise _fail(key, f"expected {'/'.join(t.__name__ for t in types)}, got {value!r}")
    if not isinstance(value, types):
        raise _fail(key, f"expected {'/'.join(t.__name__ for t in types)}, got {value!r}")
    return value


def _int_in(config: dict[str, Any], key: str, default: int, lo: int, hi: int | None = None) -> int:
    value = int(_get(config, key, (int,), default))
    if value < lo or (hi is not None and value > hi):
        bound = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise _fail(key, f"must be an int in {bound}, got {value!r}")
    return value


def _float_in(config: dict[str, Any], key: str, default: float, lo: float, hi: float | None = None) -> float:
    value = float(_get(config, key, (int, float), default))
    if not math.isfinite(value) or value < lo or (hi is not None and value > hi) or value <= 0:
        raise _fail(key, f"must be a finite number in ({lo}, {hi or 'inf'}], got {value!r}")
    return value


def _check_url(key: str, url: Any) -> str:
    if not isinstance(url, str) or not url:
        raise _fail(key, f"expected a database URL string, got {url!r}")
    if url.startswith("sqlite:"):
        if (
            not url.startswith("sqlite:///")
            or url in ("sqlite:///", "sqlite:///:memory:")
            or ":memory:" in url
        ):
            raise _fail(key, f"in-memory or malformed SQLite URL {url!r}; use sqlite:///<path>")
        path = url[len("sqlite:///") :]
        return "sqlite:///" + os.path.abspath(path)
    for scheme in ("postgresql://", "postgres://", "postgresql+psycopg://"):
        if url.startswith(scheme):
            return url
    raise _fail(key, f"unsupported database URL scheme in {url!r}; use sqlite:///<path> or postgresql://...")


def default_executor_id() -> str:
    host = "".join(c for c in socket.gethostname() if c.isalnum() or c in "._-")[:64] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


def _resolve_urls(config: dict[str, Any], name: str) -> tuple[str, str, bool]:
    app = config.get("application_database_url")
    legacy = config.get("database_url")
    if legacy is not None:
        import logging

        logging.getLogger("dbos").warning(
            "config key 'database_url' is deprecated; use application_database_url"
        )
        if app is not None and app != legacy:
            raise _fail("database_url", "differs from application_database_url; set only one")
        app = legacy
    app_url = _check_url("application_database_url", app) if app is not None else None
    sys_raw = config.get("system_database_url")
    if sys_raw is not None:
        sys_url = _check_url("system_database_url", sys_raw)
    elif app_url is not None:
        sys_url = app_url
    else:
        sys_url = "sqlite:///" + os.path.abspath(name.replace("-", "_") + ".sqlite")
    app_final = app_url or sys_url
    return sys_url, app_final, app_final == sys_url


def _resolve_serializer(config: dict[str, Any]) -> Serializer | str:
    value = config.get("serializer", "pickle")
    if isinstance(value, str) and value in ("pickle", "json"):
        return value
    if isinstance(value, Serializer):
        from ._serialization import resolve_serializer

        resolve_serializer(value)  # validates the custom name
        return value
    raise _fail("serializer", f"expected 'pickle', 'json' or a Serializer instance, got {value!r}")


def _name(config: dict[str, Any]) -> str:
    if "name" not in config:
        return derive_app_name(sys.argv[0] if sys.argv and sys.argv[0] else "")
    try:
        return check_app_name(config["name"])
    except DBOSValidationError as e:
        raise _fail("name", f"{e.message}; use 3-30 characters of [a-z0-9_-]") from None


def _identifier(config: dict[str, Any], key: str, env: str | None) -> str | None:
    value = config.get(key)
    if value is None and env is not None:
        value = os.environ.get(env) or None
    if value is None:
        return None
    try:
        return check_identifier(value, key)
    except DBOSValidationError as e:
        raise _fail(key, e.message) from None


def _choice(config: dict[str, Any], key: str, choices: tuple[str, ...], default: str) -> str:
    value = config.get(key, default)
    if value not in choices:
        raise _fail(key, f"must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return str(value)


def _bool(config: dict[str, Any], key: str, default: bool) -> bool:
    return bool(_get(config, key, (bool,), default))


def build_settings(config: Any) -> Settings:
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise DBOSInitializationError(f"config must be a dict (DBOSConfig), got {type(config).__name__}")
    _check_keys(config)
    name = _name(config)
    sys_url, app_url, same = _resolve_urls(config, name)
    schema = str(_get(config, "dbos_system_schema", (str,), "dbos"))
    import re

    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", schema):
        raise _fail("dbos_system_schema", f"must match [A-Za-z_][A-Za-z0-9_]{{0,62}}, got {schema!r}")
    heartbeat = _float_in(config, "executor_heartbeat_interval_sec", 2.0, 0.0)
    lease = _float_in(config, "executor_lease_sec", 10.0, 0.0)
    if lease < 3 * heartbeat:
        raise _fail(
            "executor_lease_sec", f"must be at least 3 x executor_heartbeat_interval_sec ({3 * heartbeat})"
        )
    enable_patching = _bool(config, "enable_patching", False)
    version = _identifier(config, "application_version", None)
    if version is None:
        version = (
            "PATCHING_ENABLED"
            if enable_patching
            else _identifier({}, "application_version", "DBOS__APPVERSION")
        )
    explicit_id = _identifier(config, "executor_id", "DBOS__VMID")
    retention_interval = _float_in(config, "retention_interval_sec", 3600.0, 1.0)
    max_age = (
        None
        if config.get("retention_max_age_sec") is None
        else _float_in(config, "retention_max_age_sec", 0, 1.0)
    )
    keep_last = (
        None if config.get("retention_keep_last") is None else _int_in(config, "retention_keep_last", 0, 0)
    )
    _int_in(config, "admin_port", 3001, 0, 65535)
    _bool(config, "run_admin_server", False)
    return Settings(
        name=name,
        system_database_url=sys_url,
        application_database_url=app_url,
        app_db_is_system_db=same,
        schema=schema,
        pool_size=_int_in(config, "sys_db_pool_size", 20, 1),
        db_engine_kwargs=dict(_get(config, "db_engine_kwargs", (dict,), {})),
        application_version=version,
        enable_patching=enable_patching,
        executor_id=explicit_id or default_executor_id(),
        executor_id_explicit=explicit_id is not None,
        app_id=os.environ.get("DBOS__APPID") or None,
        log_level=_choice(config, "log_level", _LOG_LEVELS, "INFO"),
        run_migrations=_bool(config, "run_migrations", True),
        max_executor_threads=_int_in(config, "max_executor_threads", 256, 1),
        serializer=_resolve_serializer(config),
        max_payload_bytes=_int_in(config, "max_payload_bytes", 67_108_864, 1024, 268_435_456),
        sqlite_synchronous=_choice(config, "sqlite_synchronous", ("full", "normal"), "full"),  # type: ignore[arg-type]
        use_listen_notify=_bool(config, "use_listen_notify", True),
        poll_ceiling_s=_float_in(config, "notification_listener_polling_interval_sec", 0.1, 0.001, 10.0),
        heartbeat_interval_s=heartbeat,
        lease_s=lease,
        retention_max_age_s=max_age,
        retention_keep_last=keep_last,
        retention_interval_s=retention_interval,
        raw=dict(config),
    )
