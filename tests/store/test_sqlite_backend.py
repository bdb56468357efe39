"""SQLite-only behaviour (07 §5, §9.2, §12.1): connections, rejections, classification, migrations, reset and
the cross-process change log."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dbos._store import base, migrate, open_system_store, reset_system_store, sqlite_conn
from dbos._store.base import Change, NewWorkflow, Payload, StoreSettings
from dbos._store.sqlite import SQLiteStore, classify_sqlite_error
from dbos._store.sqlite_errors import classify_class
from dbos._store.sqlite_migrate import split_statements
from dbos.error import DBOSInitializationError

# ---------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'sys.sqlite'}"


def _open(url: str, **kw: object) -> SQLiteStore:
    store = open_system_store(url, StoreSettings(**kw))  # type: ignore[arg-type]
    assert isinstance(store, SQLiteStore)
    return store


@pytest.fixture
def store(url: str) -> Iterator[SQLiteStore]:
    s = _open(url, poll_ceiling_s=0.05)
    s.migrate()
    yield s
    s.close()


def _enqueue(store: SQLiteStore, queue: str = "q") -> str:
    wid = f"w-{time.monotonic_ns()}"
    store.insert_workflow(
        NewWorkflow(
            wid, "wf", None, None, Payload("[]", "json"), None, "ENQUEUED", None, "ct", queue_name=queue
        )
    )
    return wid


def _raw(url: str) -> sqlite3.Connection:
    path = sqlite_conn.path_from_url(url)
    return sqlite3.connect(path, isolation_level=None, timeout=10.0, check_same_thread=False)


def _pragma(conn: sqlite3.Connection, name: str) -> object:
    return conn.execute(f"PRAGMA {name}").fetchone()[0]


# ---------------------------------------------------------------------------------------------------------------
# Connections and rejections
# ---------------------------------------------------------------------------------------------------------------


def test_sqlite_connection_pragmas(store: SQLiteStore) -> None:
    writer = store._db._writer
    assert writer is not None
    assert _pragma(writer, "journal_mode") == "wal"
    assert _pragma(writer, "foreign_keys") == 1
    assert _pragma(writer, "busy_timeout") == 10000
    assert _pragma(writer, "synchronous") == 2
    assert _pragma(writer, "query_only") == 0
    assert _pragma(writer, "auto_vacuum") == 2  # INCREMENTAL
    assert _pragma(writer, "encoding") == "UTF-8"
    reader = store._db.read(
        "test",
        lambda c: tuple(
            _pragma(c, p) for p in ("journal_mode", "foreign_keys", "busy_timeout", "query_only")
        ),
    )
    assert reader == ("wal", 1, 10000, 1)


def test_sqlite_synchronous_settings(url: str) -> None:
    normal = _open(url, sqlite_synchronous="normal")
    try:
        assert normal._db._writer is not None and _pragma(normal._db._writer, "synchronous") == 1
    finally:
        normal.close()
    client = _open(url, sqlite_synchronous="normal", role="client")
    try:
        assert client._db._writer is not None and _pragma(client._db._writer, "synchronous") == 2
        assert client._detector is None
    finally:
        client.close()


def test_sqlite_rejects_old_library(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 34, 1))
    with pytest.raises(DBOSInitializationError, match="3.34.1"):
        _open(url)


def test_sqlite_rejects_non_wal(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_conn, "set_wal", lambda conn: "delete")
    with pytest.raises(DBOSInitializationError, match="WAL"):
        _open(url)


def test_sqlite_rejects_bad_locations(tmp_path: Path) -> None:
    with pytest.raises(DBOSInitializationError, match="does not exist"):
        _open(f"sqlite:///{tmp_path / 'nope' / 'x.sqlite'}")
    with pytest.raises(DBOSInitializationError):
        _open("sqlite:///:memory:")
    with pytest.raises(DBOSInitializationError):
        _open(f"sqlite:///{tmp_path / 'x.sqlite'}", max_payload_bytes=268_435_457)
    missing = tmp_path / "client.sqlite"
    with pytest.raises(DBOSInitializationError):
        _open(f"sqlite:///{missing}", role="client", create_database=False)
    assert not missing.exists()


def test_sqlite_url_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert sqlite_conn.path_from_url("sqlite:///rel.sqlite") == str(tmp_path / "rel.sqlite")
    assert sqlite_conn.path_from_url("sqlite:////abs/x.sqlite") == "/abs/x.sqlite"
    assert sqlite_conn.path_from_url("sqlite:////abs/x.sqlite?mode=rw") == "/abs/x.sqlite"


def test_sqlite_contention_is_retried(store: SQLiteStore, url: str) -> None:
    writer = store._db._writer
    assert writer is not None
    writer.execute("PRAGMA busy_timeout=0")  # make SQLITE_BUSY reach the retry loop at once
    holder = _raw(url)
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
    release.start()
    started = time.monotonic()
    _enqueue(store)
    assert time.monotonic() - started >= 0.25
    release.join()
    holder.close()


def test_sqlite_noop_write_counts_as_read(store: SQLiteStore) -> None:
    new = NewWorkflow("same", "wf", None, None, Payload("[]", "json"), None, "PENDING", ("e", 1, "t"), "c1")
    store.insert_workflow(new)
    before = store.stats()
    assert store.insert_workflow(dataclasses.replace(new, creator_token="c2")).kind == "existing"
    after = store.stats()
    assert (
        after.commits == before.commits
        and after.by_op["insert_workflow"] == before.by_op["insert_workflow"] + 1
    )


def test_sqlite_fresh_workflow_reads_nothing(store: SQLiteStore) -> None:
    before = store.stats()
    new = NewWorkflow("fresh", "wf", None, None, Payload("[]", "json"), None, "PENDING", ("e", 1, "t"), "c1")
    store.insert_workflow(new)
    for i in range(1, 11):
        store.record_step(base.Fence("fresh", "t"), base.NewStep(i, "s", Payload("1", "json"), None, f"w{i}"))
    store.record_outcome(base.Fence("fresh", "t"), base.Outcome("SUCCESS", Payload("1", "json")))
    after = store.stats()
    assert after.commits - before.commits == 12
    assert after.reads == before.reads  # the detector's reads are counted under by_op["feed"] only


def test_sqlite_validation_happens_before_sql(store: SQLiteStore) -> None:
    from dbos.error import DBOSValidationError

    before = store.stats()
    with pytest.raises(DBOSValidationError):
        store.get_workflow("bad\x00id")
    with pytest.raises(DBOSValidationError):
        store.heartbeat("x" * 1025, 1)
    assert store.stats() == before


# ---------------------------------------------------------------------------------------------------------------
# Error classification (07 §12.1): real errors, by code and by message (the Python 3.10 path)
# ---------------------------------------------------------------------------------------------------------------


def _provoke(tmp_path: Path) -> dict[str, BaseException]:
    errors: dict[str, BaseException] = {}
    path = str(tmp_path / "err.sqlite")
    conn = sqlite3.connect(path, isolation_level=None, timeout=0)
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("CREATE TABLE p (id TEXT PRIMARY KEY, u TEXT UNIQUE, n INTEGER CHECK (n > 0))")
    conn.execute("CREATE TABLE c (pid TEXT REFERENCES p (id))")
    conn.execute("INSERT INTO p VALUES ('a', 'x', 1)")

    def capture(name: str, sql: str, params: tuple[object, ...] = (), c: sqlite3.Connection = conn) -> None:
        try:
            c.execute(sql, params)
        except (sqlite3.Error, UnicodeEncodeError) as exc:
            errors[name] = exc

    capture("pk", "INSERT INTO p VALUES ('a', 'y', 1)")
    capture("unique", "INSERT INTO p VALUES ('b', 'x', 1)")
    capture("fk", "INSERT INTO c VALUES ('zz')")
    capture("check", "INSERT INTO p VALUES ('c', 'z', 0)")
    capture("no_table", "SELECT * FROM missing")
    capture("no_column", "SELECT nope FROM p")
    capture("text", "SELECT ?", ("\ud800",))
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    conn.execute("BEGIN IMMEDIATE")
    capture("busy", "BEGIN IMMEDIATE", c=other)
    conn.execute("COMMIT")
    other.execute("PRAGMA query_only=ON")
    capture("readonly", "INSERT INTO p VALUES ('r', 'r', 1)", c=other)
    conn.execute("PRAGMA max_page_count=" + str(_pragma(conn, "page_count")))
    capture("full", "INSERT INTO p VALUES ('big', ?, 1)", ("x" * 100_000,))
    other.close()
    conn.close()
    bad = tmp_path / "notadb.sqlite"
    bad.write_bytes(b"this is not a database at all" * 200)
    capture("notadb", "SELECT * FROM sqlite_master", c=sqlite3.connect(str(bad)))
    return errors


_EXPECTED = {
    "pk": base.UniqueViolation,
    "unique": base.UniqueViolation,
    "fk": base.MissingReference,
    "check": base.UnknownStorageError,
    "no_table": base.SchemaMismatch,
    "no_column": base.SchemaMismatch,
    "text": base.InvalidText,
    "busy": base.Contention,
    "readonly": base.ReadOnly,
    "full": base.StorageFull,
    "notadb": base.Corrupt,
}


def test_sqlite_classification_by_code(tmp_path: Path) -> None:
    errors = _provoke(tmp_path)
    assert set(errors) == set(_EXPECTED)
    for name, exc in errors.items():
        classified = classify_sqlite_error(exc, "op")
        assert type(classified) is _EXPECTED[name], name
        assert classified.op == "op"


def test_sqlite_classification_by_message(tmp_path: Path) -> None:
    for name, exc in _provoke(tmp_path).items():
        if isinstance(exc, sqlite3.Error):
            exc = type(exc)(str(exc))  # no sqlite_errorcode, as on Python 3.10
            assert getattr(exc, "sqlite_errorcode", None) is None
        assert classify_class(exc) is _EXPECTED[name], name
    assert classify_class(sqlite3.OperationalError("database table is locked")) is base.Contention
    assert classify_class(sqlite3.DatabaseError("database disk image is malformed")) is base.Corrupt
    assert classify_class(RuntimeError("x")) is base.UnknownStorageError


# ---------------------------------------------------------------------------------------------------------------
# Migrations
# ---------------------------------------------------------------------------------------------------------------


def test_sqlite_migration_header_parsing() -> None:
    text = b"-- dbos-migration: 0002 add_x\n-- compatible-from: 0001     -- additive\n-- transaction: no\nSELECT 1;\n"
    mf = migrate.parse_migration("0002_add_x.sql", text)
    assert (mf.version, mf.name, mf.compatible_from, mf.transaction) == (2, "add_x", 1, False)
    import hashlib

    assert mf.checksum == hashlib.sha256(text).hexdigest()
    default = migrate.parse_migration("0003_y.sql", b"-- dbos-migration: 0003 y\nSELECT 1;\n")
    assert default.compatible_from == 3 and default.transaction
    with pytest.raises(ValueError):
        migrate.parse_migration("0003_y.sql", b"-- dbos-migration: 0004 y\n")
    with pytest.raises(ValueError):
        migrate.parse_migration("3_y.sql", b"")
    files = migrate.load_migrations("sqlite")
    assert [f.version for f in files] == list(range(1, len(files) + 1))
    assert files[0].filename == "0001_initial.sql"


def test_sqlite_split_statements() -> None:
    sql = """-- header; with a semicolon
CREATE TABLE t (a TEXT DEFAULT 'x;y');
/* block; comment */ CREATE TABLE u (b TEXT);
CREATE TRIGGER tr AFTER INSERT ON t BEGIN
    INSERT INTO u VALUES ('one;');
    INSERT INTO u VALUES (new.a);
END;
-- trailing comment
"""
    statements = split_statements(sql)
    assert len(statements) == 3
    assert statements[1].startswith("/* block; comment */ CREATE TABLE u")
    assert statements[2].startswith("CREATE TRIGGER") and statements[2].endswith("END;")
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    for s in statements:
        conn.execute(s)
    conn.execute("INSERT INTO t VALUES ('z')")
    conn.execute("COMMIT")
    assert sorted(r[0] for r in conn.execute("SELECT b FROM u")) == ["one;", "z"]
    with pytest.raises(ValueError):
        split_statements("CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1;")


def test_sqlite_migration_creates_every_table(store: SQLiteStore, url: str) -> None:
    conn = _raw(url)
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    expected = {
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
        "change_log",
        "schema_migrations",
    }
    assert {f"dbos_{t}" for t in expected} <= names
    rows = conn.execute(
        "SELECT version, name, checksum, compatible_from FROM dbos_schema_migrations"
    ).fetchall()
    files = migrate.load_migrations("sqlite")
    assert rows == [(f.version, f.name, f.checksum, f.compatible_from) for f in files]
    conn.close()


def _add_applied(url: str, version: int, compatible_from: int, name: str = "future") -> None:
    conn = _raw(url)
    conn.execute(
        "INSERT INTO dbos_schema_migrations VALUES (?, ?, 'x', ?, 0, 'test')",
        (version, name, compatible_from),
    )
    conn.close()


def test_sqlite_newer_compatible_schema(store: SQLiteStore, url: str) -> None:
    known = len(migrate.load_migrations("sqlite"))
    _add_applied(url, known + 1, known)
    assert store.check_schema() == "ahead_compatible"
    report = store.migrate()
    assert report.applied == [] and report.before == known + 1


def test_sqlite_newer_incompatible_schema(store: SQLiteStore, url: str) -> None:
    known = len(migrate.load_migrations("sqlite"))
    _add_applied(url, known + 1, known + 1)
    assert store.check_schema() == "ahead_incompatible"
    with pytest.raises(base.SchemaTooNew, match=str(known + 1)):
        store.migrate()


def test_sqlite_schema_gaps_and_renames(store: SQLiteStore, url: str) -> None:
    known = len(migrate.load_migrations("sqlite"))
    _add_applied(url, known + 2, known)
    with pytest.raises(DBOSInitializationError, match="gaps"):
        store.migrate()
    conn = _raw(url)
    conn.execute("DELETE FROM dbos_schema_migrations WHERE version > ?", (known,))
    conn.execute("UPDATE dbos_schema_migrations SET name = 'renamed' WHERE version = 1")
    conn.close()
    with pytest.raises(DBOSInitializationError, match="renamed"):
        store.migrate()


def test_sqlite_concurrent_migrations(url: str) -> None:
    stores = [_open(url, role="tool") for _ in range(4)]
    reports: list[base.MigrationReport] = []
    threads = [threading.Thread(target=lambda s=s: reports.append(s.migrate())) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for s in stores:
        s.close()
    assert sorted(len(r.applied) for r in reports) == [0, 0, 0, len(migrate.load_migrations("sqlite"))]


# ---------------------------------------------------------------------------------------------------------------
# reset
# ---------------------------------------------------------------------------------------------------------------


def test_sqlite_reset(store: SQLiteStore, url: str) -> None:
    _enqueue(store)
    conn = _raw(url)
    conn.execute("CREATE TABLE user_data (x INTEGER)")
    conn.execute("CREATE TABLE DBOSX_keep (x INTEGER)")
    conn.execute("CREATE TABLE dbos_transaction_outputs (workflow_id TEXT, step_id INTEGER)")
    conn.execute("INSERT INTO user_data VALUES (1)")
    conn.execute("INSERT INTO dbos_transaction_outputs VALUES ('w', 1)")
    store.close()

    reset_system_store(url, schema="dbos", truncate=True)
    assert conn.execute("SELECT count(*) FROM dbos_workflows").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM dbos_transaction_outputs").fetchone()[0] == 0
    # truncate keeps the schema and its migration state (01 §3.4 rule 4)
    assert conn.execute("SELECT count(*) FROM dbos_schema_migrations").fetchone()[0] >= 1
    assert conn.execute("SELECT count(*) FROM user_data").fetchone()[0] == 1

    reset_system_store(url, schema="dbos", truncate=False)
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert not any(n.startswith("dbos_") for n in names)
    assert {"user_data", "DBOSX_keep"} <= names
    conn.close()
    fresh = _open(url)
    assert fresh.check_schema() == "missing"
    assert fresh.migrate().applied[0] == 1
    fresh.close()


def test_sqlite_reset_missing_file_is_noop(tmp_path: Path) -> None:
    target = tmp_path / "absent.sqlite"
    reset_system_store(f"sqlite:///{target}", schema="dbos", truncate=False)
    assert not target.exists()


# ---------------------------------------------------------------------------------------------------------------
# Change log and detector (07 §5 rule 9)
# ---------------------------------------------------------------------------------------------------------------


def _collect(store: SQLiteStore) -> list[Change]:
    seen: list[Change] = []
    store.changes.subscribe(seen.append)
    return seen


def _wait(pred: Callable[[], bool], timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.005)
    return False


def test_sqlite_change_log_rows_and_own_origin(store: SQLiteStore, url: str) -> None:
    seen = _collect(store)
    _enqueue(store, "own")
    conn = _raw(url)
    rows = conn.execute("SELECT kind, key1, key2, origin FROM dbos_change_log").fetchall()
    assert rows == [("queue", "own", None, store.origin)]
    conn.close()
    time.sleep(0.3)  # the detector sees the commit but skips rows of its own origin
    assert seen == [Change("queue", ("own",))]


def test_sqlite_foreign_rows_are_published(store: SQLiteStore, url: str) -> None:
    seen = _collect(store)
    conn = _raw(url)
    conn.execute(
        "INSERT INTO dbos_change_log (kind, key1, key2, origin, created_at) VALUES "
        "('msg', 'dest', NULL, 'elsewhere', 0), ('evt', 'w', '', 'elsewhere', 0)"
    )
    conn.close()
    assert _wait(lambda: len(seen) >= 2)
    assert seen[:2] == [Change("msg", ("dest", None)), Change("evt", ("w", ""))]


def test_sqlite_pruned_rows_publish_all(store: SQLiteStore, url: str) -> None:
    seen = _collect(store)
    conn = _raw(url)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        "INSERT INTO dbos_change_log (kind, key1, origin, created_at) VALUES ('wf', 'lost', 'elsewhere', 0)"
    )
    conn.execute("DELETE FROM dbos_change_log")  # pruned before the detector could read it
    conn.execute("COMMIT")
    conn.close()
    assert _wait(lambda: Change("all") in seen)
    assert Change("wf", ("lost",)) not in seen


def test_sqlite_writer_prunes_old_rows(store: SQLiteStore, url: str) -> None:
    conn = _raw(url)
    conn.execute(
        "INSERT INTO dbos_change_log (kind, key1, origin, created_at) VALUES ('wf', 'old', 'elsewhere', ?)",
        (sqlite_conn.now_ms() - 120_000,),
    )
    store._db._last_prune = 0.0
    _enqueue(store)
    assert conn.execute("SELECT key1 FROM dbos_change_log ORDER BY seq").fetchall() == [("q",)]
    conn.close()


def test_sqlite_detector_stops_on_close(url: str) -> None:
    s = _open(url)
    s.migrate()
    assert s._detector is not None and s._detector._thread.is_alive()
    s.close()
    assert not s._detector._thread.is_alive()
    assert not [t for t in threading.enumerate() if t is s._detector._thread]


def test_sqlite_files_stay_beside_database(store: SQLiteStore, url: str) -> None:
    _enqueue(store)
    directory = os.path.dirname(sqlite_conn.path_from_url(url))
    assert {"sys.sqlite", "sys.sqlite-wal", "sys.sqlite-shm"} <= set(os.listdir(directory))


def test_detector_delivers_changes_committed_before_its_thread_first_runs(
    store: SQLiteStore, url: str
) -> None:
    """The starting point is taken when the store opens, not when the detector's thread gets to run."""
    from dbos._store.sqlite_feed import ChangeDetector

    seen: list[Change] = []
    held = threading.Event()
    feed = base.ChangeFeed()
    feed.subscribe(seen.append)
    detector = ChangeDetector(lambda: sqlite_conn.connect(url[len("sqlite:///") :], synchronous="FULL",
                                                          create=False, reader=True),
                              feed, "elsewhere", 0.01, lambda: None)  # fmt: skip
    run = detector._run
    detector._thread = threading.Thread(target=lambda: (held.wait(10), run()), daemon=True)
    detector.start()
    wid = _enqueue(store, "late")  # committed while the detector's thread has not run yet
    held.set()
    deadline = time.monotonic() + 10
    while Change("queue", ("late",)) not in seen:
        assert time.monotonic() < deadline, f"{wid}: never delivered, saw {seen}"
        time.sleep(0.005)
    detector.stop(5)
