"""Workflow management and introspection (02 §3-§7, §10, §11): one implementation behind `DBOS`, `DBOSClient`,
the CLI and the dashboard. Everything here takes `Ops` (a store, serializers, an application scope) and never
an engine, so the client can use it without launching anything. Checkpointing inside workflows is the
facade's job (`_engine/recorded.py`)."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from ._context import take_pending_id
from ._handles import status_from_row
from ._serialization import SerializerSet
from ._store.base import TERMINAL_STATUSES, AppVersionRow, ForkSpec, StepRow, SystemStore, WorkflowQuery
from ._types import ExecutorInfo, StepInfo, VersionInfo, WorkflowList, WorkflowStatusString
from ._validation import check_count, check_id_list, check_identifier, check_seconds, show
from .error import (
    DBOSConflictingWorkflowError,
    DBOSException,
    DBOSNonExistentWorkflowError,
    DBOSValidationError,
)

_log = logging.getLogger("dbos")
EXPORT_FORMAT = "dbos-workflow-export"
EXPORT_VERSION = 1
GC_BATCH = 10_000
_DAY_MS = 86_400_000
STATUS_NAMES = frozenset(s.value for s in WorkflowStatusString)


@dataclass
class Ops:
    """What management needs: the store, the serializers that read payloads, the GC scope, the app database."""

    db: SystemStore
    serializers: SerializerSet
    application_name: str | None = None  # GC scope (None: every row)
    app_db: Any = None  # AppDatabase with `delete_outputs`, or None
    on_enqueue: Callable[[], None] | None = None  # wake the local dispatcher after a resume or fork


# --- cancel, resume, fork, delete ---------------------------------------------------------------------------


def cancel(ops: Ops, workflow_ids: Sequence[str], *, cancel_children: bool = False) -> list[str]:
    ids = check_id_list(workflow_ids, "workflow_ids")
    return ops.db.cancel_workflows(ids, cancel_children=bool(cancel_children), reason="user")


def _queue_arg(queue_name: Any) -> str | None:
    return None if queue_name is None else check_identifier(queue_name, "queue_name")


def resume(ops: Ops, workflow_ids: Sequence[str], *, queue_name: str | None = None) -> list[str]:
    ids = check_id_list(workflow_ids, "workflow_ids")
    result = ops.db.resume_workflows(ids, queue_name=_queue_arg(queue_name))
    if result.missing is not None:
        raise DBOSNonExistentWorkflowError(result.missing)
    if result.resumed and ops.on_enqueue is not None:
        ops.on_enqueue()
    return ids


def _replacements(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DBOSValidationError(f"replacement_children must be a dict of workflow IDs, got {show(value)}")
    return {
        check_identifier(k, "replacement_children key"): check_identifier(v, f"replacement_children[{k!r}]")
        for k, v in value.items()
    }


def fork(
    ops: Ops,
    workflow_id: str,
    start_step: int,
    *,
    application_version: str | None = None,
    queue_name: str | None = None,
    queue_partition_key: str | None = None,
    replacement_children: dict[str, str] | None = None,
    timeout_seconds: float | None = None,
    new_id: str | None = None,
) -> str:
    """Fork `workflow_id` from `start_step`; the new ID is `new_id`, else the pending SetWorkflowID ID."""
    source = check_identifier(workflow_id, "workflow_id")
    if isinstance(start_step, bool) or not isinstance(start_step, int) or start_step < 1:
        raise DBOSValidationError(f"start_step must be an int >= 1, got {show(start_step)}")
    timeout = check_seconds(timeout_seconds, "timeout_seconds", positive=True, allow_none=True)
    spec = ForkSpec(
        source_id=source,
        new_id=new_id or take_pending_id() or str(uuid.uuid4()),
        start_step=start_step,
        creator_token=secrets.token_hex(16),
        application_version=(
            None
            if application_version is None
            else check_identifier(application_version, "application_version")
        ),
        queue_name=_queue_arg(queue_name),
        partition_key=(
            None
            if queue_partition_key is None
            else check_identifier(queue_partition_key, "queue_partition_key")
        ),
        replacement_children=_replacements(replacement_children),
        timeout_ms=None if timeout is None else int(math.ceil(timeout * 1000)),
    )
    res = ops.db.fork_workflow(spec)
    if res.kind == "source_missing":
        raise DBOSNonExistentWorkflowError(source)
    if res.kind == "id_conflict":
        raise DBOSConflictingWorkflowError(
            spec.new_id,
            f"Workflow ID {spec.new_id} is already used by a workflow that is not a fork of {source}",
        )
    if res.kind == "created" and ops.on_enqueue is not None:
        ops.on_enqueue()
    return spec.new_id


def delete(ops: Ops, workflow_ids: Sequence[str], *, delete_children: bool = False) -> list[str]:
    ids = check_id_list(workflow_ids, "workflow_ids")
    deleted = ops.db.delete_workflows(ids, delete_children=bool(delete_children))
    if ops.app_db is not None:
        ops.app_db.delete_outputs(deleted)
    return deleted


# --- list_workflows -----------------------------------------------------------------------------------------


def _texts(value: Any, what: str) -> list[str] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise DBOSValidationError(f"{what} must be a string or a list of strings, got {show(value)}")
    return [check_identifier(v, f"{what}[{i}]") for i, v in enumerate(items)]


def _statuses(value: Any) -> list[str] | None:
    items = _texts_raw(value, "status")
    if items is None:
        return None
    out = []
    for v in items:
        name = v.value if isinstance(v, WorkflowStatusString) else v
        if name not in STATUS_NAMES:
            raise DBOSValidationError(
                f"status {show(v)} is not a workflow status (one of {', '.join(sorted(STATUS_NAMES))})"
            )
        out.append(str(name))
    return out


def _texts_raw(value: Any, what: str) -> list[Any] | None:
    if value is None:
        return None
    if isinstance(value, (str, WorkflowStatusString)):
        return [value]
    if not isinstance(value, (list, tuple)):
        raise DBOSValidationError(f"{what} must be a string or a list of strings, got {show(value)}")
    return list(value)


def _prefixes(value: Any) -> list[str] | None:
    items = _texts_raw(value, "workflow_id_prefix")
    if items is None:
        return None
    for i, v in enumerate(items):
        if not isinstance(v, str):
            raise DBOSValidationError(f"workflow_id_prefix[{i}] must be a string, got {show(v)}")
    return [str(v) for v in items]


def epoch_ms(value: Any, what: str) -> int | None:
    """An aware datetime, a naive one (UTC) or an ISO-8601 string (naive = UTC) as epoch milliseconds."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise DBOSValidationError(f"{what} is not an ISO-8601 time: {show(value)}") from None
    if not isinstance(value, datetime):
        raise DBOSValidationError(f"{what} must be a datetime or an ISO-8601 string, got {show(value)}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return int(math.floor(value.timestamp() * 1000))


def _opt_bool(value: Any, what: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise DBOSValidationError(f"{what} must be a bool or None, got {show(value)}")
    return value


def build_query(*, queues_only: bool = False, **kw: Any) -> tuple[WorkflowQuery, dict[str, Any]]:
    """The store query for the keywords of `list_workflows`, and its canonical filter form (for cursors)."""
    known = {
        "workflow_ids", "status", "start_time", "end_time", "completed_after", "completed_before",
        "dequeued_after", "dequeued_before", "name", "app_version", "user", "queue_name", "executor_id",
        "forked_from", "parent_workflow_id", "workflow_id_prefix", "was_forked_from", "has_parent",
        "application_name", "schedule_name", "limit", "offset", "cursor", "sort_desc", "load_input",
        "load_output",
    }  # fmt: skip
    unknown = sorted(set(kw) - known)
    if unknown:
        raise DBOSValidationError(f"unknown list_workflows filter(s): {', '.join(unknown)}")
    ids = kw.get("workflow_ids")
    workflow_ids = None if ids is None else check_id_list(ids, "workflow_ids")
    statuses = _statuses(kw.get("status"))
    if queues_only and statuses is None:
        statuses = ["ENQUEUED", "PENDING", "DELAYED"]
    filters: dict[str, Any] = {
        "workflow_ids": workflow_ids,
        "statuses": statuses,
        "created_from": epoch_ms(kw.get("start_time"), "start_time"),
        "created_to": epoch_ms(kw.get("end_time"), "end_time"),
        "completed_from": epoch_ms(kw.get("completed_after"), "completed_after"),
        "completed_to": epoch_ms(kw.get("completed_before"), "completed_before"),
        "dequeued_from": epoch_ms(kw.get("dequeued_after"), "dequeued_after"),
        "dequeued_to": epoch_ms(kw.get("dequeued_before"), "dequeued_before"),
        "names": _texts(kw.get("name"), "name"),
        "app_versions": _texts(kw.get("app_version"), "app_version"),
        "users": _texts(kw.get("user"), "user"),
        "queue_names": _texts(kw.get("queue_name"), "queue_name"),
        "executor_ids": _texts(kw.get("executor_id"), "executor_id"),
        "forked_from": _texts(kw.get("forked_from"), "forked_from"),
        "parent_workflow_ids": _texts(kw.get("parent_workflow_id"), "parent_workflow_id"),
        "id_prefixes": _prefixes(kw.get("workflow_id_prefix")),
        "application_names": _texts(kw.get("application_name"), "application_name"),
        "schedule_names": _texts(kw.get("schedule_name"), "schedule_name"),
        "was_forked_from": _opt_bool(kw.get("was_forked_from"), "was_forked_from"),
        "has_parent": _opt_bool(kw.get("has_parent"), "has_parent"),
        "queues_only": bool(queues_only),
    }
    sort_desc = _opt_bool(kw.get("sort_desc", False), "sort_desc") or False
    limit = check_count(kw.get("limit"), "limit", minimum=0, allow_none=True)
    offset = check_count(kw.get("offset"), "offset", minimum=0, allow_none=True)
    cursor = kw.get("cursor")
    fingerprint = {**filters, "sort_desc": sort_desc}
    after = None
    if cursor is not None:
        if offset is not None:
            raise DBOSValidationError("cursor and offset cannot be used together")
        after = decode_cursor(cursor, fingerprint)
    query = WorkflowQuery(
        **filters,
        limit=None if limit is None else limit + 1,  # one more row tells whether a next page exists
        offset=offset,
        after=after,
        sort_desc=sort_desc,
        load_input=bool(kw.get("load_input", True)),
        load_output=bool(kw.get("load_output", True)),
    )
    return query, fingerprint


def _fingerprint_digest(fingerprint: dict[str, Any]) -> str:
    from ._store.base import digest

    return digest(json.dumps(fingerprint, sort_keys=True, separators=(",", ":")))


def encode_cursor(fingerprint: dict[str, Any], created_at: int, workflow_id: str) -> str:
    body = {"f": _fingerprint_digest(fingerprint), "a": [created_at, workflow_id]}
    text = json.dumps(body, separators=(",", ":"), sort_keys=True)
    from ._store.base import digest

    raw = json.dumps({"b": text, "h": digest("cursor", text)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: Any, fingerprint: dict[str, Any]) -> tuple[int, str]:
    from ._store.base import digest

    bad = DBOSValidationError(f"cursor {show(cursor)} is not a cursor returned by list_workflows")
    if not isinstance(cursor, str):
        raise bad
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode())
        text = raw["b"]
        if raw["h"] != digest("cursor", text):
            raise bad
        body = json.loads(text)
        created_at, wid = body["a"]
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise bad from None
    if body.get("f") != _fingerprint_digest(fingerprint):
        raise DBOSValidationError("cursor was made under different filters or sort order")
    if not isinstance(created_at, int) or not isinstance(wid, str):
        raise bad
    return created_at, wid


def list_workflows(ops: Ops, *, queues_only: bool = False, **kw: Any) -> WorkflowList:
    query, fingerprint = build_query(queues_only=queues_only, **kw)
    rows = ops.db.list_workflows(query)
    limit = None if query.limit is None else query.limit - 1
    more = limit is not None and len(rows) > limit
    if more:
        rows = rows[:limit]
    out = WorkflowList(status_from_row(ops, r) for r in rows)
    if more and rows:
        out.next_cursor = encode_cursor(fingerprint, rows[-1].created_at, rows[-1].workflow_id)
    return out


# --- steps --------------------------------------------------------------------------------------------------


def _safe_value(ops: Ops, what: str, fn: Callable[[], Any], raw: str) -> Any:
    try:
        return fn()
    except Exception:
        _log.warning("could not deserialize the %s; returning the stored text", what)
        return raw


def step_info(ops: Ops, row: StepRow) -> StepInfo:
    s = ops.serializers
    output: Any = None
    error: Any = None
    if row.output is not None:
        out = row.output
        output = _safe_value(ops, f"output of step {row.step_id}", lambda: s.deserialize_value(out), out.text)
    if row.error is not None:
        err = row.error
        error = _safe_value(ops, f"error of step {row.step_id}", lambda: s.deserialize_error(err), err.text)
    return StepInfo(
        function_id=row.step_id,
        function_name=row.name,
        output=output,
        error=error,
        child_workflow_id=row.child_workflow_id,
        started_at_epoch_ms=row.started_at,
        completed_at_epoch_ms=row.completed_at,
    )


def list_steps(
    ops: Ops,
    workflow_id: str,
    *,
    load_output: bool = True,
    limit: int | None = None,
    offset: int | None = None,
) -> list[StepInfo]:
    wid = check_identifier(workflow_id, "workflow_id")
    lim = check_count(limit, "limit", minimum=0, allow_none=True)
    off = check_count(offset, "offset", minimum=0, allow_none=True)
    rows = ops.db.list_steps(wid, load_output=bool(load_output), limit=lim, offset=off)
    return [step_info(ops, r) for r in rows]


# --- garbage collection -------------------------------------------------------------------------------------


def _cutoff_ms(ops: Ops, cutoff: Any) -> int | None:
    if cutoff is None:
        return None
    if isinstance(cutoff, timedelta):
        return ops.db.now_ms() - int(cutoff.total_seconds() * 1000)
    if isinstance(cutoff, datetime):
        return epoch_ms(cutoff, "cutoff")
    raise DBOSValidationError(f"cutoff must be a datetime or a timedelta, got {show(cutoff)}")


def garbage_collect(ops: Ops, cutoff: Any = None, keep_last: Any = None) -> int:
    """Delete whole trees of old terminal workflows (02 §10); returns the number of workflows deleted."""
    if cutoff is None and keep_last is None:
        raise DBOSValidationError("garbage_collect needs cutoff or keep_last")
    keep = check_count(keep_last, "keep_last", minimum=0, allow_none=True)
    cutoff_ms = _cutoff_ms(ops, cutoff)
    total = 0
    while True:
        roots = ops.db.gc_select(ops.application_name, cutoff_ms=cutoff_ms, keep_last=keep, limit=GC_BATCH)
        if not roots:
            break
        deleted = ops.db.delete_workflows(roots, delete_children=True, only_terminal=True)
        if ops.app_db is not None:
            ops.app_db.delete_outputs(deleted)
        total += len(deleted)
        if not deleted:
            break  # every selected tree stopped qualifying; the next scan would select the same nothing
    ops.db.prune_executors(cutoff_ms if cutoff_ms is not None else ops.db.now_ms() - _DAY_MS)
    return total


# --- export and import --------------------------------------------------------------------------------------


def export_workflow(ops: Ops, workflow_id: str, *, include_children: bool = False) -> dict[str, Any]:
    wid = check_identifier(workflow_id, "workflow_id")
    bundle = ops.db.export_workflows([wid], include_children=bool(include_children))
    if not bundle:
        raise DBOSNonExistentWorkflowError(wid)
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "exported_at": ops.db.now_ms(),
        "workflows": bundle,
    }


def import_workflow(ops: Ops, data: Any) -> list[str]:
    if not isinstance(data, dict):
        raise DBOSValidationError(f"import_workflow needs an export dict, got {show(data)}")
    if data.get("format") != EXPORT_FORMAT:
        raise DBOSValidationError(
            f"unknown export format {show(data.get('format'))} (expected {EXPORT_FORMAT!r})"
        )
    if data.get("version") != EXPORT_VERSION:
        raise DBOSValidationError(f"unsupported export version {show(data.get('version'))}")
    workflows = data.get("workflows")
    if not isinstance(workflows, list):
        raise DBOSValidationError("the export has no 'workflows' list")
    res = ops.db.import_workflows(workflows, creator_token=secrets.token_hex(16))
    if res.kind != "created":
        conflict = res.conflict_id or "?"
        what = "ID" if res.kind == "id_conflict" else "deduplication ID"
        raise DBOSConflictingWorkflowError(
            conflict, f"cannot import: the {what} of workflow {conflict} exists"
        )
    if ops.on_enqueue is not None:
        ops.on_enqueue()
    return res.workflow_ids


# --- executors ----------------------------------------------------------------------------------------------


def published_queues(text: str) -> dict[str, dict[str, Any]]:
    """The queues an executor record publishes (queue name -> declared configuration); unreadable means none."""
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(k): v if isinstance(v, dict) else {} for k, v in value.items()}


def list_executors(ops: Ops, *, include_inactive: bool = False) -> list[ExecutorInfo]:
    rows = ops.db.list_executors(include_inactive=bool(include_inactive))
    rows.sort(key=lambda r: (r.executor_id, r.incarnation))
    return [
        ExecutorInfo(
            executor_id=r.executor_id,
            incarnation=r.incarnation,
            application_name=r.application_name,
            application_version=r.application_version,
            hostname=r.hostname,
            pid=r.pid,
            state=r.state,
            started_at=r.started_at,
            last_heartbeat_at=r.last_heartbeat_at,
            lease_expires_at=r.lease_expires_at,
            queues=published_queues(r.queues),
        )
        for r in rows
    ]


# --- application versions (05 §7) ----------------------------------------------------------------------------


def _version_info(v: AppVersionRow) -> VersionInfo:
    return VersionInfo(
        version_id=v.version_id,
        version_name=v.version_name,
        version_timestamp=v.version_timestamp,
        created_at=v.created_at,
    )


def list_versions(ops: Ops) -> list[VersionInfo]:
    """The application's registered versions, newest first."""
    return [_version_info(v) for v in ops.db.list_app_versions(ops.application_name)]


def latest_version(ops: Ops) -> VersionInfo:
    versions = ops.db.list_app_versions(ops.application_name)
    if not versions:
        raise DBOSException(f"application {ops.application_name!r} has no registered version")
    return _version_info(versions[0])


def set_latest_version(ops: Ops, version_name: Any) -> None:
    if not isinstance(version_name, str) or not version_name.strip():
        raise DBOSValidationError(f"version_name must be a non-empty string, got {version_name!r}")
    if not ops.db.set_latest_app_version(ops.application_name, version_name):
        raise DBOSException(
            f"unknown application version {version_name!r} of application {ops.application_name!r}"
        )


def runs_latest_version(db: SystemStore, application_name: str | None, version: str | None) -> bool:
    """Whether `version` is the application's latest registered version (none registered: it counts as latest)."""
    versions = db.list_app_versions(application_name)
    return not versions or versions[0].version_name == version


# --- wait_first ---------------------------------------------------------------------------------------------


def first_terminal(db: SystemStore, ids: Sequence[str]) -> str | None:
    """The first of `ids` to have finished: smallest completed_at, ties in list order; None if none has."""
    states = db.get_states(ids)
    best: tuple[int, int, str] | None = None
    for i, wid in enumerate(ids):
        st = states.get(wid)
        if st is None or not st.exists or st.status not in TERMINAL_STATUSES:
            continue
        key = (st.completed_at or 0, i, wid)
        if best is None or key < best:
            best = key
    return None if best is None else best[2]


def check_wait_first_ids(ids: Sequence[str]) -> None:
    if not ids:
        raise DBOSValidationError("wait_first needs at least one handle")
    dup = next((w for i, w in enumerate(ids) if w in ids[:i]), None)
    if dup is not None:
        raise DBOSValidationError(f"wait_first got workflow {dup!r} twice")
