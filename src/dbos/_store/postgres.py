"""The PostgreSQL system store (07 §6): psycopg 3 with a connection pool, LISTEN/NOTIFY, advisory locks.

Single-statement ops run in autocommit (one round trip). Multi-statement ops run one transaction in pipeline
mode: a child start with its parent checkpoint, and a claim on a queue with a shared budget (BEGIN, the queue's
advisory lock, the claim statement and COMMIT in one round trip; `postgres_queues`). Every write op is idempotent
by its key (07 §7), so connection loss and contention are retried within the foreground budget.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar

import psycopg
import psycopg_pool
from psycopg import sql

from . import base, records
from . import manage_common as mc
from . import postgres_manage as pm
from . import textcheck as tc
from .postgres_batch import PgBatcher, PgWrite
from .postgres_comm_api import CommMethods
from .postgres_conn import (
    advisory_key,
    channels,
    check_server,
    connect_kwargs,
    is_missing_database,
    listen_channels,
    mask_password,
    open_connection,
    parse_url,
)
from .postgres_defs import build_def_statements
from .postgres_defs_api import DefinitionMethods
from .postgres_errors import classify_pg_error, with_retries
from .postgres_live import Clock, LivenessConnection, OwnBackends
from .postgres_manage_api import ManageMethods
from .postgres_manage_sql import ManageStatements
from .postgres_messages_sql import MessageStatements
from .postgres_migrate import current_plan, reset_postgres, run_migrations
from .postgres_queue_sql import QueueStatements
from .postgres_queues import (
    ClaimsPruner,
    claim_params,
    claim_result,
    claim_shape,
    has_shared_budget,
    logs_claims,
    promote_result,
    run_locked,
    stats_rows,
)
from .postgres_rows import (
    Conn,
    Row,
    abort,
    executor_row,
    init_error,
    insert_params,
    insert_result,
    step_row,
    unwrap_dbapi,
    workflow_row,
)
from .postgres_sql import EXECUTOR_COLUMNS, build_statements, render, workflow_select_list
from .postgres_streams_sql import StreamStatements
from .postgres_versions import build_version_statements

__all__ = ["PostgresStore", "reset_postgres", "classify_pg_error"]

_log = logging.getLogger("dbos")

T = TypeVar("T")

_WARN_EVERY_S = 30.0
_POOL_CHECK_EVERY_S = 1.0
_REGISTER_ATTEMPTS = 5
_DEDUP_RETRIES = (
    3  # a refused insert whose ID and dedup holder both vanished is retried this often (03 §7 rule 4)
)
MAX_PAYLOAD_LIMIT = 268_435_456  # every payload up to 256 MiB must be storable on both backends


# ---------------------------------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------------------------------


class PostgresStore(ManageMethods, CommMethods, DefinitionMethods):
    backend: Literal["sqlite", "postgres"] = "postgres"

    def __init__(self, url: str, settings: base.StoreSettings) -> None:
        self.url = url
        self.settings = settings
        self.changes = base.ChangeFeed()
        self.schema = settings.schema
        tc.check_name(self.schema, "system database schema")
        if settings.max_payload_bytes > MAX_PAYLOAD_LIMIT:
            raise init_error(
                f"max_payload_bytes {settings.max_payload_bytes} exceeds the limit {MAX_PAYLOAD_LIMIT} (07 §3.4)"
            )
        role = settings.role
        label = "client" if role == "client" else (settings.application_name or "app")
        self._spec = parse_url(url, app_label=label)
        self._sql = build_statements(self.schema)
        self._list_queued_sql = render(
            f"SELECT {workflow_select_list(load_input=False, load_output=False)} FROM {{s}}.workflows "
            "WHERE status IN ('ENQUEUED', 'DELAYED', 'PENDING') AND queue_name IS NOT NULL "
            "AND (%(q)s::text IS NULL OR queue_name = %(q)s) ORDER BY seq LIMIT %(limit)s",
            sql.Identifier(self.schema),
        )
        self._qsql = QueueStatements(self.schema)
        self._dsql = build_def_statements(self.schema)
        self._msql = ManageStatements(self.schema)
        self._esql = MessageStatements(self.schema)
        self._ssql = StreamStatements(self.schema)
        self._vsql = build_version_statements(self.schema, channels(self.schema)["ctl"])
        self._pruner = ClaimsPruner()
        self._stats = base.StoreStats()
        self._stats_lock = threading.Lock()
        self._clock = Clock()
        self._last_warning: dict[str, float] = {}
        self._last_pool_check = 0.0
        self._registration: tuple[str, int, int] | None = None  # (executor_id, incarnation, liveness key)
        self._held_key: int | None = None
        self._closed = False
        first = self._open_first(create=settings.create_database and role != "client")
        self._own_pids = OwnBackends()
        self._pool = self._make_pool(min_size=1 if role == "client" else 2)
        self._batcher = PgBatcher(max(1, settings.pool_size // 4), self._lane_connection, self._count_batch)
        self._live: LivenessConnection | None = None
        if role == "executor":
            listen = listen_channels(self.schema) if settings.use_listen_notify else None
            self._live = LivenessConnection(
                self._connect, self.changes, listen=listen, on_connect=self._on_live, own_pids=self._own_pids
            )
            self._live.start(first)
        else:
            first.close()

    def _remember_backend(self, conn: Conn) -> None:
        # Notifications sent by our own pool connections were already published in-process after commit; the
        # listener drops their echoes without parsing them. Keyed weakly: a closed connection's pid may be
        # reused by another client's backend, whose notifications must not be dropped.
        self._own_pids.add(conn)

    # lifecycle -------------------------------------------------------------------------------------------------

    def _connect(self) -> Conn:
        return psycopg.connect(self._spec.conninfo, **connect_kwargs(self._spec))

    def _open_first(self, *, create: bool) -> Conn:
        try:
            conn = open_connection(self._spec, create=create)
        except psycopg.Error as exc:
            if is_missing_database(exc):
                raise init_error(
                    f"system database {self._spec.dbname!r} does not exist at {mask_password(self.url)}"
                ) from exc
            raise classify_pg_error(exc, "open") from exc
        try:
            t0 = time.time()
            server_ms = check_server(conn)
            self._clock.add(server_ms, t0, time.time())
        except BaseException:
            conn.close()
            raise
        return conn

    def _make_pool(self, *, min_size: int) -> psycopg_pool.ConnectionPool[Conn]:
        max_size = max(self.settings.pool_size, min_size)
        pool: psycopg_pool.ConnectionPool[Conn] = psycopg_pool.ConnectionPool(
            self._spec.conninfo,
            min_size=min_size,
            max_size=max_size,
            timeout=10,
            max_lifetime=3600,
            max_idle=600,
            check=None,
            kwargs=connect_kwargs(self._spec),
            configure=self._remember_backend,
            open=False,
            name=f"dbos-{self.schema}",
        )
        pool.open(wait=False)
        return pool

    def migrate(self) -> base.MigrationReport:
        def attempt(_: int) -> base.MigrationReport:
            with self._connect() as conn:
                return run_migrations(conn, self.schema)

        return with_retries("migrate", attempt)

    def check_schema(
        self,
    ) -> Literal["current", "missing", "behind", "ahead_compatible", "ahead_incompatible"]:
        return self._pooled("check_schema", lambda conn: current_plan(conn, self.schema).state)

    def now_ms(self) -> int:
        return self._clock.now_ms()

    def stats(self) -> base.StoreStats:
        with self._stats_lock:
            s = self._stats
            counts = base.StoreStats(s.commits, s.reads, s.round_trips, dict(s.by_op))
        return self._batcher.add_stats(counts)

    def close(self, timeout_s: float = 5.0) -> None:
        if self._closed:
            return
        self._closed = True
        if self._live is not None:
            self._live.close(timeout_s)
        self._pool.close(timeout=timeout_s)

    def __repr__(self) -> str:
        return f"PostgresStore({mask_password(self.url)!r}, schema={self.schema!r})"

    # plumbing --------------------------------------------------------------------------------------------------

    def _count(
        self, op: str, *, round_trips: int = 1, commit: bool = False, read: bool = False, calls: int = 1
    ) -> None:
        """`calls` counts toward `by_op`: one per autocommit statement or transaction, as on SQLite."""
        with self._stats_lock:
            s = self._stats
            s.round_trips += round_trips
            s.commits += int(commit)
            s.reads += int(read)
            s.by_op[op] = s.by_op.get(op, 0) + calls

    def _count_batch(self, ops: Sequence[str]) -> None:
        """One batch: one pipelined round trip and one commit for all of its ops."""
        with self._stats_lock:
            s = self._stats
            s.round_trips += 1
            s.commits += 1
            for op in ops:
                s.by_op[op] = s.by_op.get(op, 0) + 1

    def _lane_connection(self) -> Any:
        self._ensure_open("batch")
        return self._pool.connection()

    def _one(self, conn: Conn, op: str, query: str, params: dict[str, Any], *, write: bool) -> Row | None:
        row = conn.execute(query, params).fetchone()
        self._count(op, commit=write, read=not write)
        return row

    def _all(self, conn: Conn, op: str, query: str, params: dict[str, Any], *, write: bool) -> list[Row]:
        rows = conn.execute(query, params).fetchall()
        self._count(op, commit=write, read=not write)
        return list(rows)

    def _on_error(self, err: base.StoreError) -> None:
        now = time.monotonic()
        cls = type(err).__name__
        if isinstance(err, (base.ConnectionLost, base.Contention, base.StatementTimeout)):
            if now - self._last_warning.get(cls, -_WARN_EVERY_S) >= _WARN_EVERY_S:
                self._last_warning[cls] = now
                _log.warning("PostgreSQL system database: %s during %s; retrying", cls, err.op)
        if isinstance(err, base.ConnectionLost) and now - self._last_pool_check >= _POOL_CHECK_EVERY_S:
            self._last_pool_check = now
            threading.Thread(target=self._check_pool, name="dbos-pg-pool-check", daemon=True).start()
        if isinstance(err, (base.UniqueViolation, base.MissingReference)):
            _log.error("unexpected %s escaped %s: %s", cls, err.op, err)

    def _check_pool(self) -> None:
        try:
            self._pool.check()
        except Exception:
            pass

    def _ensure_open(self, op: str) -> None:
        if self._closed:
            raise base.UnknownStorageError("the system store is closed", op=op)

    def _pooled(self, op: str, fn: Callable[[Conn], T]) -> T:
        def attempt(_: int) -> T:
            self._ensure_open(op)
            with self._pool.connection() as conn:
                return fn(conn)

        return with_retries(op, attempt, on_error=self._on_error)

    def _direct(self, op: str, fn: Callable[[Conn], T]) -> T:
        """Executor bookkeeping on the liveness connection, which never waits for the pool (07 §8 rule 6)."""
        live = self._live
        if live is None:
            return self._pooled(op, fn)

        def attempt(_: int) -> T:
            self._ensure_open(op)
            return live.run(fn)

        return with_retries(op, attempt, on_error=self._on_error)

    def _publish(self, changes: Sequence[base.Change]) -> None:
        for change in changes:
            self.changes.publish(change)

    # workflows -------------------------------------------------------------------------------------------------

    def insert_workflow(
        self, new: base.NewWorkflow, *, parent: base.ParentLink | None = None
    ) -> base.InsertResult:
        records.check_new(new)
        params = insert_params(new)
        result: base.InsertResult
        if parent is None:
            result = self._batcher.write(
                PgWrite(
                    "insert_workflow",
                    new.workflow_id,
                    self._sql.insert_workflow,
                    params,
                    _created,
                    lambda: self._pooled(
                        "insert_workflow", lambda conn: self._insert_once(conn, params, new)
                    ),
                )
            )
        else:
            records.check_parent(parent)
            params |= {
                "p_workflow_id": parent.fence.workflow_id,
                "p_claim_token": parent.fence.claim_token,
                "p_step_id": parent.step_id,
                "p_step_name": parent.step_name,
                "p_write_token": parent.write_token,
            }
            result = self._pooled("insert_workflow", lambda conn: self._insert_child_once(conn, params, new))
        if result.kind == "created" and result.status in ("ENQUEUED", "DELAYED"):
            self.changes.publish(base.Change("queue", (result.queue_name or base.INTERNAL_QUEUE,)))
        return result

    def _refused(self, rows: list[Row], new: base.NewWorkflow) -> base.InsertResult | None:
        """After a refused insert, from `conflict_rows`: the row holding the ID (checked first), else the holder
        of the dedup binding; None if neither exists any more (deleted meanwhile: retry the insert)."""
        if not rows:
            return None
        r = rows[0]
        if r[0] == 0:
            return insert_result(records.existing_kind(new, r[9], (r[2], r[3], r[4])), r[1:])
        return insert_result(records.dedup_kind(new, (r[2], r[3], r[4])), r[1:])

    def _vanished(self, new: base.NewWorkflow) -> base.StoreError:
        return base.UnknownStorageError(
            f"the insert of workflow {new.workflow_id!r} was refused, but neither its ID nor its deduplication "
            f"ID is held (after {_DEDUP_RETRIES} retries)",
            op="insert_workflow",
        )

    def _insert_once(self, conn: Conn, params: dict[str, Any], new: base.NewWorkflow) -> base.InsertResult:
        for _ in range(1 + _DEDUP_RETRIES):
            row = self._one(conn, "insert_workflow", self._sql.insert_workflow, params, write=True)
            assert row is not None
            if row[2] is not None:
                return insert_result("created", row[2:])
            rows = self._all(conn, "insert_workflow", self._sql.conflict_rows, params, write=False)
            result = self._refused(rows, new)
            if result is not None:
                return result
        raise self._vanished(new)

    def _insert_child_once(
        self, conn: Conn, params: dict[str, Any], new: base.NewWorkflow
    ) -> base.InsertResult:
        """One transaction in pipeline mode: BEGIN and the statement travel together, then COMMIT (2 round
        trips on the happy path). psycopg's `transaction()` would add a synchronous BEGIN."""
        for _ in range(1 + _DEDUP_RETRIES):
            try:
                with conn.pipeline():
                    conn.execute("BEGIN")
                    result, commit = self._insert_child_tx(conn, params, new)
                    conn.execute("COMMIT" if commit else "ROLLBACK")
            except BaseException:
                abort(conn)
                raise
            self._count("insert_workflow", commit=commit)
            if result is not None:
                return result
        raise self._vanished(new)

    def _insert_child_tx(
        self, conn: Conn, params: dict[str, Any], new: base.NewWorkflow
    ) -> tuple[base.InsertResult | None, bool]:
        """Inside the transaction: child insert and parent checkpoint in one statement, then the verdict and
        whether to commit (None: the conflicting rows vanished; roll back and retry)."""
        row = conn.execute(self._sql.insert_child, params).fetchone()
        self._count("insert_workflow", round_trips=1, calls=0)
        assert row is not None
        fence_ok, step_inserted = bool(row[0]), bool(row[1])
        if not fence_ok:
            return base.InsertResult("fenced", new.workflow_id), False
        if not step_inserted:  # the parent's step exists: this start's (an earlier attempt), or another's
            step = conn.execute(self._sql.parent_step, params).fetchone()
            self._count("insert_workflow", round_trips=1, read=True, calls=0)
            if step is None or step[0] != params["p_write_token"]:
                return base.InsertResult("parent_conflict", new.workflow_id), False
        if row[2] is not None:
            return insert_result("created", row[2:]), True
        rows = conn.execute(self._sql.conflict_rows, params).fetchall()
        self._count("insert_workflow", round_trips=1, read=True, calls=0)
        result = self._refused(list(rows), new)
        if result is None:
            return None, False
        if result.kind not in ("created", "existing", "dedup_existing"):
            return result, False  # id_conflict, dedup_rejected, dedup_conflict write nothing
        if result.kind == "dedup_existing":
            # The parent's step names the workflow its handle refers to: the holder.
            point = params | {"holder_id": result.workflow_id}
            conn.execute(self._sql.dedup_parent_step, point)
            self._count("insert_workflow", round_trips=0, calls=0)  # rides along with COMMIT
        return result, True

    def get_workflow(
        self, workflow_id: str, *, load_input: bool = True, load_output: bool = True
    ) -> base.WorkflowRow | None:
        tc.check_id(workflow_id)
        query = self._sql.get_workflow[(load_input, load_output)]
        row = self._pooled(
            "get_workflow",
            lambda conn: self._one(conn, "get_workflow", query, {"workflow_id": workflow_id}, write=False),
        )
        return None if row is None else workflow_row(row)

    def list_queued(self, queue_name: str | None, *, limit: int | None = None) -> list[base.WorkflowRow]:
        records.check_opt_name(queue_name, "queue name")
        query = self._list_queued_sql
        params = {"q": queue_name, "limit": limit}
        rows = self._pooled(
            "list_queued", lambda conn: self._all(conn, "list_queued", query, params, write=False)
        )
        return [workflow_row(r) for r in rows]

    def get_states(self, workflow_ids: Sequence[str]) -> dict[str, base.WorkflowState]:
        ids = list(dict.fromkeys(workflow_ids))
        for wid in ids:
            tc.check_id(wid)
        if not ids:
            return {}
        rows = self._pooled(
            "get_states",
            lambda conn: self._all(conn, "get_states", self._sql.get_states, {"ids": ids}, write=False),
        )
        found = {r[0]: base.WorkflowState(True, *r[1:]) for r in rows}
        return {wid: found.get(wid, base.WorkflowState(False)) for wid in ids}

    def record_outcome(self, fence: base.Fence, outcome: base.Outcome) -> base.OutcomeResult:
        records.check_fence(fence)
        records.check_serializer(outcome.output if outcome.output is not None else outcome.error)
        params = {
            "workflow_id": fence.workflow_id,
            "claim_token": fence.claim_token,
            "status": outcome.status,
            "output": records.text_of(outcome.output),
            "error": records.text_of(outcome.error),
            "serializer": records.serializer_of(outcome.output, outcome.error),
        }
        written: tuple[base.OutcomeResult, str | None] = self._batcher.write(
            PgWrite(
                "record_outcome",
                fence.workflow_id,
                self._sql.record_outcome,
                params,
                _outcome_applied,
                lambda: self._pooled("record_outcome", lambda conn: self._outcome_once(conn, params)),
            )
        )
        result, queue_name = written
        if result.applied:
            changes = [base.Change("wf", (fence.workflow_id,))]
            if queue_name is not None:
                changes.append(base.Change("queue", (queue_name,)))
            self._publish(changes)
        return result

    def _outcome_once(self, conn: Conn, params: dict[str, Any]) -> tuple[base.OutcomeResult, str | None]:
        row = self._one(conn, "record_outcome", self._sql.record_outcome, params, write=True)
        if row is not None:
            return base.OutcomeResult(True, row[0]), row[1]
        cur = self._one(conn, "record_outcome", self._sql.outcome_after_refusal, params, write=False)
        if cur is None:
            return base.OutcomeResult(False, None), None
        return records.refused_outcome(cur[0], cur[1], params["status"], params["claim_token"]), None

    # steps -----------------------------------------------------------------------------------------------------

    def load_checkpoints(self, workflow_ids: Sequence[str]) -> dict[str, dict[int, base.StepRow]]:
        ids = list(dict.fromkeys(workflow_ids))
        for wid in ids:
            tc.check_id(wid)
        out: dict[str, dict[int, base.StepRow]] = {wid: {} for wid in ids}
        if not ids:
            return out
        rows = self._pooled(
            "load_checkpoints",
            lambda conn: self._all(
                conn, "load_checkpoints", self._sql.load_checkpoints, {"ids": ids}, write=False
            ),
        )
        for r in rows:
            out[r[0]][r[1]] = step_row(r)
        return out

    def record_step(self, fence: base.Fence, step: base.NewStep) -> base.Write:
        records.check_fence(fence)
        records.check_step(step)
        params = records.step_params(fence, step)

        def once(conn: Conn) -> base.Write:
            if self._one(conn, "record_step", self._sql.record_step, params, write=True) is not None:
                return base.Write.APPLIED
            row = self._one(conn, "record_step", self._sql.step_after_refusal, params, write=False)
            return records.step_verdict(row, step.write_token)

        write = PgWrite(
            "record_step",
            fence.workflow_id,
            self._sql.record_step,
            params,
            _step_applied,
            lambda: self._pooled("record_step", once),
        )
        result: base.Write = self._batcher.write(write)
        return result

    def record_step_in(self, dbapi_conn: Any, fence: base.Fence, step: base.NewStep) -> base.Write:
        records.check_fence(fence)
        records.check_step(step)
        params = records.step_params(fence, step)
        conn = unwrap_dbapi(dbapi_conn)
        try:
            cur = conn.cursor()
            cur.execute(self._sql.record_step, params)
            if cur.fetchone() is not None:
                result = base.Write.APPLIED
            else:
                cur.execute(self._sql.step_after_refusal, params)
                result = records.step_verdict(cur.fetchone(), step.write_token)
        except psycopg.Error as exc:
            raise classify_pg_error(exc, "record_step_in") from exc
        self._count("record_step_in", round_trips=1 if result is base.Write.APPLIED else 2)
        return result

    def list_steps(
        self,
        workflow_id: str,
        *,
        load_output: bool = True,
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[base.StepRow]:
        tc.check_id(workflow_id)
        mc.check_opt_count(limit, "limit")
        mc.check_opt_count(offset, "offset")

        def once(conn: Conn) -> list[base.StepRow]:
            rows = pm.list_steps(conn, self._msql, workflow_id, load_output, limit, offset)
            self._count("list_steps", read=True)
            return rows

        return self._pooled("list_steps", once)

    # claims ----------------------------------------------------------------------------------------------------

    def claim(self, req: base.ClaimRequest) -> base.ClaimResult:
        """One transaction (03 §21 rule 4, 07 §6.4): a single autocommit statement, or, with a shared budget,
        BEGIN + the queue's advisory lock + the statement + COMMIT pipelined in one round trip."""
        records.check_claim(req)
        params = claim_params(req)
        prune = logs_claims(req) and self._pruner.due(req.queue_name)
        query = self._qsql.claim(claim_shape(req, prune=prune))
        lock_key = advisory_key(self.schema, "claim", req.queue_name) if has_shared_budget(req) else None

        def attempt(n: int) -> list[Row]:
            self._ensure_open("claim")
            with self._pool.connection() as conn:
                if n > 0:  # an earlier attempt may have committed: its rows carry the batch token
                    rows = self._all(conn, "claim", self._qsql.claim_readback, params, write=False)
                    if rows:
                        return rows
                if lock_key is None:
                    return self._all(conn, "claim", query, params, write=True)
                rows = run_locked(conn, lock_key, query, params)
                self._count("claim", commit=True)
                return rows

        rows = with_retries("claim", attempt, on_error=self._on_error)
        result, changes = claim_result(rows, req.queue_name)
        self._publish(changes)
        return result

    def promote_delayed(self, *, limit: int = 1000) -> base.PromoteResult:
        params = {"limit": max(0, limit), "internal": base.INTERNAL_QUEUE}
        row = self._pooled(
            "promote_delayed",
            lambda conn: self._one(conn, "promote_delayed", self._qsql.promote, params, write=True),
        )
        result = promote_result(row)
        self._publish([base.Change("queue", (q,)) for q in sorted({q for _, q in result.promoted})])
        return result

    def queue_stats(self, queue_name: str | None) -> list[base.QueueStatsRow]:
        records.check_opt_name(queue_name, "queue name")
        query = self._qsql.stats_all if queue_name is None else self._qsql.stats_one
        rows = self._pooled(
            "queue_stats",
            lambda conn: self._all(conn, "queue_stats", query, {"queue_name": queue_name}, write=False),
        )
        return stats_rows(rows)

    def release(self, fences: Sequence[base.Fence], *, refund_attempt: bool) -> list[str]:
        ordered = sorted({(f.workflow_id, f.claim_token) for f in fences})
        for wid, token in ordered:
            records.check_fence(base.Fence(wid, token))
        if not ordered:
            return []
        params = {
            "ids": [wid for wid, _ in ordered],
            "tokens": [token for _, token in ordered],
            "refund": refund_attempt,
            "internal": base.INTERNAL_QUEUE,
        }
        rows = self._pooled(
            "release", lambda conn: self._all(conn, "release", self._sql.release, params, write=True)
        )
        released = set(self._requeued(rows))
        return [wid for wid in dict.fromkeys(f.workflow_id for f in fences) if wid in released]

    def _requeued(self, rows: list[Row]) -> list[str]:
        """IDs of re-enqueued rows (workflow_id, queue_name, ...), publishing one `queue` change per queue."""
        ids = [r[0] for r in rows if r[0] is not None]
        queues = sorted({r[1] for r in rows if r[0] is not None})
        self._publish([base.Change("queue", (q,)) for q in queues])
        return ids

    # executors -------------------------------------------------------------------------------------------------

    def register_executor(self, reg: base.ExecutorRegistration) -> base.Registration:
        records.check_registration(reg)
        params = {
            "executor_id": reg.executor_id,
            "application_name": reg.application_name,
            "application_version": reg.application_version,
            "hostname": reg.hostname,
            "host_identity": reg.host_identity,
            "pid": reg.pid,
            "process_start": reg.process_start,
            "heartbeat_interval_ms": reg.heartbeat_interval_ms,
            "lease_ms": reg.lease_ms,
            "queues": reg.queues_json,
            "version_id": records.new_version_id(),
        }
        row = self._direct("register_executor", lambda conn: self._register_once(conn, params))
        incarnation = int(row[0])
        registration = base.Registration(incarnation, list(row[1] or []), bool(row[2]), int(row[3]), row[5])
        if self._live is not None:
            key = advisory_key(self.schema, "liveness", reg.executor_id, str(incarnation))
            self._registration = (reg.executor_id, incarnation, key)
            self._direct("register_executor", self._take_liveness_lock)
        self.changes.publish(base.Change("ctl", ("executors",)))
        return registration

    def _register_once(self, conn: Conn, params: dict[str, Any]) -> Row:
        for attempt in range(_REGISTER_ATTEMPTS):
            try:
                row = self._one(conn, "register_executor", self._sql.register_executor, params, write=True)
                assert row is not None
                return row
            except psycopg.errors.UniqueViolation:
                # A concurrent registration of the same ID took the same incarnation number: recount.
                if attempt + 1 == _REGISTER_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    def _take_liveness_lock(self, conn: Conn) -> None:
        """Take this incarnation's advisory lock on the liveness connection and record its key (07 §6.5)."""
        if self._registration is None:
            return
        executor_id, incarnation, key = self._registration
        if self._held_key is not None and self._held_key != key and not conn.closed:
            conn.execute("SELECT pg_advisory_unlock(%s)", (self._held_key,))
            self._count("liveness_lock")
        self._held_key = None
        params = {"key": key, "executor_id": executor_id, "incarnation": incarnation}
        row = self._one(conn, "liveness_lock", self._sql.take_liveness_lock, params, write=True)
        if row is not None and row[0]:
            self._held_key = key
        else:
            _log.warning(
                "liveness lock of executor %r is already held (hash collision?); peers use leases",
                executor_id,
            )

    def _on_live(self, conn: Conn) -> None:
        """A (re)connected liveness connection: the lock belongs to the session, so take it again."""
        self._held_key = None
        if self._registration is not None:
            self._take_liveness_lock(conn)

    def heartbeat(
        self, executor_id: str, incarnation: int, *, queues_json: str | None = None
    ) -> base.Heartbeat:
        tc.check_name(executor_id, "executor ID")
        records.check_queues_json(queues_json)
        params = {"executor_id": executor_id, "incarnation": incarnation, "queues": queues_json}

        def once(conn: Conn) -> Row:
            t0 = time.time()
            row = self._one(conn, "heartbeat", self._sql.heartbeat, params, write=True)
            assert row is not None
            self._clock.add(int(row[2]), t0, time.time())
            return row

        row = self._direct("heartbeat", once)
        return base.Heartbeat(bool(row[0]), bool(row[1]), int(row[2]))

    def find_dead(self, application_name: str | None) -> list[base.DeadCandidate]:
        records.check_opt_name(application_name, "application name")
        live = self._live

        def once(conn: Conn) -> list[Row]:
            # On the liveness connection itself: the query succeeding proves that the session whose uptime
            # licenses lock-dead verdicts is still the one that is up (07 §6.5 rule 2).
            uptime = live.uptime_ms() if live is not None else -1
            params = {"application_name": application_name, "uptime_ms": uptime}
            return self._all(conn, "find_dead", self._sql.find_dead, params, write=False)

        rows = self._direct("find_dead", once)
        n = len(EXECUTOR_COLUMNS)
        return [base.DeadCandidate(executor_row(r), bool(r[n]) or bool(r[n + 1])) for r in rows]

    def take_over(self, executor_id: str, incarnation: int, *, require_expired: bool) -> list[str]:
        tc.check_name(executor_id, "executor ID")
        params = {
            "executor_id": executor_id,
            "incarnation": incarnation,
            "require_expired": require_expired,
            "internal": base.INTERNAL_QUEUE,
        }
        rows = self._direct(
            "take_over", lambda conn: self._all(conn, "take_over", self._sql.take_over, params, write=True)
        )
        self.changes.publish(base.Change("ctl", ("executors",)))
        return self._requeued(rows)

    def requeue_orphans(self, application_name: str | None) -> list[str]:
        records.check_opt_name(application_name, "application name")
        params = {"application_name": application_name, "internal": base.INTERNAL_QUEUE}
        rows = self._pooled(
            "requeue_orphans",
            lambda conn: self._all(conn, "requeue_orphans", self._sql.requeue_orphans, params, write=True),
        )
        return self._requeued(rows)

    def mark_stopped(self, executor_id: str, incarnation: int) -> None:
        tc.check_name(executor_id, "executor ID")
        params = {"executor_id": executor_id, "incarnation": incarnation}
        row = self._direct(
            "mark_stopped",
            lambda conn: self._one(conn, "mark_stopped", self._sql.mark_stopped, params, write=True),
        )
        if row is not None:
            self.changes.publish(base.Change("ctl", ("executors",)))

    def list_executors(self, *, include_inactive: bool) -> list[base.ExecutorRow]:
        query = self._sql.list_all_executors if include_inactive else self._sql.list_executors
        rows = self._pooled(
            "list_executors", lambda conn: self._all(conn, "list_executors", query, {}, write=False)
        )
        return [executor_row(r) for r in rows]


# The result of a batched statement that applied; None sends the op to run alone (refusal reads, retries).


def _created(row: Row | None) -> base.InsertResult | None:
    return insert_result("created", row[2:]) if row is not None and row[2] is not None else None


def _outcome_applied(row: Row | None) -> tuple[base.OutcomeResult, str | None] | None:
    return (base.OutcomeResult(True, row[0]), row[1]) if row is not None else None


def _step_applied(row: Row | None) -> base.Write | None:
    return base.Write.APPLIED if row is not None else None
