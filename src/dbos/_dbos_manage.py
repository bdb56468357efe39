"""The `DBOS` facade's management and introspection methods (02 §3-§8, §10, §11). Each is a thin wrapper over
`_management` (shared with `DBOSClient`), checkpointed under its 02 §8 step name when called in a workflow."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from . import _management as mg
from ._handles import PolledHandle, PolledHandleAsync
from ._types import ExecutorInfo, StepInfo, VersionInfo, WorkflowList
from ._validation import check_polling_interval

T = TypeVar("T")


def _engine() -> Any:
    from ._dbos import current_engine

    return current_engine()


def ops_of(engine: Any) -> mg.Ops:
    ops = getattr(engine, "ops", None)
    if ops is None:
        ops = mg.Ops(
            engine.db, engine.serializers, engine.settings.name, engine.app_db, engine.wake_dispatcher
        )
        engine.ops = ops
    return ops


def _sync(api: str, name: str, fn: Callable[[mg.Ops], T]) -> T:
    from ._dbos import refuse_on_loop
    from ._engine.recorded import recorded

    refuse_on_loop(f"DBOS.{api}", f"DBOS.{api}_async")
    engine = _engine()
    ops = ops_of(engine)
    return recorded(engine, name, lambda: fn(ops))


async def _async(name: str, fn: Callable[[mg.Ops], T]) -> T:
    from ._engine.recorded import recorded_async

    engine = _engine()
    ops = ops_of(engine)
    return await recorded_async(engine, name, lambda: fn(ops))


def _handle_ids(handles: Any) -> list[str]:
    if not isinstance(handles, (list, tuple)):
        from .error import DBOSValidationError

        raise DBOSValidationError(f"wait_first needs a list of handles, got {type(handles).__name__}")
    ids = [h.workflow_id for h in handles]
    mg.check_wait_first_ids(ids)
    return ids


class ManagementAPI:
    """Mixed into `DBOS`; every method is a classmethod."""

    # --- cancel / resume / fork / delete -------------------------------------------------------------------
    @classmethod
    def cancel_workflow(cls, workflow_id: str, *, cancel_children: bool = False) -> None:
        cls.cancel_workflows([workflow_id], cancel_children=cancel_children)

    @classmethod
    def cancel_workflows(cls, workflow_ids: list[str], *, cancel_children: bool = False) -> None:
        _sync(
            "cancel_workflows",
            "DBOS.cancelWorkflow",
            lambda o: mg.cancel(o, workflow_ids, cancel_children=cancel_children),
        )

    @classmethod
    async def cancel_workflow_async(cls, workflow_id: str, *, cancel_children: bool = False) -> None:
        await cls.cancel_workflows_async([workflow_id], cancel_children=cancel_children)

    @classmethod
    async def cancel_workflows_async(cls, workflow_ids: list[str], *, cancel_children: bool = False) -> None:
        await _async(
            "DBOS.cancelWorkflow", lambda o: mg.cancel(o, workflow_ids, cancel_children=cancel_children)
        )

    @classmethod
    def resume_workflow(cls, workflow_id: str, *, queue_name: str | None = None) -> PolledHandle[Any]:
        return cls.resume_workflows([workflow_id], queue_name=queue_name)[0]

    @classmethod
    def resume_workflows(
        cls, workflow_ids: list[str], *, queue_name: str | None = None
    ) -> list[PolledHandle[Any]]:
        ids = _sync(
            "resume_workflows",
            "DBOS.resumeWorkflow",
            lambda o: mg.resume(o, workflow_ids, queue_name=queue_name),
        )
        engine = _engine()
        return [PolledHandle(engine, wid) for wid in ids]

    @classmethod
    async def resume_workflow_async(
        cls, workflow_id: str, *, queue_name: str | None = None
    ) -> PolledHandleAsync[Any]:
        return (await cls.resume_workflows_async([workflow_id], queue_name=queue_name))[0]

    @classmethod
    async def resume_workflows_async(
        cls, workflow_ids: list[str], *, queue_name: str | None = None
    ) -> list[PolledHandleAsync[Any]]:
        ids = await _async("DBOS.resumeWorkflow", lambda o: mg.resume(o, workflow_ids, queue_name=queue_name))
        engine = _engine()
        return [PolledHandleAsync(engine, wid) for wid in ids]

    @classmethod
    def fork_workflow(cls, workflow_id: str, start_step: int, **options: Any) -> PolledHandle[Any]:
        wid = _sync(
            "fork_workflow", "DBOS.forkWorkflow", lambda o: mg.fork(o, workflow_id, start_step, **options)
        )
        return PolledHandle(_engine(), wid)

    @classmethod
    async def fork_workflow_async(
        cls, workflow_id: str, start_step: int, **options: Any
    ) -> PolledHandleAsync[Any]:
        from ._context import take_pending_id

        pending = take_pending_id()  # the I/O thread that runs the fork does not see this context
        wid = await _async(
            "DBOS.forkWorkflow", lambda o: mg.fork(o, workflow_id, start_step, new_id=pending, **options)
        )
        return PolledHandleAsync(_engine(), wid)

    @classmethod
    def delete_workflow(cls, workflow_id: str, *, delete_children: bool = False) -> None:
        cls.delete_workflows([workflow_id], delete_children=delete_children)

    @classmethod
    def delete_workflows(cls, workflow_ids: list[str], *, delete_children: bool = False) -> None:
        _sync(
            "delete_workflows",
            "DBOS.deleteWorkflow",
            lambda o: mg.delete(o, workflow_ids, delete_children=delete_children),
        )

    @classmethod
    async def delete_workflow_async(cls, workflow_id: str, *, delete_children: bool = False) -> None:
        await cls.delete_workflows_async([workflow_id], delete_children=delete_children)

    @classmethod
    async def delete_workflows_async(cls, workflow_ids: list[str], *, delete_children: bool = False) -> None:
        await _async(
            "DBOS.deleteWorkflow", lambda o: mg.delete(o, workflow_ids, delete_children=delete_children)
        )

    # --- introspection -------------------------------------------------------------------------------------
    @classmethod
    def list_workflows(cls, **filters: Any) -> WorkflowList:
        return _sync("list_workflows", "DBOS.listWorkflows", lambda o: mg.list_workflows(o, **filters))

    @classmethod
    async def list_workflows_async(cls, **filters: Any) -> WorkflowList:
        return await _async("DBOS.listWorkflows", lambda o: mg.list_workflows(o, **filters))

    @classmethod
    def list_queued_workflows(cls, **filters: Any) -> WorkflowList:
        return _sync(
            "list_queued_workflows",
            "DBOS.listQueuedWorkflows",
            lambda o: mg.list_workflows(o, queues_only=True, **filters),
        )

    @classmethod
    async def list_queued_workflows_async(cls, **filters: Any) -> WorkflowList:
        return await _async(
            "DBOS.listQueuedWorkflows", lambda o: mg.list_workflows(o, queues_only=True, **filters)
        )

    @classmethod
    def list_workflow_steps(cls, workflow_id: str, **options: Any) -> list[StepInfo]:
        return _sync(
            "list_workflow_steps",
            "DBOS.listWorkflowSteps",
            lambda o: mg.list_steps(o, workflow_id, **options),
        )

    @classmethod
    async def list_workflow_steps_async(cls, workflow_id: str, **options: Any) -> list[StepInfo]:
        return await _async("DBOS.listWorkflowSteps", lambda o: mg.list_steps(o, workflow_id, **options))

    @classmethod
    def wait_first(cls, handles: list[Any], *, polling_interval_sec: float = 1.0) -> Any:
        from ._dbos import refuse_on_loop
        from ._engine.wait_first import wait_first_id

        refuse_on_loop("DBOS.wait_first", "DBOS.wait_first_async")
        ids = _handle_ids(handles)
        wid = wait_first_id(_engine(), ids, check_polling_interval(polling_interval_sec))
        return handles[ids.index(wid)]

    @classmethod
    async def wait_first_async(cls, handles: list[Any], *, polling_interval_sec: float = 1.0) -> Any:
        from ._engine.wait_first import wait_first_id_async

        ids = _handle_ids(handles)
        wid = await wait_first_id_async(_engine(), ids, check_polling_interval(polling_interval_sec))
        return handles[ids.index(wid)]

    @classmethod
    def list_executors(cls, *, include_inactive: bool = False) -> list[ExecutorInfo]:
        return _sync(
            "list_executors",
            "DBOS.listExecutors",
            lambda o: mg.list_executors(o, include_inactive=include_inactive),
        )

    @classmethod
    async def list_executors_async(cls, *, include_inactive: bool = False) -> list[ExecutorInfo]:
        return await _async(
            "DBOS.listExecutors", lambda o: mg.list_executors(o, include_inactive=include_inactive)
        )

    # --- application versions (05 §7) -----------------------------------------------------------------------
    @classmethod
    def list_application_versions(cls) -> list[VersionInfo]:
        return _sync("list_application_versions", "DBOS.listApplicationVersions", mg.list_versions)

    @classmethod
    async def list_application_versions_async(cls) -> list[VersionInfo]:
        return await _async("DBOS.listApplicationVersions", mg.list_versions)

    @classmethod
    def get_latest_application_version(cls) -> VersionInfo:
        return _sync("get_latest_application_version", "DBOS.getLatestApplicationVersion", mg.latest_version)

    @classmethod
    async def get_latest_application_version_async(cls) -> VersionInfo:
        return await _async("DBOS.getLatestApplicationVersion", mg.latest_version)

    @classmethod
    def set_latest_application_version(cls, version_name: str) -> None:
        _sync(
            "set_latest_application_version",
            "DBOS.setLatestApplicationVersion",
            lambda o: mg.set_latest_version(o, version_name),
        )

    @classmethod
    async def set_latest_application_version_async(cls, version_name: str) -> None:
        await _async("DBOS.setLatestApplicationVersion", lambda o: mg.set_latest_version(o, version_name))

    # --- retention, export and import ----------------------------------------------------------------------
    @classmethod
    def garbage_collect(cls, cutoff: Any = None, keep_last: int | None = None) -> int:
        return _sync(
            "garbage_collect", "DBOS.garbageCollect", lambda o: mg.garbage_collect(o, cutoff, keep_last)
        )

    @classmethod
    async def garbage_collect_async(cls, cutoff: Any = None, keep_last: int | None = None) -> int:
        return await _async("DBOS.garbageCollect", lambda o: mg.garbage_collect(o, cutoff, keep_last))

    @classmethod
    def export_workflow(cls, workflow_id: str, *, include_children: bool = False) -> dict[str, Any]:
        return _sync(
            "export_workflow",
            "DBOS.exportWorkflow",
            lambda o: mg.export_workflow(o, workflow_id, include_children=include_children),
        )

    @classmethod
    async def export_workflow_async(
        cls, workflow_id: str, *, include_children: bool = False
    ) -> dict[str, Any]:
        return await _async(
            "DBOS.exportWorkflow",
            lambda o: mg.export_workflow(o, workflow_id, include_children=include_children),
        )

    @classmethod
    def import_workflow(cls, data: dict[str, Any]) -> list[str]:
        return _sync("import_workflow", "DBOS.importWorkflow", lambda o: mg.import_workflow(o, data))

    @classmethod
    async def import_workflow_async(cls, data: dict[str, Any]) -> list[str]:
        return await _async("DBOS.importWorkflow", lambda o: mg.import_workflow(o, data))
