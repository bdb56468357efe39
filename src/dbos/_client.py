"""`DBOSClient` (02 §9): enqueue, inspect and manage workflows from another process, without decorators,
migrations or background work. Management goes through `_management`, the implementation `DBOS` uses too."""

from __future__ import annotations

import asyncio
import math
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Generic, TypedDict, TypeVar

from typing_extensions import Required

from . import _management as mg
from ._context import DuplicationPolicy, take_pending_id
from ._serialization import SerializerSet
from ._store import open_system_store
from ._store.base import TERMINAL_STATUSES, NewWorkflow, StoreError, StoreSettings, SystemStore
from ._types import ExecutorInfo, StepInfo, VersionInfo, WorkflowList, WorkflowStatus
from ._validation import (
    check_count,
    check_identifier,
    check_polling_interval,
    check_priority,
    check_roles,
    check_seconds,
    check_user,
    show,
)
from .error import (
    DBOSConflictingWorkflowError,
    DBOSException,
    DBOSInitializationError,
    DBOSNonExistentWorkflowError,
    DBOSQueueDeduplicatedError,
    DBOSValidationError,
)

R = TypeVar("R")
T = TypeVar("T")
_MIN_POLL_S = 0.005
_MAX_FAST_POLL_S = 0.1  # waits poll adaptively up to this, or the caller's polling interval if lower


class EnqueueOptions(TypedDict, total=False):
    workflow_name: Required[str]
    queue_name: Required[str]
    workflow_id: str
    app_version: str
    workflow_timeout: float
    delay_seconds: float
    deduplication_id: str
    duplication_policy: DuplicationPolicy
    priority: int
    queue_partition_key: str
    max_recovery_attempts: int
    authenticated_user: str
    authenticated_roles: list[str]
    class_name: str
    instance_name: str


_OPTION_KEYS = frozenset(EnqueueOptions.__annotations__)


class ClientHandle(Generic[R]):
    """A handle on a workflow, read through the client's store."""

    def __init__(self, client: DBOSClient, workflow_id: str) -> None:
        self._client = client
        self.workflow_id = workflow_id

    def get_workflow_id(self) -> str:
        return self.workflow_id

    def get_status(self) -> WorkflowStatus:
        status = self._client.get_workflow_status(self.workflow_id)
        if status is None:
            raise DBOSNonExistentWorkflowError(self.workflow_id)
        return status

    def get_result(self, *, polling_interval_sec: float = 1.0) -> R:
        value: R = self._client._await_result(self.workflow_id, check_polling_interval(polling_interval_sec))
        return value

    def __repr__(self) -> str:
        return f"ClientHandle({self.workflow_id!r})"


class ClientHandleAsync(ClientHandle[R]):
    async def get_status(self) -> WorkflowStatus:  # type: ignore[override]
        return await asyncio.to_thread(ClientHandle.get_status, self)

    async def get_result(self, *, polling_interval_sec: float = 1.0) -> R:  # type: ignore[override]
        return await asyncio.to_thread(
            ClientHandle.get_result, self, polling_interval_sec=polling_interval_sec
        )


def _open_store(url: str, schema: str, application_name: str | None, max_payload_bytes: int) -> SystemStore:
    from ._config import _check_url

    url = _check_url("system_database_url", url)
    settings = StoreSettings(
        role="client",
        schema=schema,
        pool_size=4,
        max_payload_bytes=max_payload_bytes,
        application_name=application_name,
        create_database=False,
    )
    try:
        store = open_system_store(url, settings)
    except DBOSInitializationError:
        raise
    except StoreError as e:
        raise DBOSInitializationError(f"cannot open the system database: {e}") from e
    try:
        state = store.check_schema()
    except StoreError as e:
        store.close()
        raise DBOSInitializationError(f"cannot read the system database schema: {e}") from e
    if state in ("missing", "behind", "ahead_incompatible"):
        store.close()
        raise DBOSInitializationError(
            f"the system database schema is {state}: launch a DBOS application (or run `dbos migrate`) first"
        )
    return store


class DBOSClient:
    def __init__(
        self,
        *,
        system_database_url: str,
        application_database_url: str | None = None,
        dbos_system_schema: str = "dbos",
        serializer: Any = "pickle",
        application_name: str | None = None,
        max_payload_bytes: int = 67_108_864,
    ) -> None:
        if not isinstance(system_database_url, str) or not system_database_url:
            raise DBOSInitializationError(
                f"system_database_url must be a database URL, got {show(system_database_url)}"
            )
        limit = check_count(max_payload_bytes, "max_payload_bytes", minimum=1024, maximum=268_435_456)
        assert limit is not None
        self._max_payload = limit
        self._application_name = (
            None if application_name is None else check_identifier(application_name, "application_name")
        )
        self._serializers = SerializerSet(serializer)
        self._store: SystemStore | None = _open_store(
            system_database_url, dbos_system_schema, self._application_name, limit
        )
        self._app_db: Any = None
        if application_database_url is not None:
            from ._appdb import AppDatabase

            self._app_db = AppDatabase(
                application_database_url, schema=dbos_system_schema, separate=True, engine_kwargs={}
            )
        self._lock = threading.Lock()

    # --- lifecycle -----------------------------------------------------------------------------------------
    def destroy(self) -> None:
        with self._lock:
            store, self._store = self._store, None
        if store is not None:
            store.close()
        if self._app_db is not None:
            self._app_db.dispose()
            self._app_db = None

    def __enter__(self) -> DBOSClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    @property
    def _db(self) -> SystemStore:
        store = self._store
        if store is None:
            raise DBOSException("this DBOSClient was destroyed")
        return store

    @property
    def serializers(self) -> SerializerSet:
        return self._serializers

    def _ops(self) -> mg.Ops:
        return mg.Ops(self._db, self._serializers, self._application_name, self._app_db)

    # --- enqueue -------------------------------------------------------------------------------------------
    def enqueue(self, options: EnqueueOptions, *args: Any, **kwargs: Any) -> ClientHandle[Any]:
        return ClientHandle(self, self._enqueue(options, args, kwargs))

    async def enqueue_async(
        self, options: EnqueueOptions, *args: Any, **kwargs: Any
    ) -> ClientHandleAsync[Any]:
        pending = take_pending_id()
        wid = await asyncio.to_thread(self._enqueue, options, args, kwargs, pending)
        return ClientHandleAsync(self, wid)

    def _enqueue(
        self, options: Any, args: tuple[Any, ...], kwargs: dict[str, Any], pending: str | None = None
    ) -> str:
        new = self._new_workflow(options, args, kwargs, pending)
        res = self._db.insert_workflow(new)
        if res.kind in ("created", "existing", "dedup_existing"):
            if res.kind == "existing" and res.name != new.name:
                raise DBOSConflictingWorkflowError(
                    new.workflow_id, f"Workflow ID {new.workflow_id} is used by {res.name}"
                )
            return res.workflow_id
        if res.kind == "id_conflict":
            raise DBOSConflictingWorkflowError(
                new.workflow_id, f"Workflow ID {new.workflow_id} is already used by workflow {res.name}"
            )
        detail = None
        if res.kind == "dedup_conflict":
            detail = f"deduplication ID {new.deduplication_id!r} is held by workflow {res.workflow_id} of {res.name}"
        raise DBOSQueueDeduplicatedError(
            new.workflow_id,
            new.queue_name or "",
            new.deduplication_id or "",
            existing_workflow_id=res.workflow_id,
            detail=detail,
        )

    def _new_workflow(
        self, options: Any, args: tuple[Any, ...], kwargs: dict[str, Any], pending: str | None
    ) -> NewWorkflow:
        o = _check_options(options)
        queue_name = o["queue_name"]
        self._check_queue(queue_name, o.get("priority"), o.get("queue_partition_key"))
        wid = o.get("workflow_id") or pending or take_pending_id() or str(uuid.uuid4())
        inputs = self._serializers.serialize_inputs(
            args, kwargs, workflow_name=o["workflow_name"], max_bytes=self._max_payload
        )
        delay_s = o.get("delay_seconds") or 0.0
        timeout = o.get("workflow_timeout")
        delay_ms = int(math.ceil(delay_s * 1000))
        return NewWorkflow(
            workflow_id=wid,
            name=o["workflow_name"],
            class_name=o.get("class_name"),
            config_name=o.get("instance_name"),
            inputs=inputs,
            receiver=None,
            status="DELAYED" if delay_ms > 0 else "ENQUEUED",
            owner=None,
            creator_token=secrets.token_hex(16),
            queue_name=queue_name,
            priority=o.get("priority") or 0,
            partition_key=o.get("queue_partition_key"),
            deduplication_id=o.get("deduplication_id"),
            duplication_policy=o.get("duplication_policy") or "return-existing",
            delay_until_ms=self._db.now_ms() + delay_ms if delay_ms > 0 else None,
            timeout_ms=None if timeout is None else int(math.ceil(timeout * 1000)),
            application_name=self._application_name,
            application_version=o.get("app_version"),
            authenticated_user=o.get("authenticated_user"),
            authenticated_roles=o.get("authenticated_roles"),
            max_recovery_attempts=o.get("max_recovery_attempts"),
        )

    def _check_queue(self, queue_name: str, priority: int | None, partition_key: str | None) -> None:
        """Database-backed queues are checked at enqueue (02 §9 rule 3); others are the executor's business."""
        row = self._db.get_queue(queue_name)
        if row is None:
            return
        from ._queues.enqueue import check_against_definition
        from ._queues.queue import QueueConfig

        check_against_definition(QueueConfig.from_json(row.config), queue_name, priority, partition_key)

    # --- handles and waits ---------------------------------------------------------------------------------
    def retrieve_workflow(self, workflow_id: str) -> ClientHandle[Any]:
        wid = check_identifier(workflow_id, "workflow_id")
        if self._db.get_workflow(wid, load_input=False, load_output=False) is None:
            raise DBOSNonExistentWorkflowError(wid)
        return ClientHandle(self, wid)

    async def retrieve_workflow_async(self, workflow_id: str) -> ClientHandleAsync[Any]:
        handle = await asyncio.to_thread(self.retrieve_workflow, workflow_id)
        return ClientHandleAsync(self, handle.workflow_id)

    def get_workflow_status(self, workflow_id: str) -> WorkflowStatus | None:
        from ._handles import status_from_row

        row = self._db.get_workflow(check_identifier(workflow_id, "workflow_id"))
        return None if row is None else status_from_row(self, row)

    async def get_workflow_status_async(self, workflow_id: str) -> WorkflowStatus | None:
        return await asyncio.to_thread(self.get_workflow_status, workflow_id)

    def _poll(self, check: Callable[[], T | None], cap: float) -> T:
        """Adaptive polling: the client holds no listener of its own (02 §9 rule 6)."""
        delay = _MIN_POLL_S
        ceiling = min(cap, _MAX_FAST_POLL_S)
        while True:
            found = check()
            if found is not None:
                return found
            time.sleep(delay)
            delay = min(ceiling, delay * 2)

    def _await_result(self, workflow_id: str, cap: float) -> Any:
        from ._engine.outcomes import outcome_of

        def check() -> tuple[Any] | None:
            row = self._db.get_workflow(workflow_id, load_input=False)
            if row is None:
                raise DBOSNonExistentWorkflowError(workflow_id)
            if row.status not in TERMINAL_STATUSES:
                return None
            return (outcome_of(self, row),)  # type: ignore[arg-type]

        return self._poll(check, cap)[0]

    def wait_first(self, handles: list[Any], *, polling_interval_sec: float = 1.0) -> Any:
        ids = [h.workflow_id for h in handles] if isinstance(handles, (list, tuple)) else None
        if ids is None:
            raise DBOSValidationError(f"wait_first needs a list of handles, got {type(handles).__name__}")
        mg.check_wait_first_ids(ids)
        wid = self._poll(
            lambda: mg.first_terminal(self._db, ids), check_polling_interval(polling_interval_sec)
        )
        return handles[ids.index(wid)]

    async def wait_first_async(self, handles: list[Any], *, polling_interval_sec: float = 1.0) -> Any:
        return await asyncio.to_thread(self.wait_first, handles, polling_interval_sec=polling_interval_sec)

    # --- messages and events (04) ---------------------------------------------------------------------------
    def send(
        self,
        destination_id: str,
        message: Any,
        topic: str | None = None,
        idempotency_key: str | None = None,
        *,
        send_to_forks: bool = False,
    ) -> None:
        from ._engine.messaging import check_send_args
        from ._store.base import NewMessage, message_id_for_key

        dest, t, key = check_send_args(destination_id, topic, idempotency_key, send_to_forks)
        payload = self._serializers.serialize_value(message, what="message", max_bytes=self._max_payload)
        mid = message_id_for_key(dest, key) if key is not None else "u:" + uuid.uuid4().hex
        res = self._db.send_messages(
            [NewMessage(mid, dest, t, payload)], send_to_forks=send_to_forks, checkpoint=None
        )
        if res.missing is not None:
            raise DBOSNonExistentWorkflowError(res.missing)

    def get_event(self, workflow_id: str, key: str, timeout_seconds: float = 60) -> Any:
        from ._engine.messaging import check_key, check_wait_timeout

        wid = check_identifier(workflow_id, "workflow_id")
        k = check_key(key)
        deadline = time.monotonic() + check_wait_timeout(timeout_seconds)

        def check() -> tuple[Any] | None:
            read = self._db.get_event(wid, k)
            if read.is_set:
                return (None if read.value is None else self._serializers.deserialize_value(read.value),)
            if read.writer.exists and read.writer.status in ("SUCCESS", "ERROR"):
                return (None,)
            if time.monotonic() >= deadline:
                return (None,)
            return None

        return self._poll(check, _MAX_FAST_POLL_S)[0]

    def read_stream(
        self, workflow_id: str, key: str, *, offset: int = 0, timeout_seconds: float | None = None
    ) -> Iterator[Any]:
        """The values of a stream in order, stopping at its end (04 §10); adaptive polling, no listener."""
        from ._engine.messaging import check_key, check_wait_timeout
        from ._engine.streams import check_offset
        from ._store.base import TERMINAL_STATUSES as ENDED
        from .error import DBOSStreamTimeoutError

        wid = check_identifier(workflow_id, "workflow_id")
        k = check_key(key, "stream key")
        start = check_offset(offset)
        timeout = None if timeout_seconds is None else check_wait_timeout(timeout_seconds)

        def values() -> Iterator[Any]:
            nxt = start
            while True:
                waited_from = time.monotonic()
                delay = _MIN_POLL_S
                while True:
                    read = self._db.read_stream(wid, k, from_offset=nxt)
                    if read.values:
                        break
                    if read.end_offset is not None or (read.writer.exists and read.writer.status in ENDED):
                        return
                    if not read.writer.exists:
                        raise DBOSNonExistentWorkflowError(wid)
                    if timeout is not None and time.monotonic() - waited_from >= timeout:
                        raise DBOSStreamTimeoutError(wid, k, timeout)
                    time.sleep(delay)
                    delay = min(_MAX_FAST_POLL_S, delay * 2)
                for off, payload in read.values:
                    nxt = off + 1
                    yield self._serializers.deserialize_value(payload)

        return values()

    def read_stream_offset(
        self, workflow_id: str, key: str, offset: int, *, timeout_seconds: float | None = None
    ) -> Any:
        """The value at `offset`, waiting for it; DBOSStreamTimeoutError if the stream ended before it (04 §11)."""
        from ._engine.streams import check_offset
        from .error import DBOSStreamTimeoutError

        target = check_offset(offset)
        for value in self.read_stream(workflow_id, key, offset=target, timeout_seconds=timeout_seconds):
            return value
        raise DBOSStreamTimeoutError(
            workflow_id, key, timeout_seconds, f"stream ended before offset {target}"
        )

    async def read_stream_async(
        self, workflow_id: str, key: str, *, offset: int = 0, timeout_seconds: float | None = None
    ) -> AsyncIterator[Any]:
        """The async iterator twin of `read_stream`; each value is fetched on a worker thread."""
        it = self.read_stream(workflow_id, key, offset=offset, timeout_seconds=timeout_seconds)
        done = object()
        while True:
            value = await asyncio.to_thread(next, it, done)
            if value is done:
                return
            yield value

    async def read_stream_offset_async(
        self, workflow_id: str, key: str, offset: int, *, timeout_seconds: float | None = None
    ) -> Any:
        return await asyncio.to_thread(
            self.read_stream_offset, workflow_id, key, offset, timeout_seconds=timeout_seconds
        )

    def get_all_events(self, workflow_id: str) -> dict[str, Any]:
        raw = self._db.get_all_events(check_identifier(workflow_id, "workflow_id"))
        return {k: self._serializers.deserialize_value(v) for k, v in raw.items()}

    async def send_async(
        self,
        destination_id: str,
        message: Any,
        topic: str | None = None,
        idempotency_key: str | None = None,
        *,
        send_to_forks: bool = False,
    ) -> None:
        await asyncio.to_thread(
            self.send, destination_id, message, topic, idempotency_key, send_to_forks=send_to_forks
        )

    async def get_event_async(self, workflow_id: str, key: str, timeout_seconds: float = 60) -> Any:
        return await asyncio.to_thread(self.get_event, workflow_id, key, timeout_seconds)

    async def get_all_events_async(self, workflow_id: str) -> dict[str, Any]:
        return await asyncio.to_thread(self.get_all_events, workflow_id)

    # --- management ----------------------------------------------------------------------------------------
    def cancel_workflow(self, workflow_id: str, *, cancel_children: bool = False) -> None:
        mg.cancel(self._ops(), [workflow_id], cancel_children=cancel_children)

    def cancel_workflows(self, workflow_ids: list[str], *, cancel_children: bool = False) -> None:
        mg.cancel(self._ops(), workflow_ids, cancel_children=cancel_children)

    def resume_workflow(self, workflow_id: str, *, queue_name: str | None = None) -> ClientHandle[Any]:
        return self.resume_workflows([workflow_id], queue_name=queue_name)[0]

    def resume_workflows(
        self, workflow_ids: list[str], *, queue_name: str | None = None
    ) -> list[ClientHandle[Any]]:
        return [ClientHandle(self, w) for w in mg.resume(self._ops(), workflow_ids, queue_name=queue_name)]

    def fork_workflow(self, workflow_id: str, start_step: int, **options: Any) -> ClientHandle[Any]:
        return ClientHandle(self, mg.fork(self._ops(), workflow_id, start_step, **options))

    def delete_workflow(self, workflow_id: str, *, delete_children: bool = False) -> None:
        mg.delete(self._ops(), [workflow_id], delete_children=delete_children)

    def delete_workflows(self, workflow_ids: list[str], *, delete_children: bool = False) -> None:
        mg.delete(self._ops(), workflow_ids, delete_children=delete_children)

    def list_workflows(self, **filters: Any) -> WorkflowList:
        return mg.list_workflows(self._ops(), **filters)

    def list_queued_workflows(self, **filters: Any) -> WorkflowList:
        return mg.list_workflows(self._ops(), queues_only=True, **filters)

    def list_workflow_steps(self, workflow_id: str, **options: Any) -> list[StepInfo]:
        return mg.list_steps(self._ops(), workflow_id, **options)

    def garbage_collect(self, cutoff: Any = None, keep_last: int | None = None) -> int:
        return mg.garbage_collect(self._ops(), cutoff, keep_last)

    def export_workflow(self, workflow_id: str, *, include_children: bool = False) -> dict[str, Any]:
        return mg.export_workflow(self._ops(), workflow_id, include_children=include_children)

    def import_workflow(self, data: dict[str, Any]) -> list[str]:
        return mg.import_workflow(self._ops(), data)

    def list_executors(self, *, include_inactive: bool = False) -> list[ExecutorInfo]:
        return mg.list_executors(self._ops(), include_inactive=include_inactive)

    async def list_executors_async(self, *, include_inactive: bool = False) -> list[ExecutorInfo]:
        return await asyncio.to_thread(self.list_executors, include_inactive=include_inactive)

    # --- application versions (05 §7 rule 8), for the client's application_name ------------------------------
    def list_application_versions(self) -> list[VersionInfo]:
        return mg.list_versions(self._ops())

    async def list_application_versions_async(self) -> list[VersionInfo]:
        return await asyncio.to_thread(self.list_application_versions)

    def get_latest_application_version(self) -> VersionInfo:
        return mg.latest_version(self._ops())

    async def get_latest_application_version_async(self) -> VersionInfo:
        return await asyncio.to_thread(self.get_latest_application_version)

    def set_latest_application_version(self, version_name: str) -> None:
        mg.set_latest_version(self._ops(), version_name)

    async def set_latest_application_version_async(self, version_name: str) -> None:
        await asyncio.to_thread(self.set_latest_application_version, version_name)

    # --- async twins of the management calls ---------------------------------------------------------------
    async def cancel_workflow_async(self, workflow_id: str, *, cancel_children: bool = False) -> None:
        await asyncio.to_thread(self.cancel_workflow, workflow_id, cancel_children=cancel_children)

    async def cancel_workflows_async(self, workflow_ids: list[str], *, cancel_children: bool = False) -> None:
        await asyncio.to_thread(self.cancel_workflows, workflow_ids, cancel_children=cancel_children)

    async def resume_workflow_async(
        self, workflow_id: str, *, queue_name: str | None = None
    ) -> ClientHandleAsync[Any]:
        h = await asyncio.to_thread(self.resume_workflow, workflow_id, queue_name=queue_name)
        return ClientHandleAsync(self, h.workflow_id)

    async def resume_workflows_async(
        self, workflow_ids: list[str], *, queue_name: str | None = None
    ) -> list[ClientHandleAsync[Any]]:
        hs = await asyncio.to_thread(self.resume_workflows, workflow_ids, queue_name=queue_name)
        return [ClientHandleAsync(self, h.workflow_id) for h in hs]

    async def fork_workflow_async(
        self, workflow_id: str, start_step: int, **options: Any
    ) -> ClientHandleAsync[Any]:
        pending = take_pending_id()
        wid = await asyncio.to_thread(
            mg.fork, self._ops(), workflow_id, start_step, new_id=pending, **options
        )
        return ClientHandleAsync(self, wid)

    async def delete_workflow_async(self, workflow_id: str, *, delete_children: bool = False) -> None:
        await asyncio.to_thread(self.delete_workflow, workflow_id, delete_children=delete_children)

    async def delete_workflows_async(self, workflow_ids: list[str], *, delete_children: bool = False) -> None:
        await asyncio.to_thread(self.delete_workflows, workflow_ids, delete_children=delete_children)

    async def list_workflows_async(self, **filters: Any) -> WorkflowList:
        return await asyncio.to_thread(lambda: self.list_workflows(**filters))

    async def list_queued_workflows_async(self, **filters: Any) -> WorkflowList:
        return await asyncio.to_thread(lambda: self.list_queued_workflows(**filters))

    async def list_workflow_steps_async(self, workflow_id: str, **options: Any) -> list[StepInfo]:
        return await asyncio.to_thread(lambda: self.list_workflow_steps(workflow_id, **options))

    async def garbage_collect_async(self, cutoff: Any = None, keep_last: int | None = None) -> int:
        return await asyncio.to_thread(self.garbage_collect, cutoff, keep_last)

    async def export_workflow_async(
        self, workflow_id: str, *, include_children: bool = False
    ) -> dict[str, Any]:
        return await asyncio.to_thread(self.export_workflow, workflow_id, include_children=include_children)

    async def import_workflow_async(self, data: dict[str, Any]) -> list[str]:
        return await asyncio.to_thread(self.import_workflow, data)


def _check_options(options: Any) -> dict[str, Any]:
    """Validate an EnqueueOptions dict; returns it with normalized values (02 §9 rule 2, 03 §5)."""
    if not isinstance(options, dict):
        raise DBOSValidationError(f"enqueue options must be a dict (EnqueueOptions), got {show(options)}")
    unknown = sorted(set(options) - _OPTION_KEYS)
    if unknown:
        raise DBOSValidationError(f"unknown enqueue option(s): {', '.join(unknown)}")
    for key in ("workflow_name", "queue_name"):
        if key not in options:
            raise DBOSValidationError(f"enqueue options need {key!r}")
    o: dict[str, Any] = {}
    for key in ("workflow_name", "queue_name", "workflow_id", "app_version", "deduplication_id",
                "queue_partition_key", "class_name", "instance_name"):  # fmt: skip
        if options.get(key) is not None:
            o[key] = check_identifier(options[key], key)
    if options.get("workflow_timeout") is not None:
        o["workflow_timeout"] = check_seconds(options["workflow_timeout"], "workflow_timeout", positive=True)
    if options.get("delay_seconds") is not None:
        o["delay_seconds"] = check_seconds(options["delay_seconds"], "delay_seconds", positive=False)
    o["priority"] = check_priority(options.get("priority"))
    policy = options.get("duplication_policy")
    if policy is not None and policy not in ("return-existing", "reject"):
        raise DBOSValidationError(
            f"duplication_policy must be 'return-existing' or 'reject', got {show(policy)}"
        )
    o["duplication_policy"] = policy
    if options.get("max_recovery_attempts") is not None:
        o["max_recovery_attempts"] = check_count(
            options["max_recovery_attempts"], "max_recovery_attempts", minimum=0
        )
    o["authenticated_user"] = check_user(options.get("authenticated_user"))
    o["authenticated_roles"] = check_roles(
        options.get("authenticated_roles"), "authenticated_roles", allow_none=True
    )
    if o.get("instance_name") is not None and o.get("class_name") is None:
        raise DBOSValidationError(
            "instance_name needs class_name (the configured instance's registered class)"
        )
    return o
