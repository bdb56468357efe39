"""The `SystemStore` protocol, its records, the change feed and the storage error taxonomy.

The engine, the client, the CLI and the dashboard import only this module and `open_system_store`.
Backends (`sqlite.py`, `postgres.py`) implement every method with identical observable behaviour;
`tests/store/` runs one conformance suite against both.

Conventions:
- times are epoch milliseconds (`int`), computed by the database clock where a rule says "now";
- payloads are opaque text plus the name of the serializer that wrote them (the store never
  serializes anything);
- expected outcomes (`Write.CONFLICT`, `existing`, `missing`...) are results, never exceptions;
  exceptions are reserved for `StoreError` subclasses.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from .store_types import (
    INTERNAL_QUEUE as INTERNAL_QUEUE,
)
from .store_types import (
    TERMINAL_STATUSES as TERMINAL_STATUSES,
)
from .store_types import (
    AppVersionRow as AppVersionRow,
)
from .store_types import (
    CancelReason as CancelReason,
)
from .store_types import (
    ClaimedWorkflow as ClaimedWorkflow,
)
from .store_types import (
    ClaimRequest as ClaimRequest,
)
from .store_types import (
    ClaimResult as ClaimResult,
)
from .store_types import (
    ConsumeResult as ConsumeResult,
)
from .store_types import (
    DeadCandidate as DeadCandidate,
)
from .store_types import (
    EventRead as EventRead,
)
from .store_types import (
    ExecutorRegistration as ExecutorRegistration,
)
from .store_types import (
    ExecutorRow as ExecutorRow,
)
from .store_types import (
    ExportBundle as ExportBundle,
)
from .store_types import (
    Fence as Fence,
)
from .store_types import (
    ForkSpec as ForkSpec,
)
from .store_types import (
    Heartbeat as Heartbeat,
)
from .store_types import (
    ImportResult as ImportResult,
)
from .store_types import (
    InsertKind as InsertKind,
)
from .store_types import (
    InsertResult as InsertResult,
)
from .store_types import (
    MigrationReport as MigrationReport,
)
from .store_types import (
    NewMessage as NewMessage,
)
from .store_types import (
    NewStep as NewStep,
)
from .store_types import (
    NewWorkflow as NewWorkflow,
)
from .store_types import (
    Outcome as Outcome,
)
from .store_types import (
    OutcomeResult as OutcomeResult,
)
from .store_types import (
    ParentLink as ParentLink,
)
from .store_types import (
    Payload as Payload,
)
from .store_types import (
    PromoteResult as PromoteResult,
)
from .store_types import (
    QueueDefRow as QueueDefRow,
)
from .store_types import (
    QueueStatsRow as QueueStatsRow,
)
from .store_types import (
    RateLimit as RateLimit,
)
from .store_types import (
    Registration as Registration,
)
from .store_types import (
    ResumeResult as ResumeResult,
)
from .store_types import (
    SendResult as SendResult,
)
from .store_types import (
    StepRow as StepRow,
)
from .store_types import (
    StoreSettings as StoreSettings,
)
from .store_types import (
    StoreStats as StoreStats,
)
from .store_types import (
    StreamRead as StreamRead,
)
from .store_types import (
    StreamWrite as StreamWrite,
)
from .store_types import (
    WorkflowQuery as WorkflowQuery,
)
from .store_types import (
    WorkflowRow as WorkflowRow,
)
from .store_types import (
    WorkflowState as WorkflowState,
)
from .store_types import (
    WorkflowStatusName as WorkflowStatusName,
)
from .store_types import (
    Write as Write,
)
from .store_types import (
    digest as digest,
)
from .store_types import (
    message_id_for_key as message_id_for_key,
)
from .store_types import (
    topic_digest as topic_digest,
)

_log = logging.getLogger("dbos")

# ---------------------------------------------------------------------------------------------------------------
# Change feed
# ---------------------------------------------------------------------------------------------------------------

ChangeKind = Literal["wf", "msg", "evt", "stream", "queue", "ctl", "cancel", "all"]
# "cancel" (workflow_id,): the workflow was cancelled or deleted; executions of it must stop.


@dataclass(frozen=True, slots=True)
class Change:
    kind: ChangeKind
    key: tuple[str | None, ...] = ()


class ChangeFeed:
    """Fan-out of changes to subscribers. Backends call `publish` after commit (in-process) and from
    their cross-process listener thread. Callbacks must not block; one that raises is logged once."""

    def __init__(self) -> None:
        self._subs: dict[int, Callable[[Change], None]] = {}
        self._next = 0
        self._lock = threading.Lock()
        self._failed: set[int] = set()

    def subscribe(self, callback: Callable[[Change], None]) -> Callable[[], None]:
        with self._lock:
            token = self._next
            self._next += 1
            self._subs[token] = callback

        def unsubscribe() -> None:
            with self._lock:
                self._subs.pop(token, None)

        return unsubscribe

    def publish(self, change: Change) -> None:
        for token, cb in list(self._subs.items()):
            try:
                cb(change)
            except Exception:
                if token not in self._failed:
                    self._failed.add(token)
                    _log.exception("change-feed subscriber raised; it stays subscribed")


# ---------------------------------------------------------------------------------------------------------------
# Storage errors (07 §12.1). Backends classify every driver exception into exactly one of these.
# ---------------------------------------------------------------------------------------------------------------


class StoreError(Exception):
    """Base of the internal taxonomy; the driver exception is kept as `__cause__`."""

    def __init__(self, message: str, *, op: str | None = None, ambiguous: bool = False) -> None:
        super().__init__(message)
        self.op = op
        self.ambiguous = ambiguous


class ConnectionLost(StoreError):
    pass


class Contention(StoreError):
    pass


class StatementTimeout(StoreError):
    pass


class UniqueViolation(StoreError):
    pass


class MissingReference(StoreError):
    pass


class StorageFull(StoreError):
    pass


class ReadOnly(StoreError):
    pass


class SchemaMismatch(StoreError):
    pass


class Corrupt(StoreError):
    pass


class InvalidText(StoreError):
    pass


class UnknownStorageError(StoreError):
    pass


class SchemaTooNew(StoreError):
    """The database schema is newer than this library and not compatible with it."""


# ---------------------------------------------------------------------------------------------------------------
# The protocol
# ---------------------------------------------------------------------------------------------------------------


class SystemStore(Protocol):
    backend: Literal["sqlite", "postgres"]
    changes: ChangeFeed
    url: str

    # lifecycle -----------------------------------------------------------------------------------------------
    def migrate(self) -> MigrationReport: ...
    def check_schema(
        self,
    ) -> Literal["current", "missing", "behind", "ahead_compatible", "ahead_incompatible"]: ...
    def now_ms(self) -> int: ...
    def stats(self) -> StoreStats: ...
    def close(self, timeout_s: float = 5.0) -> None: ...

    # workflows -----------------------------------------------------------------------------------------------
    def insert_workflow(self, new: NewWorkflow, *, parent: ParentLink | None = None) -> InsertResult:
        """Create the row or report the existing one, atomically. With `parent`, the parent's checkpoint
        (pointing at the child, `child_workflow_id`) is written in the same transaction, fenced on the parent.
        `existing` with a parent still writes the checkpoint. `fenced`/`parent_conflict` write nothing.

        The ID is checked first, then the deduplication binding (03 §7): a row with a `deduplication_id` holds
        (`dedup_queue` = its queue_name at insert, `deduplication_id`) through the unique index for as long as
        it exists. When the binding is held, nothing is written and the result names the holder: kind
        `dedup_conflict` if the holder is another function, else `dedup_rejected` under policy "reject", else
        `dedup_existing` (with a parent, `dedup_existing` still writes the parent checkpoint, pointing at the
        holder). If the holder vanished between the failed insert and the lookup, retry (at most 3 times).
        ENQUEUED rows emit `queue`; DELAYED ones emit `queue` too (the dispatcher re-arms its delay timer)."""
        ...

    def get_workflow(
        self, workflow_id: str, *, load_input: bool = True, load_output: bool = True
    ) -> WorkflowRow | None: ...
    def get_states(self, workflow_ids: Sequence[str]) -> dict[str, WorkflowState]: ...
    def record_outcome(self, fence: Fence, outcome: Outcome) -> OutcomeResult:
        """Applies only while the row is PENDING and carries `fence.claim_token`. Emits `wf`."""
        ...

    def list_workflows(self, query: WorkflowQuery) -> list[WorkflowRow]:
        """Rows matching every filter of `query`, in (created_at, workflow_id) order, after `query.after`,
        skipping `offset`, at most `limit`. Served by indexes: never a full scan for a limited page."""
        ...

    def cancel_workflows(
        self, workflow_ids: Sequence[str], *, cancel_children: bool, reason: CancelReason
    ) -> list[str]:
        """In one transaction, rows in PENDING, ENQUEUED, DELAYED or MAX_RECOVERY_ATTEMPTS_EXCEEDED become
        CANCELLED with completed_at = now and cancel_reason; the claim token is kept. With `cancel_children`,
        every non-terminal descendant (through parent_workflow_id, any depth) too. Unknown IDs are ignored.
        Returns the IDs changed. Emits `wf` and `cancel` per ID, and `queue` per affected queue."""
        ...

    def cancel_expired(self, application_name: str | None, *, limit: int = 1000) -> list[str]:
        """Cancel (reason `deadline`) up to `limit` PENDING, ENQUEUED or DELAYED rows whose deadline_ms <= now,
        of this application or of none (all rows when `application_name` is None). Emits as cancel_workflows."""
        ...

    def next_deadline(self, application_name: str | None) -> int | None:
        """The earliest deadline_ms of a PENDING, ENQUEUED or DELAYED row in the same scope (deadline index)."""
        ...

    def resume_workflows(self, workflow_ids: Sequence[str], *, queue_name: str | None) -> ResumeResult:
        """Nothing changes if any ID is missing (`missing` names the first). Otherwise, in one transaction:
        CANCELLED, MAX_RECOVERY_ATTEMPTS_EXCEEDED, ENQUEUED and DELAYED rows become ENQUEUED on `queue_name`
        (None: the internal queue) with recovery_attempts 0 and deadline_ms, delay_until, output, error,
        outcome_serializer, cancel_reason, completed_at, dequeued_at and the owner (executor_id, incarnation,
        claim_token, claim_batch) cleared; dedup_queue, deduplication_id and timeout_ms stay; steps_seeded
        is set (the next claim must load checkpoints although recovery_attempts is 0 again). PENDING rows whose
        owner incarnation is not ALIVE with an unexpired lease (or is unknown) are re-enqueued on their own
        queue (else the internal queue), owner cleared, recovery_attempts 0. SUCCESS and ERROR rows, and PENDING
        rows of a live owner, are unchanged. Emits `queue` per affected queue and `wf` per resumed ID."""
        ...

    def fork_workflow(self, spec: ForkSpec) -> InsertResult:
        """In one transaction on one snapshot: `source_missing` if the source does not exist; `existing` if
        `new_id` exists and its forked_from is the source (nothing written); `id_conflict` if it exists otherwise.
        Else insert `new_id` ENQUEUED on spec.queue_name (None: internal queue) with spec.partition_key, copying
        name, class_name, config_name, inputs, receiver, inputs_serializer, authenticated_user/roles,
        assumed_role and application_name; application_version, timeout_ms from the spec; no deadline, dedup,
        priority or parent; forked_from = source; steps_seeded = true; recovery_attempts 0. Copy the steps with
        step_id < start_step (child_workflow_id mapped through replacement_children), event_history entries
        with step_id < start_step, events = the copied history's latest (largest step_id) value per key, and
        stream entries with writer_step_id < start_step with their offsets. Set the source's was_forked_from.
        Messages are not copied. Emits `queue`."""
        ...

    def delete_workflows(
        self, workflow_ids: Sequence[str], *, delete_children: bool, only_terminal: bool = False
    ) -> list[str]:
        """Delete the rows (and with `delete_children` every descendant, any depth) with their steps, messages,
        events, event history and streams, in one transaction. With `only_terminal`, a listed ID's tree is
        deleted only if every row it would delete is terminal; otherwise nothing of that tree. Unknown IDs are
        ignored. Returns the deleted IDs (descendants included). Emits `wf` and `cancel` per ID, `queue` per
        queue that had an active deleted row."""
        ...

    def gc_select(
        self,
        application_name: str | None,
        *,
        cutoff_ms: int | None,
        keep_last: int | None,
        limit: int = 10_000,
    ) -> list[str]:
        """Roots of eligible trees (02 §10 rule 1), oldest first, whose trees total at most `limit` workflows
        (a single larger tree alone). Scope: rows of the application or of none (all when None). A workflow
        qualifies when terminal, created_at < cutoff_ms (if given) and not among the `keep_last` most recently
        created rows of the scope (all statuses). A root (no parent, or a parent that no longer exists) is
        eligible when it and all its descendants qualify."""
        ...

    def prune_executors(self, before_ms: int) -> int:
        """Delete DEAD and STOPPED executor rows that own no PENDING workflow and last heartbeated before
        `before_ms`, and queue_claims rows older than 86,400 s. Returns the executor rows deleted."""
        ...

    def export_workflows(self, workflow_ids: Sequence[str], *, include_children: bool) -> ExportBundle:
        """One read snapshot of the listed workflows (and every descendant), in created order; unknown IDs
        are skipped. See `ExportBundle`; messages carry their consumed flag."""
        ...

    def import_workflows(self, bundle: ExportBundle, *, creator_token: str) -> ImportResult:
        """All or nothing: if an ID exists (`id_conflict`) or a (queue, deduplication_id) binding is held
        (`dedup_conflict`), write nothing. PENDING rows are imported ENQUEUED on their own queue (else internal)
        with no owner; everything else keeps its status; steps_seeded = true; seq is new; every other column,
        including timestamps and stream offsets, is kept. Emits `queue`."""
        ...

    def try_maintenance_lease(self, name: str, holder: str, ttl_ms: int) -> bool:
        """Compare-and-set on maintenance_leases: True (and expires_at = now + ttl) if the lease is free,
        expired, or already held by `holder`."""
        ...

    # steps ---------------------------------------------------------------------------------------------------
    def load_checkpoints(self, workflow_ids: Sequence[str]) -> dict[str, dict[int, StepRow]]: ...
    def record_step(self, fence: Fence, step: NewStep) -> Write: ...
    def record_step_in(self, dbapi_conn: Any, fence: Fence, step: NewStep) -> Write:
        """Same as record_step, but inside the caller's open transaction on a DB-API connection to this
        database (a `@DBOS.transaction` sharing the system database). Does not commit."""
        ...

    def list_steps(
        self,
        workflow_id: str,
        *,
        load_output: bool = True,
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[StepRow]:
        """Checkpoints ordered by step_id; payloads None unless `load_output`; [] for an unknown workflow."""
        ...

    # messages and events (04) ---------------------------------------------------------------------------------
    def send_messages(
        self, msgs: Sequence[NewMessage], *, send_to_forks: bool, checkpoint: tuple[Fence, NewStep] | None
    ) -> SendResult:
        """In one transaction. With `checkpoint`: FENCED if the fence fails; if the step is already recorded,
        APPLIED (same write token) or CONFLICT (another), and nothing else is written. If any destination is
        missing: `missing` names the first, nothing is written (not even the checkpoint). Else insert every
        message (seq assigned in list order; a message_id that exists already is a silent no-op), with
        `send_to_forks` also a copy to every workflow forked from the destination directly or transitively
        (message_id "f:" + digest(fork_id, original message_id)), then the checkpoint. Emits `msg`
        (destination_id, topic_digest) per destination and topic written."""
        ...

    def consume_message(self, fence: Fence, step: NewStep, topic: str | None) -> ConsumeResult:
        """In one transaction, fenced: if `step` (the recv step, output None) is already recorded, return it and
        consume nothing (APPLIED for my write token, CONFLICT for another). Else mark the oldest (by seq)
        unconsumed message of (fence.workflow_id, topic) consumed (consumed_at = now) and record `step` with the
        message's payload and serializer as its output; return that step row. No message: write nothing, return
        APPLIED with step None."""
        ...

    def set_event(
        self, fence: Fence, key: str, value: Payload, *, history_step_id: int, checkpoint: NewStep | None
    ) -> Write:
        """In one transaction, fenced: with `checkpoint` already recorded, APPLIED/CONFLICT and nothing written.
        Else upsert events (workflow, key_digest = digest(key)) with the value, upsert event_history
        (workflow, history_step_id, key_digest) (a re-executed step overwrites its entry), and record the
        checkpoint. Emits `evt` (workflow_id, key_digest)."""
        ...

    def get_event(self, workflow_id: str, key: str) -> EventRead:
        """The current value of (workflow, key) and the workflow's state, from one snapshot."""
        ...

    def get_all_events(self, workflow_id: str) -> dict[str, Payload]:
        """Every key's current value ({} for an unknown workflow)."""
        ...

    def write_stream(
        self,
        fence: Fence,
        key: str,
        value: Payload | None,
        *,
        writer_step_id: int,
        step_seq: int | None,
        checkpoint: NewStep | None,
    ) -> StreamWrite:
        """Append to stream (fence.workflow_id, key) in one transaction, fenced; `value` None appends the end
        marker (is_end, value NULL). With `checkpoint` already recorded: APPLIED/CONFLICT, nothing written. With
        `step_seq` (a write from a step): if (workflow, writer_step_id, key_digest, step_seq) exists, a no-op that
        returns APPLIED and that row's offset. If the stream has its end marker: nothing written, closed=True
        (APPLIED). Else write at the next gapless offset (0-based; retry internally on an offset collision), then
        the checkpoint. key_digest = digest(key). Emits `stream` (workflow_id, key_digest)."""
        ...

    def read_stream(self, workflow_id: str, key: str, *, from_offset: int, limit: int = 1000) -> StreamRead:
        """Up to `limit` values at offsets >= from_offset in order (stopping before the end marker), the end
        marker's offset, and the writer's state, from one snapshot (the state read before the values)."""
        ...

    # claims --------------------------------------------------------------------------------------------------
    def claim(self, req: ClaimRequest) -> ClaimResult:
        """Claim ENQUEUED rows of `req.queue_name` whose name is registered, oldest first. Each claimed row
        gets status PENDING, the owner, a fresh claim token, dequeued_at, recovery_attempts + 1, and
        deadline = COALESCE(deadline, now + timeout). Rows whose deadline passed become CANCELLED.
        Version gating (03 §13 rule 2): rows pinned to `req.application_version` are eligible; version-less
        rows only while no live executor of the application runs a newer version (by version_timestamp)."""
        ...

    def release(self, fences: Sequence[Fence], *, refund_attempt: bool) -> list[str]:
        """Put PENDING rows still carrying the token back to ENQUEUED (own queue, else internal queue)."""
        ...

    def promote_delayed(self, *, limit: int = 1000) -> PromoteResult:
        """DELAYED rows whose delay_until <= now become ENQUEUED (guarded on DELAYED). Emits `queue`."""
        ...

    def upsert_queue(
        self, name: str, config: str, *, overwrite: bool, application_name: str | None
    ) -> QueueDefRow:
        """Create the definition, or (only with `overwrite`) replace the config of an existing one (revision+1).
        Returns the row as stored. Emits `ctl` ("queues",) and `queue` (name,) when it wrote."""
        ...

    def update_queue(
        self, name: str, patch: Mapping[str, Any], validate: Callable[[Mapping[str, Any]], None]
    ) -> QueueDefRow | None:
        """In one write transaction: read the config, merge `patch`, call `validate(merged)` (it raises to refuse,
        leaving the row unchanged), write it with revision+1. None if the queue is not defined. Emits as upsert."""
        ...

    def get_queue(self, name: str) -> QueueDefRow | None: ...
    def list_queues(self) -> list[QueueDefRow]:
        """Every definition, ordered by name."""
        ...

    def delete_queue(self, name: str) -> bool:
        """True if a definition was deleted (workflows on the queue are untouched). Emits as upsert."""
        ...

    def set_queue_paused(self, name: str, paused: bool) -> None:
        """Idempotent; a pause row is independent of any definition. Emits `ctl` ("queues",) and `queue` (name,)."""
        ...

    def list_paused_queues(self) -> frozenset[str]: ...

    def list_queued(self, queue_name: str | None, *, limit: int | None = None) -> list[WorkflowRow]:
        """ENQUEUED, DELAYED and PENDING rows of queues (or one queue), in enqueue order, without payloads;
        served by the `active` index, never scanning terminal rows."""
        ...

    def queue_stats(self, queue_name: str | None) -> list[QueueStatsRow]:
        """Counts by status of every queue with ENQUEUED, DELAYED or PENDING rows (or just `queue_name`),
        ordered by name, from one snapshot, without scanning terminal rows."""
        ...

    # executors -----------------------------------------------------------------------------------------------
    def register_executor(self, reg: ExecutorRegistration) -> Registration:
        """A new ALIVE incarnation; in the same transaction the version is added to app_versions if absent,
        with a version_timestamp above every other version of the application (05 §7 rule 4)."""
        ...

    def heartbeat(self, executor_id: str, incarnation: int, *, queues_json: str | None = None) -> Heartbeat:
        """Renew the lease; `queues_json` (not None) also replaces the published queues (02 §12.1 rule 2)."""
        ...

    def find_dead(self, application_name: str | None) -> list[DeadCandidate]:
        """Incarnations of this application (or of none) that own PENDING rows and are STOPPED, DEAD or
        lease-expired (`certain=True`), plus ALIVE ones (`certain=False`) for the caller's pid probe."""
        ...

    def take_over(self, executor_id: str, incarnation: int, *, require_expired: bool) -> list[str]:
        """In one transaction: mark the incarnation DEAD (if `require_expired`, only if still STOPPED/DEAD or
        lease-expired) and re-enqueue its PENDING rows. Returns the re-enqueued IDs (empty if lost)."""
        ...

    def requeue_orphans(self, application_name: str | None) -> list[str]:
        """Re-enqueue PENDING rows that name no known executor incarnation."""
        ...

    def mark_stopped(self, executor_id: str, incarnation: int) -> None: ...
    def list_executors(self, *, include_inactive: bool) -> list[ExecutorRow]: ...

    # application versions (05 §7) -------------------------------------------------------------------------

    def list_app_versions(self, application_name: str | None) -> list[AppVersionRow]:
        """The registered versions of one application, newest `version_timestamp` first (ties: name, descending).
        Registration (`register_executor`) adds them."""
        ...

    def set_latest_app_version(self, application_name: str | None, version_name: str) -> bool:
        """Make a registered version the application's latest: its timestamp becomes the larger of now and one
        above every other version's. Publishes `Change("ctl", ("versions",))`. False if the version is unknown."""
        ...
