"""Workflow export and import on SQLite (02 §11; 07 §2.2 "Management"). Column lists, value normalization and the
import's status rule come from `manage_common`, so both backends produce and accept identical bundles.

An export runs on one reader inside one read transaction (`SQLiteDB.read(..., snapshot=True)`); an import is one
write transaction that checks every ID and every deduplication binding before it writes anything.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from . import base
from . import manage_common as mc
from .sqlite_conn import WriteTx
from .sqlite_rows import json_list

_WF_COLUMNS = mc.EXPORT_COLUMNS["workflows"]

_TARGETS = """
WITH RECURSIVE tree(wid) AS (
  SELECT w.workflow_id FROM json_each(:ids) j JOIN dbos_workflows w ON w.workflow_id = j.value
  UNION
  SELECT c.workflow_id FROM tree t
  JOIN dbos_workflows c INDEXED BY dbos_workflows_parent ON c.parent_workflow_id = t.wid
  WHERE :children
)
SELECT w.* FROM tree t JOIN dbos_workflows w ON w.workflow_id = t.wid ORDER BY w.created_at, w.workflow_id
"""


def _as_dict(r: sqlite3.Row) -> dict[str, Any]:
    return {k: r[k] for k in r.keys()}


def export_workflows(
    conn: sqlite3.Connection, ids: Sequence[str], include_children: bool
) -> base.ExportBundle:
    if not ids:
        return []
    params = {"ids": json_list(ids), "children": 1 if include_children else 0}
    statuses = [_as_dict(r) for r in conn.execute(_TARGETS, params).fetchall()]
    if not statuses:
        return []
    wids = json_list(r["workflow_id"] for r in statuses)
    children: dict[str, dict[str, list[dict[str, Any]]]] = {r["workflow_id"]: {} for r in statuses}
    for table, owner in mc.CHILD_TABLES.items():
        order = ", ".join(mc.CHILD_ORDER[table])
        cur = conn.execute(
            f"SELECT {owner} AS dbos_owner, * FROM dbos_{table} "
            f"WHERE {owner} IN (SELECT value FROM json_each(?)) ORDER BY {owner}, {order}",
            (wids,),
        )
        for r in cur.fetchall():
            children[r["dbos_owner"]].setdefault(table, []).append(_as_dict(r))
    return [mc.export_entry(s, children[s["workflow_id"]]) for s in statuses]


_INSERT_WORKFLOW = f"INSERT INTO dbos_workflows ({', '.join(_WF_COLUMNS)}) VALUES ({', '.join(':' + c for c in _WF_COLUMNS)})"


def _child_insert(table: str) -> str:
    columns = (mc.CHILD_TABLES[table],) + mc.EXPORT_COLUMNS[table]
    return f"INSERT INTO dbos_{table} ({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)})"


_CHILD_INSERTS = {table: _child_insert(table) for table in mc.CHILD_TABLES}
_EXISTING = "SELECT workflow_id, creator_token FROM dbos_workflows WHERE workflow_id IN (SELECT value FROM json_each(?))"
_HOLDER = (
    "SELECT workflow_id FROM dbos_workflows INDEXED BY dbos_workflows_dedup "
    "WHERE dedup_queue = ? AND deduplication_id = ?"
)


def _bool_row(row: dict[str, Any]) -> dict[str, Any]:
    return {c: (int(v) if c in mc.BOOL_COLUMNS and v is not None else v) for c, v in row.items()}


def import_workflows(tx: WriteTx, bundle: base.ExportBundle, creator_token: str) -> base.ImportResult:
    ids = [entry["status"]["workflow_id"] for entry in bundle]
    if not ids:
        return base.ImportResult("created", [])
    existing = {r["workflow_id"]: r["creator_token"] for r in tx.execute(_EXISTING, (json_list(ids),))}
    refusal = mc.import_refusal(ids, existing, creator_token)
    if refusal is not None:
        return refusal
    for binding in mc.dedup_bindings(bundle):
        holder = tx.execute(_HOLDER, binding).fetchone()
        if holder is not None:
            return base.ImportResult("dedup_conflict", [], holder[0])
    for entry in bundle:
        row = mc.imported_status(entry["status"]) | {"creator_token": creator_token}
        tx.execute(_INSERT_WORKFLOW, _bool_row(row))
        wid = row["workflow_id"]
        owner = {column: wid for column in mc.CHILD_TABLES.values()}  # workflow_id, destination_id
        for table, sql in _CHILD_INSERTS.items():
            rows = [mc.child_import_row(table, r) | owner for r in entry[table]]
            if rows:
                tx.conn.executemany(sql, rows)
        if row["status"] in ("ENQUEUED", "DELAYED") and row["queue_name"] is not None:
            tx.emit("queue", row["queue_name"])
    return base.ImportResult("created", ids)
