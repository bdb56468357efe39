"""The SQLite backend of the system store (07 §5).

`SQLiteStore` validates text at the boundary, then delegates each op to one transaction of `SQLiteDB`:
`sqlite_workflows` (workflows, steps), `sqlite_queues` (claims, delayed promotion, queue statistics),
`sqlite_defs` (queue definitions and pauses), `sqlite_executors` (liveness), `sqlite_manage` (cancel, resume, fork,
delete, GC selection, leases), `sqlite_messages` (messages and events), `sqlite_streams` (streams), `sqlite_list`
(listings), `sqlite_export` (export and import), `sqlite_migrate` (schema), `sqlite_feed` (cross-process change
detection).
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from . import base, records
from . import comm_checks as cc
from . import manage_common as mc
from . import queue_defs as qd
from . import sqlite_defs as defs
from . import sqlite_executors as ex
from . import sqlite_export as xp
from . import sqlite_list as ls
from . import sqlite_manage as mg
from . import sqlite_messages as ms
from . import sqlite_queues as qs
from . import sqlite_streams as st
from . import sqlite_versions as vs
from . import sqlite_workflows as wf
from .sqlite_conn import SQLiteDB, check_environment, now_ms, path_from_url
from .sqlite_errors import classify_sqlite_error
from .sqlite_feed import ChangeDetector
from .sqlite_migrate import reset_sqlite, run_migrations, schema_state
from .textcheck import check_id, check_name

__all__ = ["SQLiteStore", "classify_sqlite_error", "reset_sqlite"]


# Unlike the PostgreSQL backend so far, SQLite also checks the identity fields of a new workflow, and its messages
# call every related workflow ID (parent, forked-from, child) a "workflow ID".
def _check_new_workflow(new: base.NewWorkflow) -> None:
    records.check_new(new)


def _check_step(step: base.NewStep) -> None:
    records.check_step(step)


class SQLiteStore:
    """`SystemStore` on one SQLite file."""

    backend: Literal["sqlite", "postgres"] = "sqlite"

    def __init__(self, url: str, settings: base.StoreSettings) -> None:
        self.url = url
        self.settings = settings
        self.changes = base.ChangeFeed()
        self.origin = secrets.token_hex(8)
        path = path_from_url(url)
        check_environment(path, settings)
        self._db = SQLiteDB(path, settings, self.changes, self.origin)
        self._pruner = qs.ClaimsPruner()
        self._detector: ChangeDetector | None = None
        if settings.role == "executor":
            self._detector = ChangeDetector(
                lambda: self._db.connect(reader=True),
                self.changes,
                self.origin,
                settings.poll_ceiling_s,
                lambda: self._db.count("feed"),
            )
            self._detector.start()

    # lifecycle -----------------------------------------------------------------------------------------------

    def migrate(self) -> base.MigrationReport:
        return run_migrations(self._db)

    def check_schema(
        self,
    ) -> Literal["current", "missing", "behind", "ahead_compatible", "ahead_incompatible"]:
        return schema_state(self._db)

    def now_ms(self) -> int:
        return now_ms()

    def stats(self) -> base.StoreStats:
        return self._db.stats()

    def close(self, timeout_s: float = 5.0) -> None:
        if self._detector is not None:
            self._detector.stop(timeout_s)
        self._db.close()

    # workflows -----------------------------------------------------------------------------------------------

    def insert_workflow(
        self, new: base.NewWorkflow, *, parent: base.ParentLink | None = None
    ) -> base.InsertResult:
        _check_new_workflow(new)
        if parent is not None:
            records.check_parent(parent)
        return self._db.write(
            "insert_workflow", lambda tx: wf.insert_workflow(tx, new, parent), batchable=True
        )

    def get_workflow(
        self, workflow_id: str, *, load_input: bool = True, load_output: bool = True
    ) -> base.WorkflowRow | None:
        check_id(workflow_id)
        return self._db.read(
            "get_workflow", lambda c: wf.get_workflow(c, workflow_id, load_input, load_output)
        )

    def list_queued(self, queue_name: str | None, *, limit: int | None = None) -> list[base.WorkflowRow]:
        records.check_opt_name(queue_name, "queue name")
        return self._db.read("list_queued", lambda c: wf.list_queued(c, queue_name, limit))

    def get_states(self, workflow_ids: Sequence[str]) -> dict[str, base.WorkflowState]:
        ids = [check_id(w) for w in workflow_ids]
        return self._db.read("get_states", lambda c: wf.get_states(c, ids))

    def record_outcome(self, fence: base.Fence, outcome: base.Outcome) -> base.OutcomeResult:
        records.check_fence(fence)
        records.check_serializer(outcome.output)
        records.check_serializer(outcome.error)
        return self._db.write(
            "record_outcome", lambda tx: wf.record_outcome(tx, fence, outcome), batchable=True
        )

    def list_workflows(self, query: base.WorkflowQuery) -> list[base.WorkflowRow]:
        mc.check_query(query)
        return self._db.read("list_workflows", lambda c: ls.list_workflows(c, query))

    # management ----------------------------------------------------------------------------------------------

    def cancel_workflows(
        self, workflow_ids: Sequence[str], *, cancel_children: bool, reason: base.CancelReason
    ) -> list[str]:
        mc.check_ids(workflow_ids)
        if reason not in ("user", "deadline"):
            raise mc.invalid(f"reason must be 'user' or 'deadline', got {reason!r}")
        if not workflow_ids:
            return []
        ids = list(workflow_ids)
        return self._db.write(
            "cancel_workflows", lambda tx: mg.cancel_workflows(tx, ids, cancel_children, reason)
        )

    def cancel_expired(self, application_name: str | None, *, limit: int = 1000) -> list[str]:
        records.check_opt_name(application_name, "application name")
        mc.check_count(limit, "limit")
        return self._db.write("cancel_expired", lambda tx: mg.cancel_expired(tx, application_name, limit))

    def next_deadline(self, application_name: str | None) -> int | None:
        records.check_opt_name(application_name, "application name")
        return self._db.read("next_deadline", lambda c: mg.next_deadline(c, application_name))

    def resume_workflows(self, workflow_ids: Sequence[str], *, queue_name: str | None) -> base.ResumeResult:
        mc.check_ids(workflow_ids)
        records.check_opt_name(queue_name, "queue name")
        if not workflow_ids:
            return base.ResumeResult(None, [])
        ids = list(workflow_ids)
        return self._db.write("resume_workflows", lambda tx: mg.resume_workflows(tx, ids, queue_name))

    def fork_workflow(self, spec: base.ForkSpec) -> base.InsertResult:
        mc.check_fork(spec)
        check_name(spec.creator_token, "creator token")
        mc.check_opt_count(spec.timeout_ms, "timeout_ms")
        return self._db.write("fork_workflow", lambda tx: mg.fork_workflow(tx, spec))

    def delete_workflows(
        self, workflow_ids: Sequence[str], *, delete_children: bool, only_terminal: bool = False
    ) -> list[str]:
        mc.check_ids(workflow_ids)
        if not workflow_ids:
            return []
        ids = list(workflow_ids)
        return self._db.write(
            "delete_workflows", lambda tx: mg.delete_workflows(tx, ids, delete_children, only_terminal)
        )

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
        return self._db.read(
            "gc_select",
            lambda c: mg.gc_select(c, application_name, cutoff_ms, keep_last, limit),
            snapshot=True,
        )

    def prune_executors(self, before_ms: int) -> int:
        mc.check_opt_time(before_ms, "before_ms")
        return self._db.write("prune_executors", lambda tx: mg.prune_executors(tx, before_ms))

    def export_workflows(self, workflow_ids: Sequence[str], *, include_children: bool) -> base.ExportBundle:
        mc.check_ids(workflow_ids)
        ids = list(workflow_ids)
        return self._db.read(
            "export_workflows", lambda c: xp.export_workflows(c, ids, include_children), snapshot=True
        )

    def import_workflows(self, bundle: base.ExportBundle, *, creator_token: str) -> base.ImportResult:
        mc.check_bundle(bundle)
        mc.check_bundle_values(bundle)
        check_name(creator_token, "creator token")
        return self._db.write("import_workflows", lambda tx: xp.import_workflows(tx, bundle, creator_token))

    def try_maintenance_lease(self, name: str, holder: str, ttl_ms: int) -> bool:
        mc.check_lease(name, holder, ttl_ms)
        return self._db.write(
            "try_maintenance_lease", lambda tx: mg.try_maintenance_lease(tx, name, holder, ttl_ms)
        )

    # steps ---------------------------------------------------------------------------------------------------

    def load_checkpoints(self, workflow_ids: Sequence[str]) -> dict[str, dict[int, base.StepRow]]:
        ids = [check_id(w) for w in workflow_ids]
        return self._db.read("load_checkpoints", lambda c: wf.load_checkpoints(c, ids))

    def record_step(self, fence: base.Fence, step: base.NewStep) -> base.Write:
        records.check_fence(fence)
        _check_step(step)
        return self._db.write(
            "record_step", lambda tx: wf.record_step_on(tx.execute, fence, step, tx.now), batchable=True
        )

    def record_step_in(self, dbapi_conn: Any, fence: base.Fence, step: base.NewStep) -> base.Write:
        records.check_fence(fence)
        _check_step(step)
        cursor = dbapi_conn.cursor()
        try:
            return wf.record_step_on(cursor.execute, fence, step, now_ms())
        except (sqlite3.Error, UnicodeEncodeError) as exc:
            raise classify_sqlite_error(exc, "record_step_in") from exc
        finally:
            cursor.close()

    def list_steps(
        self,
        workflow_id: str,
        *,
        load_output: bool = True,
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[base.StepRow]:
        check_id(workflow_id)
        mc.check_opt_count(limit, "limit")
        mc.check_opt_count(offset, "offset")
        return self._db.read(
            "list_steps", lambda c: ls.list_steps(c, workflow_id, load_output, limit, offset)
        )

    # messages and events ---------------------------------------------------------------------------------------

    def send_messages(
        self,
        msgs: Sequence[base.NewMessage],
        *,
        send_to_forks: bool,
        checkpoint: tuple[base.Fence, base.NewStep] | None,
    ) -> base.SendResult:
        cc.check_send(msgs, checkpoint)
        if checkpoint is None and not msgs:
            return base.SendResult(None, base.Write.APPLIED)
        batch = list(msgs)
        return self._db.write(
            "send_messages",
            lambda tx: ms.send_messages(tx, batch, send_to_forks, checkpoint),
            batchable=len(batch) <= 100,
        )

    def consume_message(self, fence: base.Fence, step: base.NewStep, topic: str | None) -> base.ConsumeResult:
        cc.check_consume(fence, step, topic)
        return self._db.write(
            "consume_message", lambda tx: ms.consume_message(tx, fence, step, topic), batchable=True
        )

    def set_event(
        self,
        fence: base.Fence,
        key: str,
        value: base.Payload,
        *,
        history_step_id: int,
        checkpoint: base.NewStep | None,
    ) -> base.Write:
        cc.check_set_event(fence, key, value, checkpoint)
        return self._db.write(
            "set_event",
            lambda tx: ms.set_event(tx, fence, key, value, history_step_id, checkpoint),
            batchable=True,
        )

    def get_event(self, workflow_id: str, key: str) -> base.EventRead:
        cc.check_event_read(workflow_id, key)
        return self._db.read("get_event", lambda c: ms.get_event(c, workflow_id, key))

    def get_all_events(self, workflow_id: str) -> dict[str, base.Payload]:
        check_id(workflow_id)
        return self._db.read("get_all_events", lambda c: ms.get_all_events(c, workflow_id))

    def write_stream(
        self,
        fence: base.Fence,
        key: str,
        value: base.Payload | None,
        *,
        writer_step_id: int,
        step_seq: int | None,
        checkpoint: base.NewStep | None,
    ) -> base.StreamWrite:
        cc.check_stream_write(fence, key, value, writer_step_id, step_seq, checkpoint)
        return self._db.write(
            "write_stream",
            lambda tx: st.write_stream(tx, fence, key, value, writer_step_id, step_seq, checkpoint),
            batchable=True,
        )

    def read_stream(
        self, workflow_id: str, key: str, *, from_offset: int, limit: int = 1000
    ) -> base.StreamRead:
        cc.check_stream_read(workflow_id, key, from_offset, limit)
        return self._db.read(
            "read_stream", lambda c: st.read_stream(c, workflow_id, key, from_offset, limit), snapshot=True
        )

    # claims --------------------------------------------------------------------------------------------------

    def claim(self, req: base.ClaimRequest) -> base.ClaimResult:
        records.check_claim(req)
        return self._db.write("claim", lambda tx: qs.claim(tx, req, self._pruner))

    def release(self, fences: Sequence[base.Fence], *, refund_attempt: bool) -> list[str]:
        for fence in fences:
            records.check_fence(fence)
        if not fences:
            return []
        return self._db.write("release", lambda tx: qs.release(tx, fences, refund_attempt), batchable=True)

    def promote_delayed(self, *, limit: int = 1000) -> base.PromoteResult:
        # A cheap read first: when nothing is due, the write lock is never taken.
        due = self._db.read("promote_delayed", qs.next_due)
        if due is None or due > now_ms():
            return base.PromoteResult([], due)
        return self._db.write("promote_delayed", lambda tx: qs.promote_delayed(tx, limit))

    def queue_stats(self, queue_name: str | None) -> list[base.QueueStatsRow]:
        records.check_opt_name(queue_name, "queue name")
        return self._db.read("queue_stats", lambda c: qs.queue_stats(c, queue_name), snapshot=True)

    # queue definitions and pauses ------------------------------------------------------------------------------

    def upsert_queue(
        self, name: str, config: str, *, overwrite: bool, application_name: str | None
    ) -> base.QueueDefRow:
        qd.check_queue_name(name)
        qd.check_config(config, self.settings.max_payload_bytes)
        records.check_opt_name(application_name, "application name")
        return self._db.write(
            "upsert_queue", lambda tx: defs.upsert_queue(tx, name, config, overwrite, application_name)
        )

    def update_queue(
        self, name: str, patch: Mapping[str, Any], validate: Callable[[Mapping[str, Any]], None]
    ) -> base.QueueDefRow | None:
        qd.check_queue_name(name)
        limit = self.settings.max_payload_bytes
        return self._db.write("update_queue", lambda tx: defs.update_queue(tx, name, patch, validate, limit))

    def get_queue(self, name: str) -> base.QueueDefRow | None:
        qd.check_queue_name(name)
        return self._db.read("get_queue", lambda c: defs.get_queue(c, name))

    def list_queues(self) -> list[base.QueueDefRow]:
        return self._db.read("list_queues", defs.list_queues)

    def delete_queue(self, name: str) -> bool:
        qd.check_queue_name(name)
        return self._db.write("delete_queue", lambda tx: defs.delete_queue(tx, name))

    def set_queue_paused(self, name: str, paused: bool) -> None:
        qd.check_queue_name(name)
        self._db.write("set_queue_paused", lambda tx: defs.set_queue_paused(tx, name, paused))

    def list_paused_queues(self) -> frozenset[str]:
        return self._db.read("list_paused_queues", defs.list_paused_queues)

    # executors -----------------------------------------------------------------------------------------------

    def register_executor(self, reg: base.ExecutorRegistration) -> base.Registration:
        records.check_registration(reg)
        return self._db.write("register_executor", lambda tx: ex.register(tx, reg))

    def heartbeat(
        self, executor_id: str, incarnation: int, *, queues_json: str | None = None
    ) -> base.Heartbeat:
        check_name(executor_id, "executor ID")
        records.check_queues_json(queues_json)
        return self._db.write(
            "heartbeat", lambda tx: ex.heartbeat(tx, executor_id, incarnation, queues_json), urgent=True
        )

    def find_dead(self, application_name: str | None) -> list[base.DeadCandidate]:
        records.check_opt_name(application_name, "application name")
        return self._db.read("find_dead", lambda c: ex.find_dead(c, application_name, now_ms()))

    def take_over(self, executor_id: str, incarnation: int, *, require_expired: bool) -> list[str]:
        check_name(executor_id, "executor ID")
        return self._db.write(
            "take_over", lambda tx: ex.take_over(tx, executor_id, incarnation, require_expired), urgent=True
        )

    def requeue_orphans(self, application_name: str | None) -> list[str]:
        records.check_opt_name(application_name, "application name")
        return self._db.write("requeue_orphans", lambda tx: ex.requeue_orphans(tx, application_name))

    def mark_stopped(self, executor_id: str, incarnation: int) -> None:
        check_name(executor_id, "executor ID")
        self._db.write("mark_stopped", lambda tx: ex.mark_stopped(tx, executor_id, incarnation), urgent=True)

    def list_executors(self, *, include_inactive: bool) -> list[base.ExecutorRow]:
        return self._db.read("list_executors", lambda c: ex.list_executors(c, include_inactive))

    def list_app_versions(self, application_name: str | None) -> list[base.AppVersionRow]:
        records.check_opt_name(application_name, "application name")
        return self._db.read("list_app_versions", lambda c: vs.list_versions(c, application_name))

    def set_latest_app_version(self, application_name: str | None, version_name: str) -> bool:
        records.check_opt_name(application_name, "application name")
        check_name(version_name, "application version")
        return self._db.write(
            "set_latest_app_version", lambda tx: vs.set_latest(tx, application_name, version_name)
        )
