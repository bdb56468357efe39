"""Cross-process change detection for SQLite (07 §5 rule 9).

A daemon thread reads `PRAGMA data_version` on its own connection. When the value changes (after any other
connection's commit), one indexed read fetches the new `change_log` rows; rows written by this store are skipped,
since they were published in-process at commit. If rows were pruned before the detector saw them, it publishes
`Change("all")`.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable

from . import base
from .sqlite_conn import change_from_log

_log = logging.getLogger("dbos")

FAST_INTERVAL_S = 0.005
FAST_WINDOW_S = 1.0
MAX_ROWS = 10_000


class ChangeDetector:
    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        feed: base.ChangeFeed,
        origin: str,
        ceiling_s: float,
        on_read: Callable[[], None],
    ) -> None:
        self._connect = connect
        self._feed = feed
        self._origin = origin
        self._ceiling = max(ceiling_s, 0.001)
        self._fast = min(FAST_INTERVAL_S, self._ceiling)
        self._on_read = on_read
        self._stop = threading.Event()
        self._fast_until = 0.0
        self._last_version: int | None = None
        self._last_seq = 0
        self._conn: sqlite3.Connection | None = None
        self._thread = threading.Thread(target=self._run, name="dbos-sqlite-change-detector", daemon=True)

    def start(self) -> None:
        """Take the starting point here, not in the thread: a change committed after the store was opened but
        before the thread first ran would otherwise be counted as already seen, and never published."""
        try:
            conn = self._connect()
            self._last_version = _data_version(conn)
            self._last_seq = _log_top(conn)
        except Exception:
            _log.exception("the SQLite change detector could not open its connection")
            return
        self._conn = conn
        self._thread.start()

    def stop(self, timeout_s: float) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)

    def poke(self) -> None:
        """Check fast for a while (a new wait registered, or a local write)."""
        self._fast_until = time.monotonic() + FAST_WINDOW_S

    # -----------------------------------------------------------------------------------------------------------

    def _run(self) -> None:
        conn = self._conn
        assert conn is not None
        try:
            interval = self._ceiling
            while not self._stop.wait(interval):
                interval = self._next_interval(interval, self._check(conn))
        finally:
            conn.close()

    def _next_interval(self, interval: float, changed: bool) -> float:
        now = time.monotonic()
        if changed:
            self._fast_until = now + FAST_WINDOW_S
        if now < self._fast_until:
            return self._fast
        return min(interval * 2, self._ceiling)

    def _check(self, conn: sqlite3.Connection) -> bool:
        try:
            version = _data_version(conn)
            if version == self._last_version:
                return False
            self._last_version = version
            self._publish_new(conn)
            return True
        except sqlite3.Error as exc:
            _log.warning("the SQLite change detector failed (%s); it keeps trying", exc)
            return False

    def _publish_new(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN")
        try:
            top = _log_top(conn)
            rows = _rows_after(conn, self._last_seq)
        finally:
            conn.execute("COMMIT")
        self._on_read()
        last = self._last_seq
        self._last_seq = top
        overflow = top < last or len(rows) >= MAX_ROWS or (rows[0][0] > last + 1 if rows else top > last)
        if overflow:
            self._feed.publish(base.Change("all"))
            return
        for _seq, kind, key1, key2, origin in rows:
            if origin != self._origin:
                self._feed.publish(change_from_log(kind, key1, key2))


def _data_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


def _log_top(conn: sqlite3.Connection) -> int:
    """The largest change_log seq ever assigned (0 before the first row or before migration)."""
    try:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'dbos_change_log'").fetchone()
    except sqlite3.OperationalError:  # no AUTOINCREMENT table exists yet
        return 0
    return int(row[0]) if row is not None else 0


def _rows_after(conn: sqlite3.Connection, seq: int) -> list[tuple[int, str, str | None, str | None, str]]:
    try:
        cur = conn.execute(
            "SELECT seq, kind, key1, key2, origin FROM dbos_change_log WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, MAX_ROWS),
        )
    except sqlite3.OperationalError:  # not migrated yet
        return []
    return [(int(r[0]), str(r[1]), r[2], r[3], str(r[4])) for r in cur.fetchall()]
