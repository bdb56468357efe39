"""PostgreSQL-only behaviour of the system store (07 §6, §9.2, §12.1)."""

from __future__ import annotations

import dataclasses
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import psycopg_pool
import pytest

from conftest import PG_ADMIN_URL, create_pg_database, drop_pg_database, pg_url_for, require_pg
from dbos._store import base
from dbos._store.base import (
    Change,
    ExecutorRegistration,
    Fence,
    NewStep,
    NewWorkflow,
    Outcome,
    ParentLink,
    Payload,
    StoreSettings,
)
from dbos._store.postgres import PostgresStore, reset_postgres
from dbos._store.postgres_conn import advisory_key, channel_prefix, channels, parse_url
from dbos._store.postgres_errors import classify_pg_error
from dbos.error import DBOSInitializationError

# ---------------------------------------------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def pg_url() -> Iterator[str]:
    require_pg()
    name = create_pg_database()
    try:
        yield pg_url_for(name)
    finally:
        drop_pg_database(name)


def open_store(url: str, *, schema: str = "dbos", role: str = "executor", **kw: Any) -> PostgresStore:
    return PostgresStore(url, StoreSettings(role=role, schema=schema, **kw))  # type: ignore[arg-type]


@pytest.fixture
def opened() -> Iterator[Callable[..., PostgresStore]]:
    stores: list[PostgresStore] = []

    def make(url: str, **kw: Any) -> PostgresStore:
        s = open_store(url, **kw)
        stores.append(s)
        return s

    yield make
    for s in stores:
        s.close()


def token() -> str:
    return secrets.token_hex(16)


def new_wf(
    workflow_id: str | None = None, *, owner: tuple[str, int, str] | None = None, **kw: Any
) -> NewWorkflow:
    status = kw.pop("status", "PENDING")
    return NewWorkflow(
        workflow_id=workflow_id or f"wf-{token()}",
        name="wf",
        class_name=None,
        config_name=None,
        inputs=Payload("[]", "json"),
        receiver=None,
        status=status,
        owner=(owner or ("exec-a", 1, token())) if status == "PENDING" else None,
        creator_token=token(),
        **kw,
    )


def fence_of(new: NewWorkflow) -> Fence:
    assert new.owner is not None
    return Fence(new.workflow_id, new.owner[2])


def registration(
    executor_id: str, *, heartbeat_ms: int = 1_000, lease_ms: int = 60_000
) -> ExecutorRegistration:
    return ExecutorRegistration(
        executor_id=executor_id,
        application_name="app",
        application_version="v1",
        hostname="other-host",
        host_identity="other-host:boot",
        pid=1,
        process_start=None,
        heartbeat_interval_ms=heartbeat_ms,
        lease_ms=lease_ms,
    )


def wait_until(pred: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


def admin_query(url: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def tables_in(url: str, schema: str) -> set[str]:
    rows = admin_query(
        url, "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
    )
    return {r[0] for r in rows}


EXPECTED_TABLES = {
    "workflows",
    "steps",
    "messages",
    "events",
    "event_history",
    "streams",
    "queue_claims",
    "queue_defs",
    "queue_pauses",
    "schedules",
    "executors",
    "app_versions",
    "maintenance_leases",
    "schema_migrations",
}


# ---------------------------------------------------------------------------------------------------------------
# Schema, migrations, reset
# ---------------------------------------------------------------------------------------------------------------


def test_migrate_creates_non_default_schema(pg_url: str, opened: Callable[..., PostgresStore]) -> None:
    s = opened(pg_url, schema="My Schema")
    assert s.check_schema() == "missing"
    assert "My Schema" not in {r[0] for r in admin_query(pg_url, "SELECT nspname FROM pg_namespace")}
    report = s.migrate()
    assert report.before == 0 and report.applied == [1]
    assert tables_in(pg_url, "My Schema") == EXPECTED_TABLES
    assert tables_in(pg_url, "dbos") == set()
    rows = admin_query(
        pg_url, 'SELECT version, name, compatible_from, library_version FROM "My Schema".schema_migrations'
    )
    assert rows[0][:3] == (1, "initial", 1) and rows[0][3]
    assert s.check_schema() == "current"


def test_schema_ahead_compatible_and_incompatible(pg_url: str, opened: Callable[..., PostgresStore]) -> None:
    s = opened(pg_url)
    s.migrate()
    insert = "INSERT INTO dbos.schema_migrations VALUES (2, 'future', 'x', %s, 0, '9.9')"  # compatible_from
    admin_query(pg_url, insert, (1,))
    assert s.check_schema() == "ahead_compatible"
    assert s.migrate().applied == []
    admin_query(pg_url, "UPDATE dbos.schema_migrations SET compatible_from = 2 WHERE version = 2")
    assert s.check_schema() == "ahead_incompatible"
    with pytest.raises(base.SchemaTooNew, match="version 2 is newer"):
        s.migrate()


def test_two_schemas_are_isolated(pg_url: str, opened: Callable[..., PostgresStore]) -> None:
    a, b = opened(pg_url, schema="alpha"), opened(pg_url, schema="beta")
    a.migrate()
    assert b.check_schema() == "missing"
    b.migrate()
    assert channels("alpha") != channels("beta")
    seen_b: list[Change] = []
    b.changes.subscribe(seen_b.append)
    a.insert_workflow(new_wf("shared-id", status="ENQUEUED", queue_name="q"))
    a.register_executor(registration("ex"))
    assert b.get_workflow("shared-id") is None
    assert b.list_executors(include_inactive=True) == []
    assert b.insert_workflow(new_wf("shared-id")).kind == "created"
    time.sleep(0.3)
    assert [c for c in seen_b if c.kind in ("queue", "ctl")] == []


def test_reset_drop_and_truncate(pg_url: str, opened: Callable[..., PostgresStore]) -> None:
    keep, s = opened(pg_url, schema="keep"), opened(pg_url)
    keep.migrate()
    s.migrate()
    s.insert_workflow(new_wf("w"))
    keep.insert_workflow(new_wf("w"))
    reset_postgres(pg_url, schema="dbos", truncate=True)
    assert tables_in(pg_url, "dbos") == EXPECTED_TABLES
    assert admin_query(pg_url, "SELECT count(*) FROM dbos.workflows") == [(0,)]
    assert admin_query(pg_url, "SELECT count(*) FROM dbos.schema_migrations") == [(1,)]
    reset_postgres(pg_url, schema="dbos", truncate=False)
    assert tables_in(pg_url, "dbos") == set()
    assert keep.get_workflow("w") is not None  # other schemas are never touched
    reset_postgres(pg_url_for(f"dbosx_missing_{uuid.uuid4().hex[:8]}"), schema="dbos", truncate=False)


# ---------------------------------------------------------------------------------------------------------------
# Opening: database creation, URL handling, server checks
# ---------------------------------------------------------------------------------------------------------------


def test_database_auto_creation() -> None:
    require_pg()
    name = f"dbosx_test_{uuid.uuid4().hex[:12]}"
    url = pg_url_for(name).replace("postgresql://", "postgresql+psycopg://")
    try:
        with pytest.raises(DBOSInitializationError, match="does not exist"):
            open_store(url, role="client")
        assert admin_query(PG_ADMIN_URL, "SELECT 1 FROM pg_database WHERE datname = %s", (name,)) == []
        s = open_store(url)
        try:
            assert admin_query(PG_ADMIN_URL, "SELECT 1 FROM pg_database WHERE datname = %s", (name,)) == [
                (1,)
            ]
            s.migrate()
        finally:
            s.close()
        open_store(url, role="tool").close()  # already exists: fine
    finally:
        drop_pg_database(name)


def test_url_parsing_and_session_settings(pg_url: str, opened: Callable[..., PostgresStore]) -> None:
    spec = parse_url("postgres+psycopg://u:pw@h:5433/db?dbos_prepare=off&sslmode=disable", app_label="myapp")
    assert "dbos_prepare" not in spec.conninfo and not spec.prepare and spec.dbname == "db"
    d = psycopg.conninfo.conninfo_to_dict(spec.conninfo)
    assert (
        d["application_name"] == "dbos:myapp" and d["connect_timeout"] == "10" and d["sslmode"] == "disable"
    )
    assert "-c statement_timeout=30000" in str(d["options"]) and "-c TimeZone=UTC" in str(d["options"])
    own = parse_url("postgresql://h/db?application_name=mine&connect_timeout=3", app_label="x")
    d = psycopg.conninfo.conninfo_to_dict(own.conninfo)
    assert d["application_name"] == "mine" and d["connect_timeout"] == "3"

    s = opened(pg_url, application_name="shop")
    s.migrate()
    with s._pool.connection() as conn:
        settings = conn.execute(
            "SELECT current_setting('TimeZone'), current_setting('statement_timeout'), "
            "current_setting('lock_timeout'), current_setting('idle_in_transaction_session_timeout'), "
            "current_setting('application_name')"
        ).fetchone()
    assert settings == ("UTC", "30s", "10s", "1min", "dbos:shop")


def test_unsupported_server_version(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from dbos._store import postgres_conn

    monkeypatch.setattr(postgres_conn, "MIN_SERVER_VERSION", 990000)
    with pytest.raises(DBOSInitializationError, match="PostgreSQL 13 or newer"):
        open_store(pg_url)


def test_keys_and_channel_names() -> None:
    import hashlib

    data = b"dbos\x00s\x00liveness\x00ex\x001"
    expected = int.from_bytes(hashlib.sha256(data).digest()[:8], "big", signed=True)
    assert advisory_key("s", "liveness", "ex", "1") == expected
    assert channel_prefix("dbos") == "dbos"
    assert channel_prefix("tenant") == "dbos_" + hashlib.sha256(b"tenant").hexdigest()[:12]
    assert channels("dbos")["wf"] == "dbos_wf" and channels("dbos")["stream"] == "dbos_evt"


# ---------------------------------------------------------------------------------------------------------------
# LISTEN/NOTIFY
# ---------------------------------------------------------------------------------------------------------------


def test_notify_reaches_second_store_within_1s(pg_url: str, opened: Callable[..., PostgresStore]) -> None:
    writer, reader = opened(pg_url), opened(pg_url)
    writer.migrate()
    seen: list[tuple[float, Change]] = []
    reader.changes.subscribe(lambda c: seen.append((time.monotonic(), c)))
    new = new_wf()
    writer.insert_workflow(new)
    start = time.monotonic()
    writer.record_outcome(fence_of(new), Outcome("SUCCESS", Payload("1", "json")))
    assert wait_until(lambda: any(c == Change("wf", (new.workflow_id,)) for _, c in seen), 1.0)
    arrived = min(t for t, c in seen if c == Change("wf", (new.workflow_id,)))
    assert arrived - start < 1.0


def test_oversized_notify_payload_falls_back_to_kind(
    pg_url: str, opened: Callable[..., PostgresStore]
) -> None:
    writer, reader = opened(pg_url), opened(pg_url)
    writer.migrate()
    seen: list[Change] = []
    reader.changes.subscribe(seen.append)
    workflow_id = "\x01" * 2048  # JSON escaping makes this 12 KB, beyond NOTIFY's limit
    new = new_wf(workflow_id)
    writer.insert_workflow(new)
    assert writer.record_outcome(fence_of(new), Outcome("SUCCESS", Payload("1", "json"))).applied
    assert wait_until(lambda: Change("wf", ()) in seen, 2.0)


def test_listener_reconnects_and_publishes_all(pg_url: str, opened: Callable[..., PostgresStore]) -> None:
    writer, reader = opened(pg_url), opened(pg_url)
    writer.migrate()
    reg = reader.register_executor(registration("listener", heartbeat_ms=100))
    seen: list[Change] = []
    reader.changes.subscribe(seen.append)
    assert reader._live is not None and reader._live._conn is not None
    pid = reader._live._conn.info.backend_pid
    admin_query(pg_url, "SELECT pg_terminate_backend(%s)", (pid,))
    assert wait_until(lambda: Change("all") in seen, 5.0)
    writer.insert_workflow(new_wf(status="ENQUEUED", queue_name="after"))
    assert wait_until(lambda: Change("queue", ("after",)) in seen, 2.0)
    key = advisory_key("dbos", "liveness", "listener", str(reg.incarnation))
    held = admin_query(
        pg_url,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
        "AND classid = ((%s::bigint >> 32) & 4294967295)::oid AND objid = (%s::bigint & 4294967295)::oid",
        (key, key),
    )
    assert held == [(1,)]  # the liveness lock was re-taken on the new session
    assert reader.heartbeat("listener", reg.incarnation).alive


# ---------------------------------------------------------------------------------------------------------------
# Liveness lock (07 §6.5)
# ---------------------------------------------------------------------------------------------------------------


def test_lock_dead_detection(pg_url: str, opened: Callable[..., PostgresStore]) -> None:
    prober = opened(pg_url)
    prober.migrate()
    prober.register_executor(registration("prober"))
    victim = open_store(pg_url)
    try:
        reg = victim.register_executor(registration("victim", heartbeat_ms=200, lease_ms=60_000))
        victim.insert_workflow(new_wf(owner=("victim", reg.incarnation, token())))
        time.sleep(0.7)  # prober's liveness connection up >= 3 x 200 ms; victim's heartbeat > 2 x 200 ms old
        assert {c.executor.executor_id: c.certain for c in prober.find_dead("app")} == {"victim": False}
    finally:
        victim.close()  # its session ends, as when the process dies: the advisory lock is released
    assert wait_until(
        lambda: {c.executor.executor_id: c.certain for c in prober.find_dead("app")} == {"victim": True}, 2.0
    )
    # A prober whose own liveness connection is young does not trust missing locks yet.
    young = opened(pg_url)
    assert {c.executor.executor_id: c.certain for c in young.find_dead("app")} == {"victim": False}
    assert len(prober.take_over("victim", reg.incarnation, require_expired=False)) == 1


# ---------------------------------------------------------------------------------------------------------------
# Round trips, connection loss, record_step_in through SQLAlchemy
# ---------------------------------------------------------------------------------------------------------------


def test_round_trip_budget(pg_url: str, opened: Callable[..., PostgresStore]) -> None:
    s = opened(pg_url)
    s.migrate()

    def trips(fn: Callable[[], Any]) -> int:
        before = s.stats().round_trips
        fn()
        return s.stats().round_trips - before

    parent = new_wf()
    f = fence_of(parent)
    assert trips(lambda: s.insert_workflow(parent)) == 1
    assert trips(lambda: s.record_step(f, NewStep(1, "s", Payload("1", "json"), None, token()))) == 1
    link = ParentLink(f, 2, "child", token())
    assert trips(lambda: s.insert_workflow(new_wf(status="ENQUEUED", queue_name="q"), parent=link)) == 2
    assert trips(lambda: s.record_outcome(f, Outcome("SUCCESS", Payload("1", "json")))) == 1


def test_pool_connections_killed_are_retried(pg_url: str, opened: Callable[..., PostgresStore]) -> None:
    s = opened(pg_url, application_name="killme")
    s.migrate()
    new = new_wf()
    s.insert_workflow(new)
    admin_query(
        pg_url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'dbos:killme' "
        "AND pid <> pg_backend_pid()",
    )
    assert s.record_step(fence_of(new), NewStep(1, "s", None, None, token())) is base.Write.APPLIED
    assert s.get_workflow(new.workflow_id) is not None


def test_record_step_in_sqlalchemy_connection(pg_url: str, opened: Callable[..., PostgresStore]) -> None:
    import sqlalchemy as sa

    s = opened(pg_url)
    s.migrate()
    new = new_wf()
    s.insert_workflow(new)
    engine = sa.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("SELECT 1"))
            raw = conn.connection  # the pool proxy around the psycopg connection
            step = NewStep(1, "tx", Payload("1", "json"), None, "tok")
            assert s.record_step_in(raw, fence_of(new), step) is base.Write.APPLIED
            assert s.record_step_in(raw.driver_connection, fence_of(new), step) is base.Write.APPLIED
            assert s.record_step_in(conn, fence_of(new), step) is base.Write.APPLIED  # sqlalchemy Connection
        assert [st.write_token for st in s.list_steps(new.workflow_id)] == ["tok"]
    finally:
        engine.dispose()


def lose_reply_once(s: PostgresStore, monkeypatch: pytest.MonkeyPatch, method: str, query: str) -> None:
    """The statement `query` commits, then its reply is lost (as when the connection drops after COMMIT)."""
    original = getattr(s, method)
    fired: list[bool] = []

    def wrapper(conn: Any, op: str, q: str, params: dict[str, Any], *, write: bool) -> Any:
        result = original(conn, op, q, params, write=write)
        if q == query and not fired:
            fired.append(True)
            raise psycopg.OperationalError("server closed the connection unexpectedly (simulated)")
        return result

    monkeypatch.setattr(s, method, wrapper)


def test_ambiguous_commits_resolve_idempotently(
    pg_url: str, opened: Callable[..., PostgresStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    s = opened(pg_url)
    s.migrate()
    new = new_wf()
    lose_reply_once(s, monkeypatch, "_one", s._sql.insert_workflow)
    assert s.insert_workflow(new).kind == "created"
    lose_reply_once(s, monkeypatch, "_one", s._sql.record_step)
    assert s.record_step(fence_of(new), NewStep(1, "s", None, None, "wt")) is base.Write.APPLIED
    lose_reply_once(s, monkeypatch, "_one", s._sql.record_outcome)
    result = s.record_outcome(fence_of(new), Outcome("SUCCESS", Payload("1", "json")))
    assert result.applied and result.status == "SUCCESS"
    assert len(s.list_steps(new.workflow_id)) == 1

    for _ in range(12):
        s.insert_workflow(new_wf(status="ENQUEUED", queue_name="amb"))
    lose_reply_once(s, monkeypatch, "_all", s._sql.claim)
    req = base.ClaimRequest("amb", "ex", 1, None, None, frozenset({"wf"}), 10, token())
    claimed = s.claim(req)
    assert len(claimed.claimed) == 10
    rows = admin_query(
        pg_url,
        "SELECT workflow_id, claim_token FROM dbos.workflows WHERE status = 'PENDING' AND claim_batch = %s",
        (req.batch_token,),
    )
    assert sorted(rows) == sorted((c.fence.workflow_id, c.fence.claim_token) for c in claimed.claimed)
    assert len(s.claim(dataclasses.replace(req, batch_token=token())).claimed) == 2


# ---------------------------------------------------------------------------------------------------------------
# Error classification (07 §12.1), row by row
# ---------------------------------------------------------------------------------------------------------------

SQLSTATE_ROWS = [
    ("08000", base.ConnectionLost),
    ("08006", base.ConnectionLost),
    ("57P01", base.ConnectionLost),
    ("57P02", base.ConnectionLost),
    ("57P03", base.ConnectionLost),
    ("53300", base.ConnectionLost),
    ("25P03", base.ConnectionLost),
    ("40001", base.Contention),
    ("40P01", base.Contention),
    ("55P03", base.Contention),
    ("57014", base.StatementTimeout),
    ("23505", base.UniqueViolation),
    ("23503", base.MissingReference),
    ("53100", base.StorageFull),
    ("25006", base.ReadOnly),
    ("3F000", base.SchemaMismatch),
    ("42P01", base.SchemaMismatch),
    ("42703", base.SchemaMismatch),
    ("42883", base.SchemaMismatch),
    ("XX001", base.Corrupt),
    ("XX002", base.Corrupt),
    ("22021", base.InvalidText),
    ("22P05", base.InvalidText),
    ("54000", base.InvalidText),
    ("42601", base.UnknownStorageError),
    ("22012", base.UnknownStorageError),
]


@pytest.mark.parametrize(("sqlstate", "expected"), SQLSTATE_ROWS)
def test_classify_sqlstate(sqlstate: str, expected: type[base.StoreError]) -> None:
    exc = psycopg.errors.lookup(sqlstate)("driver message")
    err = classify_pg_error(exc, "some_op")
    assert type(err) is expected and err.op == "some_op" and "driver message" in str(err)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (psycopg_pool.PoolTimeout("no connection"), base.ConnectionLost),
        (psycopg.errors.ConnectionTimeout("timeout"), base.ConnectionLost),
        (psycopg.OperationalError("server closed the connection unexpectedly"), base.ConnectionLost),
        (psycopg.InterfaceError("the connection is closed"), base.ConnectionLost),
        (psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"), base.InvalidText),
        (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), base.InvalidText),
        (psycopg.ProgrammingError("something else"), base.UnknownStorageError),
        (RuntimeError("not a driver error"), base.UnknownStorageError),
    ],
)
def test_classify_without_sqlstate(exc: BaseException, expected: type[base.StoreError]) -> None:
    assert type(classify_pg_error(exc)) is expected


def test_classified_error_keeps_cause(pg_url: str, opened: Callable[..., PostgresStore]) -> None:
    s = opened(pg_url)  # not migrated: the tables do not exist
    with pytest.raises(base.SchemaMismatch) as info:
        s.get_workflow("x")
    assert isinstance(info.value.__cause__, psycopg.errors.UndefinedTable)
    assert info.value.op == "get_workflow"
