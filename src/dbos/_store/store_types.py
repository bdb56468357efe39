"""The records of the `SystemStore` protocol (07 §2.1): what the engine hands the store and what it gets back.
Re-exported by `dbos._store.base`, which the engine, client, CLI and dashboard import."""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

INTERNAL_QUEUE = "_dbos_internal_queue"

WorkflowStatusName = Literal[
    "PENDING", "ENQUEUED", "DELAYED", "SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"
]
TERMINAL_STATUSES = frozenset({"SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"})


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
    # ENQUEUED rows by (application_name, application_version), from which the engine derives `stranded`
    enqueued_by_version: Mapping[tuple[str | None, str | None], int] = field(default_factory=dict)


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
    queues_json: str = "{}"  # JSON object: the queues this incarnation dispatches -> their declared limits


@dataclass(frozen=True, slots=True)
class Registration:
    incarnation: int
    superseded: list[int]  # older ALIVE incarnations of this ID now marked DEAD
    previous_lease_valid: bool  # one of them still had a valid lease (log a WARNING)
    db_now_ms: int
    # The application's latest version (largest version_timestamp) after registering this executor's version
    # (05 §7 rule 4); None when the executor has no version.
    latest_version: str | None = None


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
    queues: str = "{}"  # JSON object as published: queue name -> declared limits (02 §12.1 rule 2)


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


@dataclass(frozen=True, slots=True)
class AppVersionRow:
    """One registered application version (05 §7)."""

    version_id: str
    version_name: str
    version_timestamp: int  # epoch ms; the largest is the application's latest version
    created_at: int


@dataclass
class StoreStats:
    commits: int = 0
    reads: int = 0
    round_trips: int = 0
    by_op: dict[str, int] = field(default_factory=dict)
    # group commit (07 §8 rule 7): a batchable op committed alone counts as a batch of one
    batches: int = 0
    batch_ops: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)  # ops per batch -> batches of that size
    lane_waits: int = 0  # writes that found every commit lane busy


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
