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
import secrets
import socket
import threading
from typing import Any

from .. import _failpoints as fp
from .._store.base import (
    INTERNAL_QUEUE,
    ClaimedWorkflow,
    ClaimRequest,
    DeadCandidate,
    ExecutorRegistration,
    ExecutorRow,
    Outcome,
)
from ..error import DBOSNotAuthorizedError, DBOSSerializationError, DBOSWorkflowFunctionNotFoundError
from .engine import Engine
from .execution import Execution
from .waits import Waiter
from .workflows import Auth, ReceiverState, body_of, run_in_background

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


def registration(engine: Engine) -> ExecutorRegistration:
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
    )


class Recovery:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.host = host_identity()
        self.dispatch_waiter = Waiter()
        self.seen_generation = -1

    # --- startup --------------------------------------------------------------------------------------------
    def register(self) -> None:
        reg = self.engine.db.register_executor(registration(self.engine))
        self.engine.incarnation = reg.incarnation
        if reg.previous_lease_valid:
            _log.warning(
                "executor %s was still registered as alive: another live process may use the same executor_id",
                self.engine.executor_id,
            )
        for old in reg.superseded:
            self._take_over(self.engine.executor_id, old, require_expired=False)

    def start(self) -> None:
        e = self.engine
        e.wake.register([("queue", INTERNAL_QUEUE)], self.dispatch_waiter)
        e.on_capacity = self.dispatch_waiter.notify
        for target, name in (
            (self._heartbeat_loop, "dbos-heartbeat"),
            (self._dispatch_loop, "dbos-dispatcher"),
        ):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            e.background.append(t)

    # --- takeover -------------------------------------------------------------------------------------------
    def _take_over(self, executor_id: str, incarnation: int, *, require_expired: bool) -> None:
        ids = self.engine.db.take_over(executor_id, incarnation, require_expired=require_expired)
        fp.failpoint("takeover.after_commit")
        if ids:
            _log.info("recovering %d workflow(s) of executor %s/%d", len(ids), executor_id, incarnation)
            self.dispatch_waiter.notify()

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
            self.dispatch_waiter.notify()

    # --- heartbeat ------------------------------------------------------------------------------------------
    def _heartbeat_once(self) -> None:
        e = self.engine
        fp.failpoint("heartbeat.before")
        hb = e.db.heartbeat(e.executor_id, e.incarnation)
        if not hb.alive:
            self._became_zombie(hb.newer_incarnation_alive)
        self.scan()

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

    def _heartbeat_loop(self) -> None:
        e = self.engine
        while not e.stopping.wait(e.settings.heartbeat_interval_s):
            try:
                self._heartbeat_once()
            except Exception:
                if not e.stopping.is_set():
                    _log.warning("heartbeat failed; retrying", exc_info=True)

    # --- dispatch -------------------------------------------------------------------------------------------
    def _dispatch_loop(self) -> None:
        e = self.engine
        while not e.stopping.is_set():
            try:
                claimed = self.dispatch_once()
            except Exception:
                if e.stopping.is_set():
                    return
                _log.warning("dispatch failed; retrying", exc_info=True)
                claimed = 0
            if claimed == 0:
                self.dispatch_waiter.wait(FALLBACK_POLL_S)

    def dispatch_once(self) -> int:
        e = self.engine
        capacity = min(1000, max(0, e.free_threads))
        names = e.registry.workflow_names()
        if capacity == 0 or not names:
            return 0
        result = e.db.claim(
            ClaimRequest(
                queue_name=INTERNAL_QUEUE,
                executor_id=e.executor_id,
                incarnation=e.incarnation,
                application_name=e.settings.name,
                application_version=e.application_version,
                registered=names,
                max_rows=capacity,
                batch_token=secrets.token_hex(16),
            )
        )
        fp.failpoint("claim.after_commit")
        return self._load_and_run(result.claimed)

    def _load_and_run(self, claimed: list[ClaimedWorkflow]) -> int:
        """Start the claimed workflows; returns how many were handled without being released."""
        if not claimed:
            return 0
        need = [c.fence.workflow_id for c in claimed if c.may_have_steps]
        steps = self.engine.db.load_checkpoints(need) if need else {}
        handled = 0
        for c in claimed:
            try:
                handled += self._run_claimed(c, steps.get(c.fence.workflow_id, {}))
            except Exception:
                _log.exception("could not dispatch workflow %s", c.fence.workflow_id)
        return handled

    def _fail(self, c: ClaimedWorkflow, exc: Exception) -> None:
        e = self.engine
        payload = e.serializers.serialize_error(exc, max_bytes=e.settings.max_payload_bytes)
        e.db.record_outcome(c.fence, Outcome("ERROR", error=payload))

    def _run_claimed(self, c: ClaimedWorkflow, checkpoints: dict[int, Any]) -> bool:
        e = self.engine
        row = c.row
        info = e.registry.workflow(row.name)
        if info is None:
            e.db.release([c.fence], refund_attempt=True)
            return False
        limit = (
            row.max_recovery_attempts if row.max_recovery_attempts is not None else info.max_recovery_attempts
        )
        if limit is not None and row.recovery_attempts > limit + 1:
            _log.error("workflow %s exceeded %d recovery attempts; dead-lettered", row.workflow_id, limit)
            e.db.record_outcome(c.fence, Outcome("MAX_RECOVERY_ATTEMPTS_EXCEEDED"))
            return True
        try:
            args, kwargs = e.serializers.deserialize_inputs(row.inputs)  # type: ignore[arg-type]
            receiver = self._receiver(row, info)
        except _Missing:
            e.db.release([c.fence], refund_attempt=True)
            return False
        except (DBOSSerializationError, DBOSWorkflowFunctionNotFoundError) as exc:
            self._fail(c, exc)
            return True
        auth = Auth(row.authenticated_user, row.authenticated_roles, row.assumed_role)
        required = e.registry.roles_for(info)
        if required and not set(required) & set(row.authenticated_roles or []):
            self._fail(
                c, DBOSNotAuthorizedError(f"Function {info.name} requires one of the roles {required}")
            )
            return True
        ex = Execution(
            row.workflow_id, row.name, c.fence, checkpoints, row.deadline_ms, is_async=info.is_async
        )
        run_in_background(e, ex, body_of(info, receiver, tuple(args), dict(kwargs)), auth)
        return True

    def _receiver(self, row: Any, info: Any) -> Any:
        reg = self.engine.registry
        if info.method_kind == "classmethod":
            cls = reg.classes.get(row.class_name)
            if cls is None:
                raise _Missing(row.class_name)
            return cls
        if info.method_kind != "instance":
            return None
        if row.config_name is not None:
            key = f"{row.class_name}/{row.config_name}"
            inst = reg.instances.get(key)
            if inst is None:
                _log.warning(
                    "workflow %s needs configured instance %r, not registered here", row.workflow_id, key
                )
                raise _Missing(key)
            return inst
        if row.receiver is None:
            raise DBOSWorkflowFunctionNotFoundError(
                row.workflow_id,
                f"workflow {row.workflow_id} is an instance method but has no stored receiver",
            )
        cls = reg.classes.get(row.class_name)
        obj = self.engine.serializers.deserialize_receiver(row.receiver, row.inputs.serializer, cls)
        if isinstance(obj, ReceiverState):
            if cls is None:
                raise _Missing(row.class_name)
            return obj.rebuild(cls)
        return obj


class _Missing(Exception):
    pass
