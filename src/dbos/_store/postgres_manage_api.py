"""PostgresStore's management methods (list, cancel, resume, fork, delete, GC, export/import, leases)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from . import base, records
from . import manage_common as mc
from . import postgres_manage as pm
from . import textcheck as tc
from .postgres_rows import Conn, Row

T = TypeVar("T")


class Plumbing:
    """The PostgresStore internals that its method mixins use (PostgresStore defines them; these stubs only
    give the mixins their types)."""

    _sql: Any

    def _pooled(self, op: str, fn: Callable[[Conn], T]) -> T:
        raise NotImplementedError

    def _publish(self, changes: Sequence[base.Change]) -> None:
        raise NotImplementedError

    def _count(
        self, op: str, *, round_trips: int = 1, commit: bool = False, read: bool = False, calls: int = 1
    ) -> None:
        raise NotImplementedError

    def _one(self, conn: Conn, op: str, query: str, params: dict[str, Any], *, write: bool) -> Row | None:
        raise NotImplementedError

    def _all(self, conn: Conn, op: str, query: str, params: dict[str, Any], *, write: bool) -> list[Row]:
        raise NotImplementedError


class ManageMethods(Plumbing):
    _msql: Any

    def list_workflows(self, query: base.WorkflowQuery) -> list[base.WorkflowRow]:
        mc.check_query(query)
        if self._msql.is_empty(query):
            return []

        def once(conn: Conn) -> list[base.WorkflowRow]:
            rows = pm.list_workflows(conn, self._msql, query)
            self._count("list_workflows", read=True)
            return rows

        return self._pooled("list_workflows", once)

    # management --------------------------------------------------------------------------------------------------

    def cancel_workflows(
        self, workflow_ids: Sequence[str], *, cancel_children: bool, reason: base.CancelReason
    ) -> list[str]:
        mc.check_ids(workflow_ids)
        if reason not in ("user", "deadline"):
            raise mc.invalid(f"reason must be 'user' or 'deadline', got {reason!r}")
        if not workflow_ids:
            return []
        ids = list(dict.fromkeys(workflow_ids))

        def once(conn: Conn) -> tuple[list[str], list[base.Change]]:
            out = pm.cancel_workflows(conn, self._msql, ids, cancel_children, reason)
            self._count("cancel_workflows", commit=True)
            return out

        changed, changes = self._pooled("cancel_workflows", once)
        self._publish(changes)
        return changed

    def cancel_expired(self, application_name: str | None, *, limit: int = 1000) -> list[str]:
        records.check_opt_name(application_name, "application name")
        mc.check_count(limit, "limit")
        if limit == 0:
            return []

        def once(conn: Conn) -> tuple[list[str], list[base.Change]]:
            out = pm.cancel_expired(conn, self._msql, application_name, limit)
            self._count("cancel_expired", commit=True)
            return out

        changed, changes = self._pooled("cancel_expired", once)
        self._publish(changes)
        return changed

    def next_deadline(self, application_name: str | None) -> int | None:
        records.check_opt_name(application_name, "application name")

        def once(conn: Conn) -> int | None:
            out = pm.next_deadline(conn, self._msql, application_name)
            self._count("next_deadline", read=True)
            return out

        return self._pooled("next_deadline", once)

    def resume_workflows(self, workflow_ids: Sequence[str], *, queue_name: str | None) -> base.ResumeResult:
        mc.check_ids(workflow_ids)
        records.check_opt_name(queue_name, "queue name")
        if not workflow_ids:
            return base.ResumeResult(None, [])
        ids = list(workflow_ids)

        def once(conn: Conn) -> tuple[base.ResumeResult, list[base.Change]]:
            out = pm.resume_workflows(conn, self._msql, ids, queue_name)
            self._count("resume_workflows", commit=True)
            return out

        result, changes = self._pooled("resume_workflows", once)
        self._publish(changes)
        return result

    def fork_workflow(self, spec: base.ForkSpec) -> base.InsertResult:
        mc.check_fork(spec)
        tc.check_name(spec.creator_token, "creator token")
        mc.check_opt_count(spec.timeout_ms, "timeout_ms")

        def once(conn: Conn) -> tuple[base.InsertResult, list[base.Change]]:
            out = pm.fork_workflow(conn, self._msql, spec)
            self._count("fork_workflow", commit=True)
            return out

        result, changes = self._pooled("fork_workflow", once)
        self._publish(changes)
        return result

    def delete_workflows(
        self, workflow_ids: Sequence[str], *, delete_children: bool, only_terminal: bool = False
    ) -> list[str]:
        mc.check_ids(workflow_ids)
        if not workflow_ids:
            return []
        ids = list(dict.fromkeys(workflow_ids))

        def once(conn: Conn) -> tuple[list[str], list[base.Change]]:
            out = pm.delete_workflows(conn, self._msql, ids, delete_children, only_terminal)
            self._count("delete_workflows", commit=True)
            return out

        deleted, changes = self._pooled("delete_workflows", once)
        self._publish(changes)
        return deleted

    def gc_select(
        self,
        application_name: str | None,
        *,
        cutoff_ms: int | None,
        keep_last: int | None,
        limit: int = 10_000,
    ) -> list[str]:
        records.check_opt_name(application_name, "application name")
        mc.check_gc(cutoff_ms, keep_last, limit)

        def once(conn: Conn) -> list[str]:
            out = pm.gc_select(conn, self._msql, application_name, cutoff_ms, keep_last, limit)
            self._count("gc_select", read=True)
            return out

        return self._pooled("gc_select", once)

    def prune_executors(self, before_ms: int) -> int:
        mc.check_opt_time(before_ms, "before_ms")

        def once(conn: Conn) -> int:
            out = pm.prune_executors(conn, self._msql, before_ms)
            self._count("prune_executors", commit=True)
            return out

        return self._pooled("prune_executors", once)

    def export_workflows(self, workflow_ids: Sequence[str], *, include_children: bool) -> base.ExportBundle:
        mc.check_ids(workflow_ids)
        ids = list(dict.fromkeys(workflow_ids))

        def once(conn: Conn) -> base.ExportBundle:
            out = pm.export_workflows(conn, self._msql, ids, include_children)
            self._count("export_workflows", read=True)
            return out

        return self._pooled("export_workflows", once)

    def import_workflows(self, bundle: base.ExportBundle, *, creator_token: str) -> base.ImportResult:
        mc.check_bundle(bundle)
        mc.check_bundle_unique(bundle)
        tc.check_name(creator_token, "creator token")
        result, changes = self._pooled(
            "import_workflows",
            lambda conn: pm.import_workflows(conn, self._msql, bundle, creator_token, self._count),
        )
        self._publish(changes)
        return result

    def try_maintenance_lease(self, name: str, holder: str, ttl_ms: int) -> bool:
        mc.check_lease(name, holder, ttl_ms)

        def once(conn: Conn) -> bool:
            out = pm.try_maintenance_lease(conn, self._msql, name, holder, ttl_ms)
            self._count("try_maintenance_lease", commit=True)
            return out

        return self._pooled("try_maintenance_lease", once)
