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

import enum
import hashlib
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

INTERNAL_QUEUE = "_dbos_internal_queue"

WorkflowStatusName = Literal[
    "PENDING", "ENQUEUED", "DELAYED", "SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"
]
TERMINAL_STATUSES = frozenset({"SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"})

_log = logging.getLogger("dbos")


def digest(*parts: str | None) -> str:
    """Lowercase hex of the first 16 bytes of SHA-256 over the parts (07 §3.1 rule 5)."""
    h = hashlib.sha256()
    for i, p in enumerate(parts):
        if i:
            h.update(b"\x00")
        h.update(b"\xff" if p is None else p.encode("utf-8"))
    return h.hexdigest()[:32]


# ---------------------------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Payload:
    text: str  # serialized value exactly as stored
    serializer: str  # name of the serializer that wrote it


@dataclass(frozen=True, slots=True)
class Fence:
    """One execution's claim: every write made for it is conditional on this token being current."""

    workflow_id: str
    claim_token: str


class Write(enum.Enum):
    APPLIED = "applied"  # durable (possibly by an earlier ambiguous attempt with the same write token)
    CONFLICT = "conflict"  # another writer recorded this key first
    FENCED = "fenced"  # the claim token is no longer current, or the workflow no longer exists


@dataclass(frozen=True, slots=True)
class NewWorkflow:
    workflow_id: str
    name: str
    class_name: str | None
    config_name: str | None
    inputs: Payload
    receiver: str | None  # serialized with the inputs' serializer
    status: Literal["PENDING", "ENQUEUED", "DELAYED"]
    owner: tuple[str, int, str] | None  # (executor_id, incarnation, claim_token); required iff PENDING
    creator_token: str  # random per logical start
    queue_name: str | None = None
    priority: int = 0
    partition_key: str | None = None
    deduplication_id: str | None = None
    delay_until_ms: int | None = None
    timeout_ms: int | None = None
    deadline_ms: int | None = None  # absolute, inherited
    deadline_from_now: bool = False  # direct start with a timeout: deadline = db now + timeout_ms
    application_name: str | None = None
    application_version: str | None = None
    app_id: str | None = None
    authenticated_user: str | None = None
    authenticated_roles: list[str] | None = None
    assumed_role: str | None = None
    parent_workflow_id: str | None = None
    forked_from: str | None = None
    schedule_name: str | None = None
    max_recovery_attempts: int | None = None
    attributes: str | None = None
    recovery_attempts: int = 0  # 1 for a direct start, else 0
    duplication_policy: Literal["return-existing", "reject"] = "return-existing"


@dataclass(frozen=True, slots=True)
class NewStep:
    step_id: int
    name: str
    output: Payload | None
    error: Payload | None  # never both; both None for marker steps
    write_token: str  # random per logical write
    child_workflow_id: str | None = None
    started_at_ms: int | None = None  # None = database now
    completed_at_ms: int | None = None  # None = database now


@dataclass(frozen=True, slots=True)
class ParentLink:
    """The parent's checkpoint written in the same transaction as a child's insert."""

    fence: Fence
    step_id: int
    step_name: str
    write_token: str


InsertKind = Literal[
    "created",  # the row was inserted
    "existing",  # the ID exists with the same function identity (name, class_name, config_name)
    "id_conflict",  # the ID exists with another function
    "dedup_existing",  # (queue, deduplication_id) is held by a row of the same function; result names the holder
    "dedup_rejected",  # it is held and the policy is "reject"; result names the holder
    "dedup_conflict",  # it is held by a row of another function; result names the holder
    "fenced",  # the parent's fence failed
    "parent_conflict",  # the parent's step is recorded with another write token
    "source_missing",  # fork_workflow: the source workflow does not exist
]


@dataclass(frozen=True, slots=True)
class InsertResult:
    kind: InsertKind
    workflow_id: str
    name: str | None = None  # identity of the row the result refers to
    class_name: str | None = None
    config_name: str | None = None
    status: str | None = None
    queue_name: str | None = None
    created_at: int | None = None
    deadline_ms: int | None = None


@dataclass(frozen=True, slots=True)
class WorkflowRow:
    """Every column of the `workflows` table; payload fields are None when not requested."""

    workflow_id: str
    seq: int
    status: str
    name: str
    class_name: str | None
    config_name: str | None
    inputs: Payload | None
    receiver: str | None
    output: Payload | None
    error: Payload | None
    cancel_reason: str | None
    application_name: str | None
    application_version: str | None
    app_id: str | None
    authenticated_user: str | None
    authenticated_roles: list[str] | None
    assumed_role: str | None
    queue_name: str | None
    deduplication_id: str | None
    priority: int
    partition_key: str | None
    delay_until_ms: int | None
    timeout_ms: int | None
    deadline_ms: int | None
    executor_id: str | None
    incarnation: int | None
    claim_token: str | None
    recovery_attempts: int
    max_recovery_attempts: int | None
    parent_workflow_id: str | None
    forked_from: str | None
    was_forked_from: bool
    schedule_name: str | None
    created_at: int
    updated_at: int
    dequeued_at: int | None
    completed_at: int | None


@dataclass(frozen=True, slots=True)
class WorkflowState:
    """The projection that waits use."""

    exists: bool
    status: str | None = None
    cancel_reason: str | None = None
    completed_at: int | None = None
    timeout_ms: int | None = None
    deadline_ms: int | None = None
    parent_workflow_id: str | None = None
    application_version: str | None = None


@dataclass(frozen=True, slots=True)
class StepRow:
    workflow_id: str
    step_id: int
    name: str
    output: Payload | None
    error: Payload | None
    child_workflow_id: str | None
    started_at: int | None
    completed_at: int | None
    write_token: str


@dataclass(frozen=True, slots=True)
class Outcome:
    status: Literal["SUCCESS", "ERROR", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"]
    output: Payload | None = None
    error: Payload | None = None


@dataclass(frozen=True, slots=True)
class OutcomeResult:
    applied: bool
    status: str | None  # the row's status after the call (None: the row does not exist)


@dataclass(frozen=True, slots=True)
class RateLimit:
    limit: int  # claims allowed ...
    period_ms: int  # ... in any window of this many milliseconds


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """One claim of one queue. Limits that are None are unlimited (03 §3).

    The engine has already folded the local terms (process capacity, W) into `max_rows`. The store applies
    the shared terms under one lock (SQLite: the write transaction; PG: an advisory xact lock on the queue):
    G counts PENDING rows of the queue, PG the PENDING rows of a lane, L / PL the `queue_claims` rows inside
    the window (one row is added per claim on a rate-limited queue)."""

    queue_name: str
    executor_id: str
    incarnation: int
    application_name: str | None
    application_version: str | None
    registered: frozenset[str]  # workflow names this process can run
    max_rows: int  # <= 1000
    batch_token: str
    global_concurrency: int | None = None  # G
    rate: RateLimit | None = None  # L
    partitioned: bool = False
    partition_concurrency: int | None = None  # PG (the engine passes the effective value, 1 by default)
    partition_rate: RateLimit | None = None  # PL
    partition_local_room: Mapping[str | None, int] | None = (
        None  # PW remainder per lane; absent lane = full PW
    )
    partition_worker_concurrency: int | None = None  # PW
    lane_order: Sequence[
        str | None
    ] = ()  # lanes this process served most recently last (fairness, 03 §8 rule 5)


@dataclass(frozen=True, slots=True)
class ClaimedWorkflow:
    fence: Fence
    row: WorkflowRow  # with inputs
    may_have_steps: bool


@dataclass(frozen=True, slots=True)
class ClaimResult:
    claimed: list[ClaimedWorkflow]  # in claim order: lanes by head priority then least recently served
    cancelled: list[str]  # IDs whose deadline had passed (cancelled instead of claimed)
    next_rate_slot_ms: int | None = None  # a rate window blocked a claim: when its oldest claim ages out


@dataclass(frozen=True, slots=True)
class PromoteResult:
    promoted: list[tuple[str, str]]  # (workflow_id, queue_name) now ENQUEUED
    next_due_ms: int | None  # the earliest delay_until still DELAYED


@dataclass(frozen=True, slots=True)
class QueueDefRow:
    """A database-backed queue definition (03 §18): `config` is a JSON object of the Queue arguments."""

    name: str
    config: str
    revision: int  # 1 at creation, +1 per accepted change
    application_name: str | None
    created_at: int
    updated_at: int


@dataclass(frozen=True, slots=True)
class QueueStatsRow:
    queue_name: str
    enqueued: int
    delayed: int
    pending: int
    oldest_enqueued_at: int | None
    partitions: int  # lanes (non-NULL keys) with ENQUEUED or PENDING rows


@dataclass(frozen=True, slots=True)
class ExecutorRegistration:
    executor_id: str
    application_name: str | None
    application_version: str | None
    hostname: str
    host_identity: str
    pid: int
    process_start: str | None
    heartbeat_interval_ms: int
    lease_ms: int


@dataclass(frozen=True, slots=True)
class Registration:
    incarnation: int
    superseded: list[int]  # older ALIVE incarnations of this ID now marked DEAD
    previous_lease_valid: bool  # one of them still had a valid lease (log a WARNING)
    db_now_ms: int


@dataclass(frozen=True, slots=True)
class Heartbeat:
    alive: bool  # False: this incarnation is no longer ALIVE (taken over)
    newer_incarnation_alive: bool
    db_now_ms: int


@dataclass(frozen=True, slots=True)
class ExecutorRow:
    executor_id: str
    incarnation: int
    state: Literal["ALIVE", "STOPPED", "DEAD"]
    application_name: str | None
    application_version: str | None
    hostname: str
    host_identity: str
    pid: int
    process_start: str | None
    started_at: int
    last_heartbeat_at: int
    lease_expires_at: int
    heartbeat_interval_ms: int
    lease_ms: int
    stopped_at: int | None


@dataclass(frozen=True, slots=True)
class DeadCandidate:
    """An incarnation that may be dead; `certain` if STOPPED/DEAD or lease-expired by the db clock."""

    executor: ExecutorRow
    certain: bool


def topic_digest(topic: str | None) -> str:
    """The stored digest of a message topic: "-" for the default topic, so None and "" never collide."""
    return "-" if topic is None else digest(topic)


def message_id_for_key(destination_id: str, idempotency_key: str) -> str:
    return "k:" + digest(destination_id, idempotency_key)


@dataclass(frozen=True, slots=True)
class NewMessage:
    message_id: (
        str  # "k:" + digest(destination, key) for keyed sends, else "u:" + uuid4().hex (07 §3.2 rule 4)
    )
    destination_id: str
    topic: str | None  # None = the default topic
    payload: Payload


@dataclass(frozen=True, slots=True)
class SendResult:
    missing: str | None  # the first destination that does not exist; then nothing was written
    write: Write  # of the checkpoint (APPLIED when there is none)


@dataclass(frozen=True, slots=True)
class ConsumeResult:
    write: Write
    step: StepRow | None  # the recorded recv step (output = the message); None: no message, nothing written


@dataclass(frozen=True, slots=True)
class EventRead:
    value: Payload | None
    is_set: bool
    writer: WorkflowState  # the event's workflow, read in the same snapshot (exists=False if there is none)


@dataclass(frozen=True, slots=True)
class StreamWrite:
    write: Write
    offset: (
        int | None
    )  # the offset written (or found, for a repeated step write); None when nothing was written
    closed: bool  # the stream already had its end marker: a value was refused, a close was a no-op


@dataclass(frozen=True, slots=True)
class StreamRead:
    values: list[tuple[int, Payload]]  # consecutive (offset, value) from from_offset, before any end marker
    end_offset: int | None  # the end marker's offset if the stream is closed
    writer: WorkflowState  # the writing workflow, read in the same snapshot before the values (04 §10 rule 3)


CancelReason = Literal["user", "deadline"]


@dataclass(frozen=True, slots=True)
class ResumeResult:
    missing: str | None  # the first listed ID that does not exist; then nothing was changed
    resumed: list[str]  # IDs re-enqueued by this call, in input order


@dataclass(frozen=True, slots=True)
class ForkSpec:
    """A fork of `source_id` as the new workflow `new_id` (02 §5)."""

    source_id: str
    new_id: str
    start_step: (
        int  # >= 1: checkpoints, event history and stream entries with step id < start_step are copied
    )
    creator_token: str
    application_version: str | None = None
    queue_name: str | None = None  # None: the internal queue
    partition_key: str | None = None
    replacement_children: Mapping[str, str] = field(default_factory=dict)
    timeout_ms: int | None = None


@dataclass(frozen=True, slots=True)
class WorkflowQuery:
    """Filters of `list_workflows` (02 §7.1), all ANDed. A sequence means "any of"; an empty sequence matches
    nothing; None means no filter. Time bounds are inclusive epoch ms. Rows are ordered by
    (created_at, workflow_id), ascending or descending; `after` is the last row of the previous page and
    selects rows strictly after it in that order."""

    workflow_ids: Sequence[str] | None = None
    statuses: Sequence[str] | None = None
    created_from: int | None = None
    created_to: int | None = None
    completed_from: int | None = None
    completed_to: int | None = None
    dequeued_from: int | None = None
    dequeued_to: int | None = None
    names: Sequence[str] | None = None
    app_versions: Sequence[str] | None = None
    users: Sequence[str] | None = None  # authenticated_user
    queue_names: Sequence[str] | None = None
    executor_ids: Sequence[str] | None = None
    forked_from: Sequence[str] | None = None
    parent_workflow_ids: Sequence[str] | None = None
    id_prefixes: Sequence[str] | None = None  # literal prefixes: %, _ and \ have no special meaning
    application_names: Sequence[str] | None = None
    schedule_names: Sequence[str] | None = None
    was_forked_from: bool | None = None
    has_parent: bool | None = None
    queues_only: bool = False  # only rows with a queue_name (the engine adds the default statuses)
    limit: int | None = None
    offset: int | None = None
    after: tuple[int, str] | None = None  # (created_at, workflow_id) of the previous page's last row
    sort_desc: bool = False
    load_input: bool = True
    load_output: bool = True


ExportBundle = list[dict[str, Any]]
"""One entry per workflow: {"status": {column: value}, "steps": [...], "events": [...], "event_history": [...],
"streams": [...], "messages": [...]}. Column values are exactly as stored (payload text and serializer names
untouched); bool columns are `bool`, JSON columns (authenticated_roles, attributes) parsed JSON values, and the
row keys omit `seq` and the owning `workflow_id` of child rows. Both backends produce identical bundles for the
same data."""


@dataclass(frozen=True, slots=True)
class ImportResult:
    kind: Literal["created", "id_conflict", "dedup_conflict"]
    workflow_ids: list[str]  # created: the imported IDs in bundle order; else empty
    conflict_id: str | None = None  # the existing workflow that blocks the import


@dataclass(frozen=True, slots=True)
class MigrationReport:
    before: int
    after: int
    applied: list[int]


@dataclass
class StoreStats:
    commits: int = 0
    reads: int = 0
    round_trips: int = 0
    by_op: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoreSettings:
    role: Literal["executor", "client", "tool"] = "executor"
    schema: str = "dbos"
    pool_size: int = 20
    sqlite_synchronous: Literal["full", "normal"] = "full"
    use_listen_notify: bool = True
    poll_ceiling_s: float = 0.1
    max_payload_bytes: int = 67_108_864
    application_name: str | None = None
    create_database: bool = True


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
        deadline = COALESCE(deadline, now + timeout). Rows whose deadline passed become CANCELLED."""
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
    def register_executor(self, reg: ExecutorRegistration) -> Registration: ...
    def heartbeat(self, executor_id: str, incarnation: int) -> Heartbeat: ...
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
