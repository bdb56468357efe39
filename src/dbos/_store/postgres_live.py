"""The executor's liveness connection and LISTEN/NOTIFY receiver (07 §6.2 rule 3, §6.5, §6.6), and the clock
offset estimate behind `now_ms()` (07 §3.3 rule 4)."""

from __future__ import annotations

import json
import logging
import os
import select
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg import pq, sql

from . import base
from .postgres_errors import backoff_s

_log = logging.getLogger("dbos")

T = TypeVar("T")
Conn = psycopg.Connection[tuple[Any, ...]]

LISTENER_RECONNECT_CAP_S = 2.0
_SELECT_TIMEOUT_S = 5.0
_KINDS = frozenset({"wf", "msg", "evt", "stream", "queue", "ctl", "cancel", "all"})


def parse_payload(payload: str) -> base.Change:
    """A NOTIFY payload `[kind, key...]` as a Change; anything unparsable means "re-check everything"."""
    try:
        data = json.loads(payload)
    except ValueError:
        return base.Change("all")
    if (
        isinstance(data, list)
        and data
        and data[0] in _KINDS
        and all(k is None or isinstance(k, str) for k in data[1:])
    ):
        return base.Change(data[0], tuple(data[1:]))
    return base.Change("all")


class Clock:
    """Server clock estimate: the sample with the smallest round trip among the last 8."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, float]] = deque(maxlen=8)  # (rtt_ms, offset_ms)
        self._offset_ms = 0.0
        self._lock = threading.Lock()

    def add(self, server_ms: int, t_send: float, t_recv: float) -> None:
        """`t_send`/`t_recv` are local `time.time()` seconds around the statement that returned `server_ms`."""
        rtt = (t_recv - t_send) * 1000
        offset = server_ms - (t_send + t_recv) * 500
        with self._lock:
            self._samples.append((rtt, offset))
            self._offset_ms = min(self._samples)[1]

    def now_ms(self) -> int:
        return int(time.time() * 1000 + self._offset_ms)


class OwnBackends:
    """Backend pids of this store's open pool connections (weakly held, so closed ones drop out)."""

    def __init__(self) -> None:
        self._conns: weakref.WeakValueDictionary[int, Conn] = weakref.WeakValueDictionary()

    def add(self, conn: Conn) -> None:
        self._conns[conn.info.backend_pid] = conn

    def __contains__(self, pid: object) -> bool:
        conn = self._conns.get(pid) if isinstance(pid, int) else None
        return conn is not None and not conn.closed


class LivenessConnection:
    """One connection outside the pool: liveness lock, heartbeats, takeovers and (optionally) LISTEN.

    Every use holds `_lock`; the listener thread waits on the socket without it, so heartbeats never wait for
    anything but the database. Notifications read while another thread runs a statement arrive through the
    connection's notify handler."""

    def __init__(
        self,
        connect: Callable[[], Conn],
        feed: base.ChangeFeed,
        *,
        listen: list[str] | None,
        on_connect: Callable[[Conn], None],
        own_pids: OwnBackends | None = None,
    ) -> None:
        self._own_pids = own_pids if own_pids is not None else OwnBackends()
        self._connect = connect
        self._feed = feed
        self._listen = listen
        self._on_connect = on_connect
        self._conn: Conn | None = None
        self._lock = threading.RLock()
        self._up_since: float | None = None
        self._connected_once = False
        self._closed = False
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._thread: threading.Thread | None = None

    # lifecycle -------------------------------------------------------------------------------------------------

    def start(self, first: Conn | None) -> None:
        """Adopt `first` (already connected) and start the listener thread if LISTEN is enabled."""
        if first is not None:
            with self._lock:
                self._setup(first)
        if self._listen:
            self._thread = threading.Thread(target=self._listen_loop, name="dbos-pg-listener", daemon=True)
            self._thread.start()

    def close(self, timeout_s: float) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
        if self._lock.acquire(timeout=max(timeout_s, 0.1)):
            try:
                self._drop()
            finally:
                self._lock.release()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def uptime_ms(self) -> int:
        """How long the current connection has been up (-1 when it is down)."""
        since = self._up_since
        return -1 if since is None else int((time.monotonic() - since) * 1000)

    # use -------------------------------------------------------------------------------------------------------

    def run(self, fn: Callable[[Conn], T]) -> T:
        """Run `fn` on the connection, reconnecting first if it was lost."""
        with self._lock:
            conn = self._ensure()
            try:
                return fn(conn)
            except psycopg.Error:
                if conn.closed or conn.broken:
                    self._drop()
                raise

    def _ensure(self) -> Conn:
        if self._closed:
            raise base.ConnectionLost("the liveness connection is closed")
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        self._drop()
        new = self._connect()
        try:
            self._setup(new)
        except BaseException:
            new.close()
            raise
        return new

    def _setup(self, conn: Conn) -> None:
        conn.add_notify_handler(self._on_notify)
        if self._listen:
            stmts = sql.SQL("; ").join(sql.SQL("LISTEN {}").format(sql.Identifier(ch)) for ch in self._listen)
            conn.execute(stmts)
        self._on_connect(conn)
        self._conn = conn
        self._up_since = time.monotonic()
        if self._connected_once:
            _log.info("PostgreSQL liveness connection re-established")
            self._feed.publish(base.Change("all"))
        self._connected_once = True

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self._up_since = None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    # notifications ---------------------------------------------------------------------------------------------

    def _on_notify(self, n: psycopg.Notify) -> None:
        # Notifications that arrive while the liveness connection runs a statement. Our own pool connections'
        # echoes were already published in-process after commit; a late echo of our own `cancel` would stop a
        # re-run of that workflow started here since (e.g. right after a resume).
        if n.pid not in self._own_pids:
            self._feed.publish(parse_payload(n.payload))

    def _listen_loop(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                with self._lock:
                    conn = self._ensure()
                    fd = conn.fileno()
                attempt = 0
            except Exception as exc:
                if attempt == 0:
                    _log.warning("PostgreSQL listener connection failed (%s); retrying", exc)
                self._stop.wait(backoff_s(attempt, cap_s=LISTENER_RECONNECT_CAP_S))
                attempt += 1
                continue
            try:
                ready, _, _ = select.select([fd, self._wake_r], [], [], _SELECT_TIMEOUT_S)
            except (OSError, ValueError):
                continue
            if fd in ready and not self._stop.is_set():
                self._drain(conn)

    def _drain(self, conn: Conn) -> None:
        with self._lock:
            if conn is not self._conn:
                return
            try:
                pgconn = conn.pgconn
                pgconn.consume_input()
                while (n := pgconn.notifies()) is not None:
                    if n.be_pid not in self._own_pids:
                        self._feed.publish(parse_payload(n.extra.decode("utf-8", "replace")))
                if pgconn.status != pq.ConnStatus.OK:
                    self._drop()
            except psycopg.Error:
                _log.warning("PostgreSQL listener connection lost; reconnecting")
                self._drop()
