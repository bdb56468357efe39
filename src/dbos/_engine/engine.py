"""The Engine: one launched DBOS instance's store, thread pools, event loop, wake-ups and live executions."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .._config import Settings
from .._registry import Registry
from .._serialization import SerializerSet
from .._store import open_system_store
from .._store.base import Change, StoreSettings, SystemStore
from .deadlines import DeadlineKeeper
from .execution import Execution
from .threads import DaemonPool
from .waits import WakeRegistry

T = TypeVar("T")
_log = logging.getLogger("dbos")


class EventLoopThread:
    """DBOS's own event loop in a daemon thread, for async workflows started from sync code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="dbos-event-loop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        if self.loop.is_closed():
            return

        def cancel_all() -> None:
            # Fenced workflows stop at their next boundary; cancel what is still parked so nothing is left pending.
            for task in asyncio.all_tasks(self.loop):
                task.cancel()
            self.loop.call_soon(self.loop.stop)

        self.loop.call_soon_threadsafe(cancel_all)
        self._thread.join(timeout=2)


class Engine:
    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry
        self.serializers = SerializerSet(settings.serializer)
        self.executor_id = settings.executor_id
        self.incarnation = 0
        self.application_version: str | None = settings.application_version
        self.wake = WakeRegistry()
        self.store: SystemStore | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self.workflow_pool = DaemonPool(settings.max_executor_threads, "dbos-workflow")
        self.io_pool = concurrent.futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="dbos-io")
        self._busy = 0
        self._busy_lock = threading.Lock()
        self._last_pool_warning = 0.0
        self.loop_thread: EventLoopThread | None = None
        self.adopted_loop: asyncio.AbstractEventLoop | None = None
        self.active: dict[str, set[Execution]] = {}
        self._active_lock = threading.Lock()
        self.stopping = threading.Event()
        self.background: list[threading.Thread] = []
        self.app_db: Any = None
        self.recovery: Any = None
        self.dispatcher: Any = None
        self.on_capacity: Callable[[], None] | None = None
        self.deadlines: DeadlineKeeper | None = None
        self.ops: Any = None  # management operations (_dbos_manage.ops_of)
        self.confirm_lease: Callable[[], None] = lambda: None  # set by Recovery (02 §12.2 rule 6)
        self.lease_is_stale: Callable[[], bool] = lambda: False

    # --- lifecycle -----------------------------------------------------------------------------------------
    def open_store(self) -> SystemStore:
        s = self.settings
        store = open_system_store(
            s.system_database_url,
            StoreSettings(
                role="executor",
                schema=s.schema,
                pool_size=s.pool_size,
                sqlite_synchronous=s.sqlite_synchronous,
                use_listen_notify=s.use_listen_notify,
                poll_ceiling_s=s.poll_ceiling_s,
                max_payload_bytes=s.max_payload_bytes,
                application_name=s.name,
                create_database=True,
            ),
        )
        self.store = store
        self._unsubscribe = store.changes.subscribe(self.on_change)
        return store

    def on_change(self, change: Change) -> None:
        """Change-feed callback (never blocks): wake waits, and stop executions of cancelled or deleted
        workflows (02 §3 rule 4). A `Change("all")` (lost notifications) re-checks every live execution."""
        self.wake.on_change(change)
        if change.kind == "cancel" and change.key:
            wid = str(change.key[0])
            if self.is_running_here(wid):
                self._submit_recheck([wid])
        elif change.kind == "all" and self.active:
            self._submit_recheck(None)

    def _submit_recheck(self, ids: list[str] | None) -> None:
        # Confirm in the database before stopping anything: a late notification must not stop a re-run of the
        # workflow that a resume started here since.
        if self.stopping.is_set():
            return
        try:
            self.io_pool.submit(self._recheck_active, ids)
        except RuntimeError:  # pool shut down
            pass

    def stop_local(self, workflow_id: str) -> None:
        with self._active_lock:
            group = list(self.active.get(workflow_id, ()))
        for ex in group:
            ex.cancel()

    def _recheck_active(self, ids: list[str] | None = None) -> None:
        ids = list(self.active) if ids is None else ids
        if not ids or self.store is None:
            return
        states = self.store.get_states(ids)
        for wid in ids:
            st = states.get(wid)
            if st is None or not st.exists or st.status == "CANCELLED":
                self.stop_local(wid)

    @property
    def db(self) -> SystemStore:
        store = self.store
        if store is None:
            from ..error import DBOSException

            raise DBOSException("DBOS is not launched: call DBOS.launch() first")
        return store

    def shutdown(self, timeout_s: float = 5.0) -> None:
        self.stopping.set()
        self.wake.signal_all()
        if self.deadlines is not None:
            self.deadlines.stop()
        deadline = time.monotonic() + timeout_s
        for t in self.background:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        self.workflow_pool.shutdown()
        self.io_pool.shutdown(wait=False, cancel_futures=True)
        if self.loop_thread is not None:
            self.loop_thread.stop()
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self.app_db is not None:
            self.app_db.dispose()
        if self.store is not None:
            self.store.close(max(0.1, deadline - time.monotonic()))
            self.store = None

    def wake_dispatcher(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.wake()

    # --- executions ----------------------------------------------------------------------------------------
    def add_active(self, ex: Execution) -> None:
        with self._active_lock:
            self.active.setdefault(ex.workflow_id, set()).add(ex)
        if ex.deadline_ms is not None and self.deadlines is not None:
            self.deadlines.arm(ex.workflow_id, ex.deadline_ms)

    def remove_active(self, ex: Execution) -> None:
        with self._active_lock:
            group = self.active.get(ex.workflow_id)
            if group is not None:
                group.discard(ex)
                if not group:
                    del self.active[ex.workflow_id]

    def active_executions(self) -> list[Execution]:
        with self._active_lock:
            return [ex for group in self.active.values() for ex in group]

    def is_running_here(self, workflow_id: str) -> bool:
        with self._active_lock:
            return workflow_id in self.active

    # --- running work --------------------------------------------------------------------------------------
    def run_in_thread(self, fn: Callable[[], Any]) -> None:
        """Run a sync workflow body on the pool; never wait for a free thread (01 §2 max_executor_threads)."""

        def task() -> None:
            try:
                fn()
            finally:
                with self._busy_lock:
                    self._busy -= 1
                    was_full = self._busy == self.settings.max_executor_threads - 1
                if was_full and self.on_capacity is not None:
                    self.on_capacity()  # the dispatcher may claim again

        with self._busy_lock:
            full = self._busy >= self.settings.max_executor_threads
            self._busy += 1
        if not full:
            self.workflow_pool.submit(task)
            return
        now = time.monotonic()
        if now - self._last_pool_warning > 60:
            self._last_pool_warning = now
            _log.warning("workflow thread pool is full; running a workflow on an extra thread")
        threading.Thread(target=task, name="dbos-workflow-extra", daemon=True).start()

    @property
    def free_threads(self) -> int:
        with self._busy_lock:
            return max(0, self.settings.max_executor_threads - self._busy)

    def event_loop(self) -> asyncio.AbstractEventLoop:
        if self.adopted_loop is not None and self.adopted_loop.is_running():
            return self.adopted_loop
        if self.loop_thread is None:
            self.loop_thread = EventLoopThread()
        return self.loop_thread.loop

    def run_coroutine(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.event_loop())

    async def io(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking store call on DBOS's I/O pool without blocking the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.io_pool, lambda: fn(*args))
