"""Dialect-free pieces of the management operations (02 §3-§11): export column lists, row normalization,
argument checks. Both backends use these so their bundles and refusals are identical."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from . import base, records
from . import textcheck as tc

ACTIVE_STATUSES = ("PENDING", "ENQUEUED", "DELAYED")
CANCELLABLE_STATUSES = ("PENDING", "ENQUEUED", "DELAYED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED")
RESUMABLE_STATUSES = ("CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED", "ENQUEUED", "DELAYED")

# Logical column names per exported table, in export order. `seq` and the owning workflow id are omitted.
EXPORT_COLUMNS: dict[str, tuple[str, ...]] = {
    "workflows": (
        "workflow_id", "status", "name", "class_name", "config_name", "inputs", "receiver", "inputs_serializer",
        "output", "error", "outcome_serializer", "cancel_reason", "application_name", "application_version",
        "app_id", "authenticated_user", "authenticated_roles", "assumed_role", "queue_name", "dedup_queue",
        "deduplication_id", "priority", "partition_key", "delay_until", "timeout_ms", "deadline_ms",
        "executor_id", "incarnation", "claim_token", "claim_batch", "recovery_attempts", "max_recovery_attempts",
        "parent_workflow_id", "forked_from", "was_forked_from", "steps_seeded", "schedule_name",
        "debounce_digest", "debounce_deadline_ms", "attributes", "creator_token", "created_at", "updated_at",
        "dequeued_at", "completed_at",
    ),
    "steps": (
        "step_id", "name", "output", "error", "serializer", "child_workflow_id", "started_at", "completed_at",
        "write_token",
    ),
    "messages": (
        "message_id", "topic", "topic_digest", "payload", "serializer", "consumed", "consumed_at", "created_at",
    ),
    "events": ("key", "key_digest", "value", "serializer", "updated_at"),
    "event_history": ("step_id", "key", "key_digest", "value", "serializer", "created_at"),
    "streams": (
        "key", "key_digest", "stream_offset", "value", "serializer", "is_end", "writer_step_id", "step_seq",
        "created_at",
    ),
}  # fmt: skip
BOOL_COLUMNS = frozenset({"was_forked_from", "steps_seeded", "consumed", "is_end"})
JSON_COLUMNS = frozenset({"authenticated_roles", "attributes"})
# Child tables, their workflow-id column and their order in an export entry.
CHILD_TABLES: dict[str, str] = {
    "steps": "workflow_id",
    "events": "workflow_id",
    "event_history": "workflow_id",
    "streams": "workflow_id",
    "messages": "destination_id",
}
CHILD_ORDER: dict[str, tuple[str, ...]] = {
    "steps": ("step_id",),
    "events": ("key_digest",),
    "event_history": ("step_id", "key_digest"),
    "streams": ("key_digest", "stream_offset"),
    "messages": ("seq",),
}


def export_value(column: str, value: Any) -> Any:
    """A stored column value as it appears in an export (bools as bool, JSON text parsed)."""
    if value is None:
        return None
    if column in BOOL_COLUMNS:
        return bool(value)
    if column in JSON_COLUMNS:
        return json.loads(value) if isinstance(value, str) else value
    return value


def export_row(table: str, row: Mapping[str, Any]) -> dict[str, Any]:
    return {c: export_value(c, row[c]) for c in EXPORT_COLUMNS[table]}


def import_value(column: str, value: Any) -> Any:
    """An exported value as bound for storage (bools as 0/1 ints work on both backends via the caller)."""
    if value is None:
        return None
    if column in JSON_COLUMNS:
        return json.dumps(value, separators=(",", ":"))
    return value


def export_entry(
    status: Mapping[str, Any], children: Mapping[str, Iterable[Mapping[str, Any]]]
) -> dict[str, Any]:
    entry: dict[str, Any] = {"status": export_row("workflows", status)}
    for table in ("steps", "events", "event_history", "streams", "messages"):
        entry[table] = [export_row(table, r) for r in children.get(table, ())]
    return entry


def invalid(message: str) -> Exception:
    return tc._validation_error(message)


def check_ids(workflow_ids: Sequence[str], what: str = "workflow_ids") -> None:
    if isinstance(workflow_ids, str) or not isinstance(workflow_ids, Sequence):
        raise invalid(f"{what} must be a list of workflow IDs, got {workflow_ids!r}")
    for wid in workflow_ids:
        tc.check_id(wid)


def check_fork(spec: base.ForkSpec) -> None:
    tc.check_id(spec.source_id)
    tc.check_id(spec.new_id)
    records.check_opt_name(spec.queue_name, "queue_name")
    records.check_opt_name(spec.partition_key, "queue_partition_key")
    records.check_opt_name(spec.application_version, "application_version")
    for old, new in spec.replacement_children.items():
        tc.check_id(old, "replacement_children key")
        tc.check_id(new, "replacement_children value")
    if isinstance(spec.start_step, bool) or not isinstance(spec.start_step, int) or spec.start_step < 1:
        raise invalid(f"start_step must be an int >= 1, got {spec.start_step!r}")


def check_bundle(bundle: base.ExportBundle) -> None:
    """Every entry has a status with every workflow column and the five child lists."""
    for i, entry in enumerate(bundle):
        status = entry.get("status") if isinstance(entry, Mapping) else None
        if not isinstance(status, Mapping):
            raise invalid(f"export entry {i} has no status")
        missing = [c for c in EXPORT_COLUMNS["workflows"] if c not in status]
        if missing:
            raise invalid(f"export entry {i} lacks {', '.join(missing)}")
        for table in CHILD_TABLES:
            rows = entry.get(table)
            if not isinstance(rows, list):
                raise invalid(f"export entry {i} has no {table} list")
            for r in rows:
                lacking = [c for c in EXPORT_COLUMNS[table] if not isinstance(r, Mapping) or c not in r]
                if lacking:
                    raise invalid(f"export entry {i}: a {table} row lacks {', '.join(lacking)}")
        for text_col in ("workflow_id", "name", "inputs", "inputs_serializer", "status"):
            if not isinstance(status[text_col], str):
                raise invalid(f"export entry {i}: {text_col} must be a string")
        tc.check_id(status["workflow_id"])


def imported_status(status: Mapping[str, Any]) -> dict[str, Any]:
    """The workflow row to insert: PENDING becomes ENQUEUED on its own queue (else internal) with no owner."""
    row = {c: import_value(c, status[c]) for c in EXPORT_COLUMNS["workflows"]}
    if row["status"] == "PENDING":
        row.update(
            status="ENQUEUED",
            queue_name=row["queue_name"] or base.INTERNAL_QUEUE,
            executor_id=None,
            incarnation=None,
            claim_token=None,
            claim_batch=None,
        )
    row["steps_seeded"] = True
    return row


def gc_batches(trees: Sequence[tuple[str, int]], limit: int) -> list[str]:
    """Roots (in the given order) whose tree sizes sum to at most `limit`; a first tree larger than `limit`
    forms a batch of its own."""
    chosen: list[str] = []
    total = 0
    for root, size in trees:
        if chosen and total + size > limit:
            break
        chosen.append(root)
        total += size
        if total >= limit:
            break
    return chosen


# ---------------------------------------------------------------------------------------------------------------
# Additions shared by both backends: result order and the argument checks of the remaining management ops
# ---------------------------------------------------------------------------------------------------------------


def changed_order(listed: Sequence[str], changed: Iterable[str]) -> list[str]:
    """The IDs an op changed, in a deterministic order: the listed ones first (input order, each once), then
    the others (descendants) sorted by ID."""
    rest = set(changed)
    out: list[str] = []
    for wid in listed:
        if wid in rest:
            out.append(wid)
            rest.discard(wid)
    out.extend(sorted(rest))
    return out


def check_count(value: Any, what: str, minimum: int = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise invalid(f"{what} must be an int >= {minimum}, got {value!r}")


def check_opt_count(value: Any, what: str, minimum: int = 0) -> None:
    if value is not None:
        check_count(value, what, minimum)


def check_opt_time(value: Any, what: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise invalid(f"{what} must be epoch milliseconds (an int), got {value!r}")


_QUERY_ID_LISTS = ("workflow_ids", "forked_from", "parent_workflow_ids", "id_prefixes")
_QUERY_NAME_LISTS = (
    "names", "app_versions", "users", "queue_names", "executor_ids", "application_names", "schedule_names",
)  # fmt: skip
_QUERY_TIMES = (
    "created_from", "created_to", "completed_from", "completed_to", "dequeued_from", "dequeued_to",
)  # fmt: skip
_STATUS_NAMES = frozenset(
    ("PENDING", "ENQUEUED", "DELAYED", "SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED")
)


def _check_text_list(values: Any, what: str, max_bytes: int) -> None:
    if values is None:
        return
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise invalid(f"{what} must be a list of strings, got {values!r}")
    for v in values:
        tc.check_storable_text(v, max_bytes, what)


def check_query(q: base.WorkflowQuery) -> None:
    """The storable-text and type checks of a `WorkflowQuery` (the engine has validated user input already)."""
    for attr in _QUERY_ID_LISTS:
        _check_text_list(getattr(q, attr), attr, tc.MAX_ID_BYTES)
    for attr in _QUERY_NAME_LISTS:
        _check_text_list(getattr(q, attr), attr, tc.MAX_NAME_BYTES)
    _check_text_list(q.statuses, "statuses", tc.MAX_NAME_BYTES)
    bad = [s for s in q.statuses or () if s not in _STATUS_NAMES]
    if bad:
        raise invalid(f"statuses must be workflow status names, got {bad[0]!r}")
    for attr in _QUERY_TIMES:
        check_opt_time(getattr(q, attr), attr)
    check_opt_count(q.limit, "limit")
    check_opt_count(q.offset, "offset")
    if q.after is not None:
        if not isinstance(q.after, tuple) or len(q.after) != 2:
            raise invalid(f"after must be a (created_at, workflow_id) pair, got {q.after!r}")
        check_opt_time(q.after[0], "after[0]")
        tc.check_id(q.after[1], "after[1]")


def check_gc(cutoff_ms: Any, keep_last: Any, limit: Any) -> None:
    check_opt_time(cutoff_ms, "cutoff_ms")
    check_opt_count(keep_last, "keep_last")
    check_count(limit, "limit", 1)


def check_lease(name: Any, holder: Any, ttl_ms: Any) -> None:
    tc.check_name(name, "lease name")
    tc.check_name(holder, "lease holder")
    check_count(ttl_ms, "ttl_ms", 1)


def check_bundle_unique(bundle: base.ExportBundle) -> list[str]:
    """The bundle's workflow IDs in order; refuses a bundle that lists an ID, or a (dedup_queue,
    deduplication_id) binding, twice (call after `check_bundle`)."""
    ids: list[str] = []
    seen: set[str] = set()
    bindings: set[tuple[Any, Any]] = set()
    for entry in bundle:
        status = entry["status"]
        wid = status["workflow_id"]
        if wid in seen:
            raise invalid(f"the export lists workflow {wid!r} twice")
        seen.add(wid)
        ids.append(wid)
        if status["deduplication_id"] is not None and status["dedup_queue"] is not None:
            binding = (status["dedup_queue"], status["deduplication_id"])
            if binding in bindings:
                raise invalid(f"the export binds deduplication ID {binding[1]!r} on {binding[0]!r} twice")
            bindings.add(binding)
    return ids


def dedup_bindings(bundle: base.ExportBundle) -> list[tuple[str, str]]:
    """The (dedup_queue, deduplication_id) bindings an import would hold, in bundle order. A NULL dedup_queue
    never collides (NULLs are distinct in the unique index on both backends)."""
    out: list[tuple[str, str]] = []
    for entry in bundle:
        status = entry["status"]
        if status["deduplication_id"] is not None and status["dedup_queue"] is not None:
            out.append((status["dedup_queue"], status["deduplication_id"]))
    return out


def child_import_row(table: str, row: Mapping[str, Any]) -> dict[str, Any]:
    """An exported child row as bound for storage: bools as 0/1, JSON columns as text."""
    out: dict[str, Any] = {}
    for c in EXPORT_COLUMNS[table]:
        value = row[c]
        if c in BOOL_COLUMNS and value is not None:
            out[c] = 1 if value else 0
        else:
            out[c] = import_value(c, value)
    return out


# The value checks of an imported bundle, so a bad value is a `DBOSValidationError` on both backends rather
# than a constraint failure. Kinds: id / name (storable text of that size), text (a payload: any str), int,
# bool, json (any JSON value), roles (a list of names). Columns in `_REQUIRED` must not be None.
_KIND_BY_COLUMN: dict[str, str] = {
    "workflow_id": "id", "parent_workflow_id": "id", "forked_from": "id", "child_workflow_id": "id",
    "message_id": "name",
    "inputs": "text", "receiver": "text", "output": "text", "error": "text", "payload": "text", "value": "text",
    "priority": "int", "delay_until": "int", "timeout_ms": "int", "deadline_ms": "int", "incarnation": "int",
    "recovery_attempts": "int", "max_recovery_attempts": "int", "debounce_deadline_ms": "int",
    "created_at": "int", "updated_at": "int", "dequeued_at": "int", "completed_at": "int", "step_id": "int",
    "started_at": "int", "consumed_at": "int", "stream_offset": "int", "writer_step_id": "int", "step_seq": "int",
    "was_forked_from": "bool", "steps_seeded": "bool", "consumed": "bool", "is_end": "bool",
    "attributes": "json", "authenticated_roles": "roles",
}  # fmt: skip
_REQUIRED: dict[str, frozenset[str]] = {
    "workflows": frozenset(
        ("workflow_id", "status", "name", "inputs", "inputs_serializer", "priority", "recovery_attempts",
         "was_forked_from", "steps_seeded", "created_at", "updated_at")
    ),
    "steps": frozenset(("step_id", "name", "write_token")),
    "messages": frozenset(
        ("message_id", "topic_digest", "payload", "serializer", "consumed", "created_at")
    ),
    "events": frozenset(("key", "key_digest", "value", "serializer", "updated_at")),
    "event_history": frozenset(("step_id", "key", "key_digest", "value", "serializer", "created_at")),
    "streams": frozenset(("key", "key_digest", "stream_offset", "is_end", "writer_step_id", "created_at")),
}  # fmt: skip
_SERIALIZER_COLUMNS = frozenset(("inputs_serializer", "outcome_serializer", "serializer"))


def _check_value(table: str, column: str, value: Any, where: str) -> None:
    what = f"{where}: {table}.{column}"
    if value is None:
        if column in _REQUIRED[table]:
            raise invalid(f"{what} must not be null")
        return
    kind = _KIND_BY_COLUMN.get(column, "name")
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int) or not -(2**63) <= value < 2**63:
            raise invalid(f"{what} must be an int, got {value!r}")
    elif kind == "bool":
        if not isinstance(value, bool) and value not in (0, 1):
            raise invalid(f"{what} must be a bool, got {value!r}")
    elif kind == "text":
        if not isinstance(value, str):
            raise invalid(f"{what} must be a string, got {type(value).__name__}")
    elif kind == "roles":
        if not isinstance(value, list):
            raise invalid(f"{what} must be a list of role names, got {value!r}")
        for role in value:
            tc.check_name(role, what)
    elif kind == "json":
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise invalid(f"{what} must be a JSON value ({exc})") from exc
    elif kind == "id":
        tc.check_id(value, what)
    elif column in _SERIALIZER_COLUMNS:
        tc.check_storable_text(value, tc.MAX_SERIALIZER_BYTES, what)
    else:
        tc.check_name(value, what)


def check_bundle_values(bundle: base.ExportBundle) -> None:
    """Every value of a bundle (after `check_bundle`) has its column's type, fits its size limit and passes the
    workflow row's constraints; also refuses duplicate IDs and bindings (`check_bundle_unique`)."""
    for i, entry in enumerate(bundle):
        status = entry["status"]
        where = f"export entry {i} ({status['workflow_id']!r})"
        for column in EXPORT_COLUMNS["workflows"]:
            _check_value("workflows", column, status[column], where)
        if status["status"] not in _STATUS_NAMES:
            raise invalid(f"{where}: unknown status {status['status']!r}")
        if status["cancel_reason"] not in (None, "user", "deadline"):
            raise invalid(f"{where}: unknown cancel_reason {status['cancel_reason']!r}")
        if status["status"] in ("ENQUEUED", "DELAYED") and status["claim_token"] is not None:
            raise invalid(f"{where}: an {status['status']} workflow has no claim token")
        if status["status"] == "DELAYED" and status["delay_until"] is None:
            raise invalid(f"{where}: a DELAYED workflow needs delay_until")
        if status["output"] is not None and status["error"] is not None:
            raise invalid(f"{where}: a workflow has an output or an error, not both")
        for table in CHILD_TABLES:
            for row in entry[table]:
                for column in EXPORT_COLUMNS[table]:
                    _check_value(table, column, row[column], where)
                if table == "steps" and row["step_id"] < 1:
                    raise invalid(f"{where}: step_id must be >= 1, got {row['step_id']!r}")
    check_bundle_unique(bundle)


def fork_kind(spec: base.ForkSpec, forked_from: str | None, creator_token: str) -> base.InsertKind:
    """When `spec.new_id` exists, from its forked_from and creator token: an earlier attempt of this very fork
    committed (07 §7 rule 1, reported as `created`), a fork of the same source, or an unrelated workflow."""
    if forked_from != spec.source_id:
        return "id_conflict"
    return "created" if creator_token == spec.creator_token else "existing"


def import_refusal(
    ids: Sequence[str], existing: Mapping[str, str], creator_token: str
) -> base.ImportResult | None:
    """When some of the bundle's IDs exist (`existing`: ID -> creator token): `created` if every one exists
    with this import's creator token (an earlier attempt of it committed, 07 §7 rule 1), else `id_conflict`
    naming the first existing ID in bundle order. None when nothing exists."""
    if not existing:
        return None
    if len(existing) == len(set(ids)) and all(t == creator_token for t in existing.values()):
        return base.ImportResult("created", list(ids))
    return base.ImportResult("id_conflict", [], next(w for w in ids if w in existing))
