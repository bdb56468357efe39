"""Management operations of the PostgreSQL store around the statements of `postgres_manage_sql` (02 §3-§11;
07 §2.2 "Management", §6.3): each function runs one op's statements on a pool connection and returns its result
with the changes to publish in-process after commit (other processes get them by NOTIFY at commit).

Single-statement writes (cancel, resume, prune, lease) run in autocommit; delete and fork run one pipelined
transaction with the longer statement timeout (fork and export at REPEATABLE READ); import checks its conflicts,
then writes everything in one statement and commits only if every row went in.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from . import base, records
from . import manage_common as mc
from .postgres_manage_sql import GC_PAGE, LONG_TIMEOUT, GcShape, ManageStatements, list_params
from .postgres_rows import Conn, Row, abort, step_row, workflow_row

Count = Callable[..., None]  # PostgresStore._count
Changes = list[base.Change]

_IMPORT_RETRIES = 3


def _stopped_changes(rows: Sequence[Row]) -> Changes:
    """`wf` and `cancel` per row (workflow_id, queue_name, old status), `queue` per queue of an active row."""
    changes: Changes = []
    for r in rows:
        changes += [base.Change("wf", (r[0],)), base.Change("cancel", (r[0],))]
    queues = sorted({r[1] for r in rows if r[1] is not None and r[2] in mc.ACTIVE_STATUSES})
    return changes + [base.Change("queue", (q,)) for q in queues]


def run_tx(
    conn: Conn,
    statements: Sequence[tuple[str, dict[str, Any]]],
    *,
    repeatable: bool = False,
    read_only: bool = False,
) -> list[list[Row]]:
    """BEGIN, the long statement timeout, the statements and COMMIT in one round trip (pipeline mode); the
    result rows of each statement."""
    begin = "BEGIN"
    if repeatable:
        begin += " ISOLATION LEVEL REPEATABLE READ"
    if read_only:
        begin += " READ ONLY"
    try:
        with conn.pipeline():
            conn.execute(begin)
            conn.execute(LONG_TIMEOUT)
            cursors = [conn.execute(query, params) for query, params in statements]
            conn.execute("COMMIT")
        return [list(c.fetchall()) if c.description is not None else [] for c in cursors]
    except BaseException:
        abort(conn)
        raise


# ---------------------------------------------------------------------------------------------------------------
# Listing
# ---------------------------------------------------------------------------------------------------------------


def list_workflows(conn: Conn, st: ManageStatements, q: base.WorkflowQuery) -> list[base.WorkflowRow]:
    """Values are bound client-side, so the server plans every listing with its actual filters (the session's
    generic plans cannot know whether a status is rare or a limit small) and nothing is prepared."""
    cur = psycopg.ClientCursor(conn)
    cur.execute(st.list_workflows(q), list_params(q), prepare=False)
    return [workflow_row(r) for r in cur.fetchall()]


def list_steps(
    conn: Conn,
    st: ManageStatements,
    workflow_id: str,
    load_output: bool,
    limit: int | None,
    offset: int | None,
) -> list[base.StepRow]:
    params = {"workflow_id": workflow_id, "limit": limit, "offset": offset or 0}
    return [step_row(r) for r in conn.execute(st.list_steps[load_output], params).fetchall()]


# ---------------------------------------------------------------------------------------------------------------
# Cancel, deadlines, resume
# ---------------------------------------------------------------------------------------------------------------


def cancel_workflows(
    conn: Conn, st: ManageStatements, ids: list[str], children: bool, reason: str
) -> tuple[list[str], Changes]:
    rows = conn.execute(st.cancel[children], {"ids": ids, "reason": reason}).fetchall()
    return mc.changed_order(ids, (r[0] for r in rows)), _stopped_changes(rows)


def cancel_expired(
    conn: Conn, st: ManageStatements, application_name: str | None, limit: int
) -> tuple[list[str], Changes]:
    params = {"app": application_name, "limit": limit}
    rows = conn.execute(st.cancel_expired[application_name is not None], params).fetchall()
    return [r[0] for r in rows], _stopped_changes(rows)


def next_deadline(conn: Conn, st: ManageStatements, application_name: str | None) -> int | None:
    row = conn.execute(st.next_deadline[application_name is not None], {"app": application_name}).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def resume_workflows(
    conn: Conn, st: ManageStatements, ids: list[str], queue_name: str | None
) -> tuple[base.ResumeResult, Changes]:
    params = {"ids": ids, "queue": queue_name or base.INTERNAL_QUEUE, "internal": base.INTERNAL_QUEUE}
    rows = conn.execute(st.resume, params).fetchall()
    missing = rows[0][0] if rows else None
    if missing is not None:
        return base.ResumeResult(str(missing), []), []
    done = [r for r in rows if r[1] is not None]
    resumed = {r[1] for r in done}
    changes = [base.Change("queue", (q,)) for q in sorted({r[2] for r in done})]
    changes += [base.Change("wf", (r[1],)) for r in done]
    return base.ResumeResult(None, [wid for wid in dict.fromkeys(ids) if wid in resumed]), changes


# ---------------------------------------------------------------------------------------------------------------
# Fork
# ---------------------------------------------------------------------------------------------------------------


def fork_workflow(conn: Conn, st: ManageStatements, spec: base.ForkSpec) -> tuple[base.InsertResult, Changes]:
    """One REPEATABLE READ transaction around one statement. A concurrent insert of `new_id` or update of the
    source after the snapshot raises a serialization failure, which the caller retries on a new snapshot. A retry
    after an ambiguous commit finds the row with this fork's creator token: `created`."""
    queue = spec.queue_name or base.INTERNAL_QUEUE
    params = {
        "source": spec.source_id,
        "new": spec.new_id,
        "start": spec.start_step,
        "version": spec.application_version,
        "timeout": spec.timeout_ms,
        "queue": queue,
        "partition": spec.partition_key,
        "creator": spec.creator_token,
        "old_children": list(spec.replacement_children.keys()),
        "new_children": list(spec.replacement_children.values()),
    }
    (rows,) = run_tx(conn, [(st.fork, params)], repeatable=True)
    r = rows[0]
    if not r[0]:
        return base.InsertResult("source_missing", spec.new_id), []
    if r[1] is not None:
        return _insert_result("created", r[1:9]), [base.Change("queue", (queue,))]
    existing, forked_from, creator = r[9:17], r[17], r[18]
    if creator == spec.creator_token:
        kind: base.InsertKind = "created"
    else:
        kind = "existing" if forked_from == spec.source_id else "id_conflict"
    return _insert_result(kind, existing), []


def _insert_result(kind: base.InsertKind, r: Row) -> base.InsertResult:
    names = (
        "workflow_id",
        "name",
        "class_name",
        "config_name",
        "status",
        "queue_name",
        "created_at",
        "deadline_ms",
    )
    return records.insert_result(kind, dict(zip(names, r, strict=True)))


# ---------------------------------------------------------------------------------------------------------------
# Delete, garbage collection, executors, leases
# ---------------------------------------------------------------------------------------------------------------


def delete_workflows(
    conn: Conn, st: ManageStatements, ids: list[str], children: bool, only_terminal: bool
) -> tuple[list[str], Changes]:
    (rows,) = run_tx(conn, [(st.delete[(children, only_terminal)], {"ids": ids})])
    return mc.changed_order(ids, (r[0] for r in rows)), _stopped_changes(rows)


def gc_select(
    conn: Conn,
    st: ManageStatements,
    application_name: str | None,
    cutoff_ms: int | None,
    keep_last: int | None,
    limit: int,
) -> list[str]:
    """Candidate roots page by page, oldest first, until the eligible trees found reach `limit` members; all
    pages read one REPEATABLE READ snapshot."""
    try:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        conn.execute(LONG_TIMEOUT)
        roots = _gc_pages(conn, st, application_name, cutoff_ms, keep_last, limit)
        conn.execute("COMMIT")
        return roots
    except BaseException:
        abort(conn)
        raise


def _gc_pages(
    conn: Conn,
    st: ManageStatements,
    application_name: str | None,
    cutoff_ms: int | None,
    keep_last: int | None,
    limit: int,
) -> list[str]:
    scoped = application_name is not None
    params: dict[str, Any] = {"app": application_name, "cutoff": cutoff_ms}
    if keep_last:
        boundary = conn.execute(st.keep_boundary[scoped], {"app": application_name, "offset": keep_last - 1})
        row = boundary.fetchone()
        if row is None:
            return []  # the scope has at most keep_last rows: every one is kept
        params |= {"keep_at": row[0], "keep_id": row[1]}
    trees: list[tuple[str, int]] = []
    total = 0
    after: tuple[int, str] | None = None
    while total < limit:
        shape = GcShape(
            scoped=scoped, cutoff=cutoff_ms is not None, keep=bool(keep_last), after=after is not None
        )
        page_params = params if after is None else params | {"after_at": after[0], "after_id": after[1]}
        rows = conn.execute(st.gc_page(shape), page_params).fetchall()
        for wid, _, size, bad in rows:
            if bad == 0:
                trees.append((wid, int(size)))
                total += int(size)
                if total >= limit:
                    break
        if len(rows) < GC_PAGE:
            break
        after = (rows[-1][1], rows[-1][0])
    return mc.gc_batches(trees, limit)


def prune_executors(conn: Conn, st: ManageStatements, before_ms: int) -> int:
    params = {"before": before_ms, "retention": records.RATE_CLAIMS_RETENTION_MS}
    row = conn.execute(st.prune, params).fetchone()
    return 0 if row is None else int(row[0])


def try_maintenance_lease(conn: Conn, st: ManageStatements, name: str, holder: str, ttl_ms: int) -> bool:
    return conn.execute(st.lease, {"name": name, "holder": holder, "ttl": ttl_ms}).fetchone() is not None


# ---------------------------------------------------------------------------------------------------------------
# Export and import
# ---------------------------------------------------------------------------------------------------------------


def export_workflows(conn: Conn, st: ManageStatements, ids: list[str], children: bool) -> base.ExportBundle:
    """One REPEATABLE READ snapshot: the rows in created order, then each child table in CHILD_ORDER."""
    if not ids:
        return []
    params = {"ids": ids}
    tables = list(mc.CHILD_TABLES)
    statements = [(st.export_status[children], params)]
    statements += [(st.export_children[(t, children)], params) for t in tables]
    results = run_tx(conn, statements, repeatable=True, read_only=True)
    wf_cols = mc.EXPORT_COLUMNS["workflows"]
    statuses = [dict(zip(wf_cols, r, strict=True)) for r in results[0]]
    owned: dict[str, dict[str, list[dict[str, Any]]]] = {s["workflow_id"]: {} for s in statuses}
    for table, rows in zip(tables, results[1:], strict=True):
        columns = mc.EXPORT_COLUMNS[table]
        for r in rows:
            owned[r[0]].setdefault(table, []).append(dict(zip(columns, r[1:], strict=True)))
    return [mc.export_entry(s, owned[s["workflow_id"]]) for s in statuses]


def _json_rows(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, ensure_ascii=False, separators=(",", ":"))


def _import_params(bundle: base.ExportBundle, creator_token: str) -> dict[str, Any]:
    statuses: list[dict[str, Any]] = []
    children: dict[str, list[dict[str, Any]]] = {t: [] for t in mc.CHILD_TABLES}
    for entry in bundle:
        row = mc.imported_status(entry["status"]) | {"creator_token": creator_token}
        statuses.append(row)
        for table, owner in mc.CHILD_TABLES.items():
            for child in entry[table]:
                values = mc.child_import_row(table, child)
                for c in mc.BOOL_COLUMNS.intersection(values):
                    if values[c] is not None:
                        values[c] = bool(values[c])  # JSON booleans for the boolean columns
                children[table].append(values | {owner: row["workflow_id"]})
    for row in statuses:
        for c in mc.BOOL_COLUMNS.intersection(row):
            if row[c] is not None:
                row[c] = bool(row[c])
    params: dict[str, Any] = {"workflows": _json_rows(statuses), "internal": base.INTERNAL_QUEUE}
    params |= {table: _json_rows(rows) for table, rows in children.items()}
    return params


def _import_conflict(
    conn: Conn, st: ManageStatements, ids: list[str], bundle: base.ExportBundle, creator_token: str
) -> base.ImportResult | None:
    """The result if an ID or a binding is held (an earlier attempt of this import counts as `created`)."""
    bindings = mc.dedup_bindings(bundle)
    params = {"ids": ids, "dq": [b[0] for b in bindings], "did": [b[1] for b in bindings]}
    rows = conn.execute(st.import_conflicts, params).fetchall()
    existing = {r[1]: r[2] for r in rows if r[0] == 0}
    if existing:
        if len(existing) == len(ids) and all(t == creator_token for t in existing.values()):
            return base.ImportResult("created", ids)  # an earlier attempt of this import committed (07 §7)
        return base.ImportResult("id_conflict", [], next(w for w in ids if w in existing))
    holders = {(r[3], r[4]): r[1] for r in rows if r[0] == 1}
    for binding in bindings:
        if binding in holders:
            return base.ImportResult("dedup_conflict", [], holders[binding])
    return None


def import_workflows(
    conn: Conn, st: ManageStatements, bundle: base.ExportBundle, creator_token: str, count: Count
) -> tuple[base.ImportResult, Changes]:
    ids = mc.check_bundle_unique(bundle)
    if not ids:
        return base.ImportResult("created", []), []
    params = _import_params(bundle, creator_token)
    for _ in range(1 + _IMPORT_RETRIES):
        found = _import_conflict(conn, st, ids, bundle, creator_token)
        count("import_workflows", read=True)
        if found is not None:
            return found, []
        try:
            with conn.pipeline():
                conn.execute("BEGIN")
                conn.execute(LONG_TIMEOUT)
                cur = conn.execute(st.import_rows, params)
                row = cur.fetchone()
                complete = row is not None and int(row[0]) == len(ids)
                conn.execute("COMMIT" if complete else "ROLLBACK")
        except BaseException:
            abort(conn)
            raise
        count("import_workflows", round_trips=2, commit=complete)
        if complete:
            assert row is not None
            return base.ImportResult("created", ids), [
                base.Change("queue", (q,)) for q in sorted(row[2] or [])
            ]
        # A row conflicted after the check (a concurrent insert): check again.
    raise base.UnknownStorageError(
        "the import was refused by a conflict that the conflict check does not find", op="import_workflows"
    )
