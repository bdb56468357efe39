"""Connections, transactions, retries and counters of the SQLite backend (07 §5, §7).

One writer connection, the single group-commit lane (07 §8): every write is `BEGIN IMMEDIATE ... COMMIT` on it, and
small writes that arrive while it is busy commit together in one batch. Up to `min(4, cpu_count)` reader
connections (`query_only=ON`), each used by one thread at a time.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from . import base
from .group_commit import CommitLanes, Pending
from .sqlite_batch import OpDone, run_in_savepoint
from .sqlite_errors import classify_sqlite_error

T = TypeVar("T")

_log = logging.getLogger("dbos")

FOREGROUND_BUDGET_S = 30.0  # total retry budget of one op (tests may lower it)
BACKOFF_CAP_S = 2.0
MIGRATION_LOCK_BUDGET_S = 60.0
CHANGE_LOG_RETENTION_MS = 60_000
PRUNE_EVERY_S = 10.0
MAX_PAYLOAD_LIMIT = 268_435_456
MIN_SQLITE_VERSION = (3, 35, 0)
_WARN_EVERY_S = 30.0

_KEY_ARITY = {"wf": 1, "queue": 1, "ctl": 1, "cancel": 1, "msg": 2, "evt": 2, "stream": 2, "all": 0}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def init_error(message: str) -> Exception:
    from ..error import DBOSInitializationError

    return DBOSInitializationError(message)


def path_from_url(url: str) -> str:
    """`sqlite:///relative.sqlite` (resolved against the working directory) or `sqlite:////abs/path`."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise init_error(f"unsupported SQLite URL {url!r}: expected sqlite:///<path>")
    rest = url[len(prefix) :].split("?", 1)[0]
    if rest in ("", ":memory:"):
        raise init_error(f"in-memory SQLite databases are not supported: {url!r}")
    return os.path.abspath(rest)


def check_environment(path: str, settings: base.StoreSettings) -> None:
    """07 §5 rules 1-2 and §3.4 rule 3, checked before any connection is opened."""
    version = sqlite3.sqlite_version_info
    if tuple(version) < MIN_SQLITE_VERSION:
        found = ".".join(str(p) for p in version)
        raise init_error(f"SQLite {found} is too old: dbosx requires SQLite >= 3.35.0 (for RETURNING)")
    if settings.max_payload_bytes > MAX_PAYLOAD_LIMIT:
        raise init_error(
            f"max_payload_bytes {settings.max_payload_bytes} exceeds the limit {MAX_PAYLOAD_LIMIT}"
        )
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise init_error(f"the directory {directory!r} of the SQLite system database does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise init_error(f"the directory {directory!r} of the SQLite system database is not writable")


def set_wal(conn: sqlite3.Connection) -> str:
    """Switch to WAL and return the journal mode SQLite reports (lowercase)."""
    return str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower()


def _setup_new_file(conn: sqlite3.Connection) -> None:
    # Both must precede the first table; they are no-ops on an existing database.
    if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
        conn.execute("PRAGMA encoding='UTF-8'")
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")


def connect(path: str, *, synchronous: str, create: bool, reader: bool) -> sqlite3.Connection:
    """Open one connection with the settings of 07 §5 rule 3."""
    try:
        target = path if create else Path(path).as_uri() + "?mode=rw"
        conn = sqlite3.connect(
            target,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=256,
            timeout=10.0,
            uri=not create,
        )
    except sqlite3.Error as exc:
        raise init_error(f"cannot open the SQLite system database {path!r}: {exc}") from exc
    try:
        conn.row_factory = sqlite3.Row
        for pragma in (
            "busy_timeout=10000",
            "foreign_keys=ON",
            f"synchronous={synchronous}",
            "temp_store=MEMORY",
            "journal_size_limit=67108864",
        ):
            conn.execute("PRAGMA " + pragma)
        if not reader:
            _setup_new_file(conn)
        mode = set_wal(conn)
        if mode != "wal":
            raise init_error(
                f"SQLite WAL journal mode is unavailable for {path!r} (journal_mode={mode}); "
                "network filesystems and read-only locations are not supported"
            )
        if reader:
            conn.execute("PRAGMA query_only=ON")
    except BaseException as exc:
        conn.close()
        if isinstance(exc, sqlite3.Error):
            raise init_error(f"cannot set up the SQLite system database {path!r}: {exc}") from exc
        raise
    return conn


class WriteTx:
    """One open write transaction: its connection, its bound clock, and the changes it will publish."""

    __slots__ = ("conn", "now", "origin", "changes", "rollback_only")

    def __init__(self, conn: sqlite3.Connection, now: int, origin: str) -> None:
        self.conn = conn
        self.now = now
        self.origin = origin
        self.changes: dict[base.Change, None] = {}
        self.rollback_only = False  # set by ops whose result is "nothing written" after a partial write

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def emit(self, kind: base.ChangeKind, *key: str | None) -> None:
        """Log the change in this transaction (other processes) and publish it after commit (this one)."""
        change = base.Change(kind, tuple(key))
        if change in self.changes:
            return
        self.changes[change] = None
        k1 = key[0] if len(key) > 0 else None
        k2 = key[1] if len(key) > 1 else None
        self.conn.execute(
            "INSERT INTO dbos_change_log (kind, key1, key2, origin, created_at) VALUES (?, ?, ?, ?, ?)",
            (kind, k1, k2, self.origin, self.now),
        )


def change_from_log(kind: str, key1: str | None, key2: str | None) -> base.Change:
    arity = _KEY_ARITY.get(kind, 2)
    return base.Change(kind, (key1, key2)[:arity])  # type: ignore[arg-type]


class SQLiteDB:
    """Connections and transactions of one store."""

    def __init__(self, path: str, settings: base.StoreSettings, feed: base.ChangeFeed, origin: str) -> None:
        self.path = path
        self.origin = origin
        self.feed = feed
        full = settings.role == "client" or settings.sqlite_synchronous == "full"
        self.synchronous = "FULL" if full else "NORMAL"
        self.create = settings.create_database and settings.role != "client"
        self._wlock = threading.Lock()
        self._lanes: CommitLanes[tuple[str, Callable[[WriteTx], Any]]] = CommitLanes(1)
        self._writer: sqlite3.Connection | None = self.connect(reader=False)
        self._rlock = threading.Lock()
        self._idle: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()
        self._readers: list[sqlite3.Connection] = []
        self._max_readers = max(1, min(4, os.cpu_count() or 1))
        self._stats = base.StoreStats()
        self._slock = threading.Lock()
        self._last_prune = 0.0
        self._last_warning: dict[str, float] = {}
        self.closed = False

    def connect(self, *, reader: bool) -> sqlite3.Connection:
        # After the writer exists the file does too; readers never create it.
        create = self.create and not reader
        return connect(self.path, synchronous=self.synchronous, create=create, reader=reader)

    # counters --------------------------------------------------------------------------------------------------

    def count(self, op: str, *, commit: bool = False, read: bool = False) -> None:
        with self._slock:
            s = self._stats
            if commit:
                s.commits += 1
            if read:
                s.reads += 1
            s.by_op[op] = s.by_op.get(op, 0) + 1

    def stats(self) -> base.StoreStats:
        with self._slock:
            s = self._stats
            counts = base.StoreStats(s.commits, s.reads, s.round_trips, dict(s.by_op))
        return self._lanes.add_stats(counts)

    # retries ---------------------------------------------------------------------------------------------------

    def _retrying(self, op: str, attempt_fn: Callable[[], T], budget_s: float) -> T:
        deadline = time.monotonic() + budget_s
        attempt = 0
        while True:
            try:
                return attempt_fn()
            except base.Contention:
                if time.monotonic() >= deadline:
                    raise
                self._warn_once("contention", op)
                if attempt > 0:  # a contention retry skips its first sleep (07 §7 rule 4)
                    delay = min(BACKOFF_CAP_S, 0.010 * 2 ** (attempt - 1))
                    time.sleep(random.uniform(0.5, 1.0) * delay)
                attempt += 1

    def _warn_once(self, cls: str, op: str) -> None:
        now = time.monotonic()
        if now - self._last_warning.get(cls, -_WARN_EVERY_S) >= _WARN_EVERY_S:
            self._last_warning[cls] = now
            _log.warning("SQLite system database busy during %s; retrying", op)

    # writes ----------------------------------------------------------------------------------------------------

    def write(
        self,
        op: str,
        fn: Callable[[WriteTx], T],
        *,
        budget_s: float | None = None,
        batchable: bool = False,
        urgent: bool = False,
    ) -> T:
        """Run `fn` in one `BEGIN IMMEDIATE` transaction on the writer; publish its changes after commit.

        A `batchable` op (07 §8 rule 1) that finds the writer busy joins the pending batch; an `urgent` one
        (heartbeat, take-over, stop) goes ahead of every batch still waiting."""
        # Changes are published by each caller once its lane is released: a subscriber may write in turn.
        result: T
        changes: list[base.Change]
        if batchable:
            result, changes = self._lanes.submit((op, fn), self._write_alone, self._write_batch)
        else:
            with self._lanes.solo(urgent=urgent):
                result, changes = self._write_alone((op, fn), budget_s)
        for change in changes:
            self.feed.publish(change)
        return result

    def _write_alone(
        self, item: tuple[str, Callable[[WriteTx], T]], budget_s: float | None = None
    ) -> tuple[T, list[base.Change]]:
        op, fn = item
        budget = FOREGROUND_BUDGET_S if budget_s is None else budget_s
        return self._retrying(op, lambda: self._write_once(op, fn), budget)

    def _write_batch(self, items: Sequence[Pending[tuple[str, Callable[[WriteTx], Any]]]]) -> None:
        done = self._retrying("batch", lambda: self._batch_once(items), FOREGROUND_BUDGET_S)
        for d in done:
            self.count(d.op, read=not d.wrote and d.error is None)
        if any(d.wrote for d in done):
            with self._slock:
                self._stats.commits += 1
        for it, d in zip(items, done, strict=True):
            if d.error is not None:
                it.fail(d.error)
            else:
                it.succeed((d.result, d.changes))

    def _batch_once(self, items: Sequence[Pending[tuple[str, Callable[[WriteTx], Any]]]]) -> list[OpDone]:
        with self._wlock:
            conn = self._writer
            if conn is None:
                raise base.UnknownStorageError("the system store is closed", op="batch")
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise classify_sqlite_error(exc, "batch") from exc
            now = now_ms()
            try:
                done = [run_in_savepoint(conn, WriteTx(conn, now, self.origin), *it.payload) for it in items]
                if not any(d.wrote for d in done):
                    conn.execute("ROLLBACK")
                else:
                    self._maybe_prune(WriteTx(conn, now, self.origin))
                    conn.execute("COMMIT")
            except BaseException as exc:
                _rollback(conn)
                if isinstance(exc, (sqlite3.Error, UnicodeEncodeError)):
                    raise classify_sqlite_error(exc, "batch") from exc
                raise
        return done

    def _write_once(self, op: str, fn: Callable[[WriteTx], T]) -> tuple[T, list[base.Change]]:
        with self._wlock:
            conn = self._writer
            if conn is None:
                raise base.UnknownStorageError("the system store is closed", op=op)
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise classify_sqlite_error(exc, op) from exc
            tx = WriteTx(conn, now_ms(), self.origin)
            changes_before = conn.total_changes
            try:
                result = fn(tx)
                wrote = not tx.rollback_only and conn.total_changes != changes_before
                if not wrote:
                    conn.execute("ROLLBACK")
                else:
                    if tx.changes:
                        self._maybe_prune(tx)
                    conn.execute("COMMIT")
            except BaseException as exc:
                _rollback(conn)
                if isinstance(exc, (sqlite3.Error, UnicodeEncodeError)):
                    raise classify_sqlite_error(exc, op) from exc
                raise
        # A transaction that changed nothing flushes nothing: it counts as a read (07 §10.1 row 10).
        self.count(op, commit=wrote, read=not wrote)
        return result, list(tx.changes) if wrote else []

    def _maybe_prune(self, tx: WriteTx) -> None:
        mono = time.monotonic()
        if mono - self._last_prune < PRUNE_EVERY_S:
            return
        self._last_prune = mono
        tx.execute("DELETE FROM dbos_change_log WHERE created_at < ?", (tx.now - CHANGE_LOG_RETENTION_MS,))

    # reads -----------------------------------------------------------------------------------------------------

    def read(self, op: str, fn: Callable[[sqlite3.Connection], T], *, snapshot: bool = False) -> T:
        """Run `fn` on a reader, in autocommit or (`snapshot`) inside one deferred read transaction."""
        result = self._retrying(op, lambda: self._read_once(op, fn, snapshot), FOREGROUND_BUDGET_S)
        self.count(op, read=True)
        return result

    def _read_once(self, op: str, fn: Callable[[sqlite3.Connection], T], snapshot: bool) -> T:
        conn = self._acquire_reader(op)
        try:
            if snapshot:
                conn.execute("BEGIN")
            result = fn(conn)
            if snapshot:
                conn.execute("COMMIT")
            return result
        except (sqlite3.Error, UnicodeEncodeError) as exc:
            _rollback(conn)
            raise classify_sqlite_error(exc, op) from exc
        except BaseException:
            _rollback(conn)
            raise
        finally:
            self._idle.put(conn)

    def _acquire_reader(self, op: str) -> sqlite3.Connection:
        if self.closed:
            raise base.UnknownStorageError("the system store is closed", op=op)
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._rlock:
            if len(self._readers) < self._max_readers:
                conn = self.connect(reader=True)
                self._readers.append(conn)
                return conn
        return self._idle.get()

    # lifecycle -------------------------------------------------------------------------------------------------

    def close(self) -> None:
        with self._wlock:
            if self.closed:
                return
            self.closed = True
            writer, self._writer = self._writer, None
            if writer is not None:
                try:
                    writer.execute("PRAGMA optimize")
                except sqlite3.Error:
                    pass
                writer.close()
        with self._rlock:
            readers, self._readers = self._readers, []
        for conn in readers:
            conn.close()


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
