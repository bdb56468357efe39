"""Executor liveness, takeover of dead executors' workflows, and dispatch of re-enqueued workflows (01 §10, 02 §12).

Two background threads per executor:
- the *heartbeat* thread renews the lease, notices when this incarnation was taken over (zombie), and takes
  over dead incarnations of this application (lease expired, STOPPED, or -- same host -- the process is gone);
- the *dispatcher* claims ENQUEUED workflows of the internal queue in batches and runs them. It wakes on
  the change feed, on local re-enqueues, and on a fallback poll.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

from .. import _failpoints as fp
from .._store.base import (
    DeadCandidate,
    ExecutorRegistration,
    ExecutorRow,
)
from .engine import Engine

_log = logging.getLogger("dbos")
FALLBACK_POLL_S = 1.0


def host_identity() -> str:
    boot = ""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        pass
    return f"{socket.gethostname()}|{boot}"


def process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (field 22 of /proc/<pid>/stat), to detect pid reuse."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    return data.rsplit(")", 1)[1].split()[19]


def process_is_gone(row: ExecutorRow) -> bool:
    """Same-host probe (02 §12.3 (c)): True when the recorded process certainly no longer exists."""
    if row.pid == os.getpid():
        return True
    try:
        os.kill(row.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    start = process_start(row.pid)
    return start is not None and row.process_start is not None and start != row.process_start


def registration(engine: Engine, queues_json: str = "{}") -> ExecutorRegistration:
    s = engine.settings
    return ExecutorRegistration(
        executor_id=engine.executor_id,
        application_name=s.name,
        application_version=engine.application_version,
        hostname=socket.gethostname(),
        host_identity=host_identity(),
        pid=os.getpid(),
        process_start=process_start(os.getpid()),
        heartbeat_interval_ms=int(s.heartbeat_interval_s * 1000),
        lease_ms=int(s.lease_s * 1000),
        queues_json=queues_json,
    )


class Recovery:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.host = host_identity()
        self.seen_generation = -1
        s = engine.settings
        self._valid_s = max(0.0, s.lease_s - s.heartbeat_interval_s)
        self._last_ok = time.monotonic()
        self._confirm_lock = threading.Lock()
        engine.confirm_lease = self.confirm_lease
        engine.lease_is_stale = self.lease_is_stale

    # --- startup --------------------------------------------------------------------------------------------
    def register(self) -> None:
        dispatcher = self.engine.dispatcher
        queues = dispatcher.queues_json() if dispatcher is not None else "{}"
        reg = self.engine.db.register_executor(registration(self.engine, queues))
        self.engine.incarnation = reg.incarnation
        if dispatcher is not None:
            dispatcher.mark_published(queues)
        self._warn_if_not_latest(reg.latest_version)
        if reg.previous_lease_valid:
            _log.warning(
                "executor %s was still registered as alive: another live process may use the same executor_id",
                self.engine.executor_id,
            )
        for old in reg.superseded:
            self._take_over(self.engine.executor_id, old, require_expired=False)

    def _warn_if_not_latest(self, latest: str | None) -> None:
        own = self.engine.application_version
        if latest is None or latest == own:
            return
        _log.warning(
            "application version %r is not the latest version %r of application %r: this executor claims "
            "version-less work only while no executor of a newer version is live, and does not fire schedules "
            "into its own version",
            own,
            latest,
            self.engine.settings.name,
        )

    def start(self) -> None:
        t = threading.Thread(target=self._heartbeat_loop, name="dbos-heartbeat", daemon=True)
        t.start()
        self.engine.background.append(t)

    # --- takeover -------------------------------------------------------------------------------------------
    def _take_over(self, executor_id: str, incarnation: int, *, require_expired: bool) -> None:
        ids = self.engine.db.take_over(executor_id, incarnation, require_expired=require_expired)
        fp.failpoint("takeover.after_commit")
        if ids:
            _log.info("recovering %d workflow(s) of executor %s/%d", len(ids), executor_id, incarnation)
            self.engine.wake_dispatcher()

    def _is_dead(self, cand: DeadCandidate) -> bool:
        if cand.certain:
            return True
        row = cand.executor
        return row.host_identity == self.host and process_is_gone(row)

    def scan(self) -> None:
        """Find dead incarnations of this application and re-enqueue their PENDING workflows."""
        e = self.engine
        mine = (e.executor_id, e.incarnation)
        for cand in e.db.find_dead(e.settings.name):
            row = cand.executor
            if (row.executor_id, row.incarnation) == mine:
                continue
            if self._is_dead(cand):
                self._take_over(row.executor_id, row.incarnation, require_expired=cand.certain)
        if e.db.requeue_orphans(e.settings.name):
            self.engine.wake_dispatcher()

    # --- heartbeat ------------------------------------------------------------------------------------------
    def _heartbeat_once(self) -> None:
        fp.failpoint("heartbeat.before")
        self._confirm()
        self.scan()

    def _confirm(self) -> None:
        """Renew the lease, and publish the dispatched queues when they changed (at most one heartbeat after a
        queue is declared or adopted)."""
        e = self.engine
        queues = e.dispatcher.queues_to_publish() if e.dispatcher is not None else None
        hb = e.db.heartbeat(e.executor_id, e.incarnation, queues_json=queues)
        if hb.alive:
            self._last_ok = time.monotonic()
            if queues is not None:
                e.dispatcher.mark_published(queues)
        else:
            self._became_zombie(hb.newer_incarnation_alive)

    def lease_is_stale(self) -> bool:
        return time.monotonic() - self._last_ok >= self._valid_s

    def confirm_lease(self) -> None:
        """Before a step body starts (02 §12.2 rule 6): if the last good heartbeat is too old for peers to still
        trust this incarnation's lease (a pause, a stall), confirm in the database first. A taken-over zombie
        fences every execution here, so the caller's boundary check stops it before the body runs."""
        if not self.lease_is_stale():
            return
        with self._confirm_lock:
            if time.monotonic() - self._last_ok < self._valid_s:
                return
            self._confirm()

    def _became_zombie(self, superseded: bool) -> None:
        e = self.engine
        _log.error(
            "executor %s/%d was taken over while unresponsive; its in-flight workflows are fenced",
            e.executor_id,
            e.incarnation,
        )
        for ex in e.active_executions():
            ex.fence_off()
        if superseded:
            _log.error(
                "a newer incarnation of executor %s is alive; this process stops claiming work", e.executor_id
            )
            e.stopping.set()
            return
        self.register()
        self._last_ok = time.monotonic()

    def _heartbeat_loop(self) -> None:
        e = self.engine
        while not e.stopping.wait(e.settings.heartbeat_interval_s):
            try:
                self._heartbeat_once()
            except Exception:
                if not e.stopping.is_set():
                    _log.warning("heartbeat failed; retrying", exc_info=True)
