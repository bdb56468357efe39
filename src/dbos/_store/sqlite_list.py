"""Listing reads of the SQLite backend: `list_workflows` (02 §7.1) and paged `list_steps` (02 §7.2).

`list_workflows` builds one parameterized SELECT. A list filter binds its one value (`= ?`) or one JSON array
(`IN (SELECT value FROM json_each(?))`), so a statement's shape does not depend on the list length.
The index is chosen explicitly (`INDEXED BY`): the `created` index, which yields rows in page order so a
limited page stops early, unless a filter names a small set of rows (IDs, parents, forks, active statuses),
whose rows are then fetched through that filter's index and sorted.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from . import base
from . import manage_common as mc
from .records import step_row, workflow_row
from .sqlite_rows import json_list, workflow_columns

# (query attribute, column) of the "any of" filters.
_LIST_FILTERS = (
    ("workflow_ids", "workflow_id"),
    ("statuses", "status"),
    ("names", "name"),
    ("app_versions", "application_version"),
    ("users", "authenticated_user"),
    ("queue_names", "queue_name"),
    ("executor_ids", "executor_id"),
    ("forked_from", "forked_from"),
    ("parent_workflow_ids", "parent_workflow_id"),
    ("application_names", "application_name"),
    ("schedule_names", "schedule_name"),
)
# (lower bound attribute, upper bound attribute, column): inclusive bounds.
_RANGES = (
    ("created_from", "created_to", "created_at"),
    ("completed_from", "completed_to", "completed_at"),
    ("dequeued_from", "dequeued_to", "dequeued_at"),
)
# The predicate of the `active` partial index, repeated so the planner may use it.
_ACTIVE_PREDICATE = "status IN ('ENQUEUED', 'DELAYED', 'PENDING') AND queue_name IS NOT NULL"


def _index(q: base.WorkflowQuery) -> str | None:
    """The index that serves the query (see the module docstring); None: the planner's choice, which for a list
    of IDs is always the UNIQUE (workflow_id) index."""
    if q.workflow_ids is not None:
        return None
    if q.parent_workflow_ids is not None:
        return "dbos_workflows_parent"
    if q.forked_from is not None:
        return "dbos_workflows_forked"
    if q.statuses is not None and set(q.statuses) <= set(mc.ACTIVE_STATUSES):
        # Active rows are few: fetch them all through an index and sort. One status streams in created order.
        if q.queues_only and len(q.statuses) > 1:
            return "dbos_workflows_active"
        return "dbos_workflows_status_created"
    return "dbos_workflows_created"


def list_workflows(conn: sqlite3.Connection, q: base.WorkflowQuery) -> list[base.WorkflowRow]:
    where: list[str] = []
    params: list[Any] = []
    for attr, column in _LIST_FILTERS:
        values: Sequence[str] | None = getattr(q, attr)
        if values is None:
            continue
        if len(values) == 0:
            return []  # an empty "any of" matches nothing
        if len(values) == 1:  # lets an index on (column, created_at) deliver rows in page order
            where.append(f"{column} = ?")
            params.append(values[0])
        else:
            where.append(f"{column} IN (SELECT value FROM json_each(?))")
            params.append(json_list(values))
    if q.id_prefixes is not None:
        if len(q.id_prefixes) == 0:
            return []
        # Literal prefixes: a substring comparison, so %, _ and \ mean nothing.
        where.append("(" + " OR ".join(["substr(workflow_id, 1, length(?)) = ?"] * len(q.id_prefixes)) + ")")
        for prefix in q.id_prefixes:
            params.extend((prefix, prefix))
    for low, high, column in _RANGES:
        for attr, op in ((low, ">="), (high, "<=")):
            bound = getattr(q, attr)
            if bound is not None:
                where.append(f"{column} {op} ?")
                params.append(bound)
    if q.was_forked_from is not None:
        where.append("was_forked_from = ?")
        params.append(1 if q.was_forked_from else 0)
    if q.has_parent is not None:
        where.append("parent_workflow_id IS NOT NULL" if q.has_parent else "parent_workflow_id IS NULL")
    if q.queues_only:
        where.append("queue_name IS NOT NULL")
    index = _index(q)
    if index == "dbos_workflows_active":
        where.append(_ACTIVE_PREDICATE)
    if q.after is not None:
        where.append(f"(created_at, workflow_id) {'<' if q.sort_desc else '>'} (?, ?)")
        params.extend(q.after)
    direction = " DESC" if q.sort_desc else ""
    sql = (
        f"SELECT {workflow_columns(q.load_input, q.load_output)} FROM dbos_workflows"
        + ("" if index is None else f" INDEXED BY {index}")
        + (" WHERE " + " AND ".join(where) if where else "")
        + f" ORDER BY created_at{direction}, workflow_id{direction}"
    )
    if q.limit is not None or q.offset is not None:
        sql += " LIMIT ? OFFSET ?"
        params.extend((-1 if q.limit is None else q.limit, q.offset or 0))
    return [workflow_row(r) for r in conn.execute(sql, params).fetchall()]


_STEP_COLUMNS = (
    "workflow_id, step_id, name, {payloads}, child_workflow_id, started_at, completed_at, write_token"
)


def list_steps(
    conn: sqlite3.Connection, workflow_id: str, load_output: bool, limit: int | None, offset: int | None
) -> list[base.StepRow]:
    payloads = (
        "output, error, serializer" if load_output else "NULL AS output, NULL AS error, NULL AS serializer"
    )
    sql = f"SELECT {_STEP_COLUMNS.format(payloads=payloads)} FROM dbos_steps WHERE workflow_id = ? ORDER BY step_id"
    params: list[Any] = [workflow_id]
    if limit is not None or offset is not None:
        sql += " LIMIT ? OFFSET ?"
        params += [-1 if limit is None else limit, offset or 0]
    return [step_row(r) for r in conn.execute(sql, params).fetchall()]
