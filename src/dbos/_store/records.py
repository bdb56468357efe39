"""Dialect-independent pieces of both system-store backends: result rows to the records of `base`, statement
parameters, the storable-text checks of the records a store op takes, and the verdicts of refused writes.

Dialect differences stay in the backends and come in as small arguments: SQLite binds its own `now`, while
PostgreSQL passes None and computes "now" (and a relative deadline) on the server; each backend turns its
result rows into something addressable by column name.
"""

from __future__ import annotations

import collections
import json
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from . import base
from . import textcheck as tc


class Columns(Protocol):
    """A result row addressable by column name (a `dict` of column name -> value, or a `sqlite3.Row`)."""

    def __getitem__(self, key: str, /) -> Any: ...


class Indexed(Protocol):
    """A result row addressable by position (a tuple, or a `sqlite3.Row`)."""

    def __getitem__(self, key: int, /) -> Any: ...


# ---------------------------------------------------------------------------------------------------------------
# Payloads and roles
# ---------------------------------------------------------------------------------------------------------------


def payload_of(text: str | None, serializer: str | None) -> base.Payload | None:
    return None if text is None else base.Payload(text, serializer or "")


def text_of(payload: base.Payload | None) -> str | None:
    return None if payload is None else payload.text


def serializer_of(output: base.Payload | None, error: base.Payload | None) -> str | None:
    """The one serializer column of an output-or-error pair (never both are set)."""
    payload = output if output is not None else error
    return None if payload is None else payload.serializer


def roles_json(roles: Iterable[str] | None) -> str | None:
    return None if roles is None else json.dumps(list(roles))


def roles_of(text: str | None) -> list[str] | None:
    return None if text is None else list(json.loads(text))


# ---------------------------------------------------------------------------------------------------------------
# Row mapping
# ---------------------------------------------------------------------------------------------------------------


def workflow_row(r: Columns) -> base.WorkflowRow:
    return base.WorkflowRow(
        workflow_id=r["workflow_id"],
        seq=r["seq"],
        status=r["status"],
        name=r["name"],
        class_name=r["class_name"],
        config_name=r["config_name"],
        inputs=payload_of(r["inputs"], r["inputs_serializer"]),
        receiver=r["receiver"],
        output=payload_of(r["output"], r["outcome_serializer"]),
        error=payload_of(r["error"], r["outcome_serializer"]),
        cancel_reason=r["cancel_reason"],
        application_name=r["application_name"],
        application_version=r["application_version"],
        app_id=r["app_id"],
        authenticated_user=r["authenticated_user"],
        authenticated_roles=roles_of(r["authenticated_roles"]),
        assumed_role=r["assumed_role"],
        queue_name=r["queue_name"],
        deduplication_id=r["deduplication_id"],
        priority=r["priority"],
        partition_key=r["partition_key"],
        delay_until_ms=r["delay_until"],
        timeout_ms=r["timeout_ms"],
        deadline_ms=r["deadline_ms"],
        executor_id=r["executor_id"],
        incarnation=r["incarnation"],
        claim_token=r["claim_token"],
        recovery_attempts=r["recovery_attempts"],
        max_recovery_attempts=r["max_recovery_attempts"],
        parent_workflow_id=r["parent_workflow_id"],
        forked_from=r["forked_from"],
        was_forked_from=bool(r["was_forked_from"]),
        schedule_name=r["schedule_name"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        dequeued_at=r["dequeued_at"],
        completed_at=r["completed_at"],
    )


def step_row(r: Columns) -> base.StepRow:
    return base.StepRow(
        workflow_id=r["workflow_id"],
        step_id=r["step_id"],
        name=r["name"],
        output=payload_of(r["output"], r["serializer"]),
        error=payload_of(r["error"], r["serializer"]),
        child_workflow_id=r["child_workflow_id"],
        started_at=r["started_at"],
        completed_at=r["completed_at"],
        write_token=r["write_token"],
    )


# ---------------------------------------------------------------------------------------------------------------
# Statement parameters
# ---------------------------------------------------------------------------------------------------------------


def insert_params(new: base.NewWorkflow) -> dict[str, Any]:
    """The workflow insert's parameters by column name; `deadline_ms` is the inherited absolute deadline
    (a backend resolves `deadline_from_now` itself) and the backend adds its clock columns."""
    executor_id, incarnation, claim_token = new.owner if new.owner is not None else (None, None, None)
    return {
        "workflow_id": new.workflow_id,
        "status": new.status,
        "name": new.name,
        "class_name": new.class_name,
        "config_name": new.config_name,
        "inputs": new.inputs.text,
        "receiver": new.receiver,
        "inputs_serializer": new.inputs.serializer,
        "application_name": new.application_name,
        "application_version": new.application_version,
        "app_id": new.app_id,
        "authenticated_user": new.authenticated_user,
        "authenticated_roles": roles_json(new.authenticated_roles),
        "assumed_role": new.assumed_role,
        "queue_name": new.queue_name,
        "dedup_queue": new.queue_name if new.deduplication_id is not None else None,
        "deduplication_id": new.deduplication_id,
        "priority": new.priority,
        "partition_key": new.partition_key,
        "delay_until": new.delay_until_ms,
        "timeout_ms": new.timeout_ms,
        "deadline_ms": new.deadline_ms,
        "executor_id": executor_id,
        "incarnation": incarnation,
        "claim_token": claim_token,
        "recovery_attempts": new.recovery_attempts,
        "max_recovery_attempts": new.max_recovery_attempts,
        "parent_workflow_id": new.parent_workflow_id,
        "forked_from": new.forked_from,
        "schedule_name": new.schedule_name,
        "attributes": new.attributes,
        "creator_token": new.creator_token,
    }


def step_params(fence: base.Fence, step: base.NewStep, now: int | None = None) -> dict[str, Any]:
    """The step insert's parameters by name; unset times become `now` (None: the database's now)."""
    return {
        "workflow_id": fence.workflow_id,
        "claim_token": fence.claim_token,
        "step_id": step.step_id,
        "name": step.name,
        "output": text_of(step.output),
        "error": text_of(step.error),
        "serializer": serializer_of(step.output, step.error),
        "child_workflow_id": step.child_workflow_id,
        "started_at": now if step.started_at_ms is None else step.started_at_ms,
        "completed_at": now if step.completed_at_ms is None else step.completed_at_ms,
        "write_token": step.write_token,
    }


# ---------------------------------------------------------------------------------------------------------------
# Verdicts
# ---------------------------------------------------------------------------------------------------------------


def step_verdict(row: Indexed | None, write_token: str) -> base.Write:
    """After a refused step insert, from the existing step's write token (`row[0]`): my earlier attempt,
    another writer's step, or (no step) a fence failure."""
    if row is None or row[0] is None:
        return base.Write.FENCED
    return base.Write.APPLIED if row[0] == write_token else base.Write.CONFLICT


def existing_kind(
    new: base.NewWorkflow, creator_token: str, identity: tuple[str, str | None, str | None]
) -> base.InsertKind:
    """After a refused workflow insert, from the existing row's creator token and (name, class_name,
    config_name): an earlier attempt of this very start committed (07 §7 rule 1), the same workflow, or
    another one under this ID."""
    if creator_token == new.creator_token:
        return "created"
    if identity == (new.name, new.class_name, new.config_name):
        return "existing"
    return "id_conflict"


def refused_outcome(
    row_status: str, row_token: str | None, status: str, claim_token: str
) -> base.OutcomeResult:
    """After a refused outcome write, from the row's status and claim token: applied if an earlier attempt of
    this very write committed (07 §7 rule 1)."""
    mine = row_token == claim_token and row_status == status
    return base.OutcomeResult(mine, row_status)


def may_have_steps(previous_attempts: int, steps_seeded: Any) -> bool:
    """Whether a claimed workflow may already have checkpoints: not when it never ran and was not seeded."""
    return not (previous_attempts == 0 and not steps_seeded)


# ---------------------------------------------------------------------------------------------------------------
# The storable-text checks of store records (07 §3.4 rule 1)
# ---------------------------------------------------------------------------------------------------------------


def check_opt_name(value: str | None, what: str) -> None:
    tc.check_optional_text(value, tc.MAX_NAME_BYTES, what)


def check_serializer(payload: base.Payload | None) -> None:
    if payload is not None:
        tc.check_storable_text(payload.serializer, tc.MAX_SERIALIZER_BYTES, "serializer name")


def check_fence(fence: base.Fence) -> None:
    tc.check_id(fence.workflow_id)
    tc.check_name(fence.claim_token, "claim token")


def check_parent(parent: base.ParentLink) -> None:
    check_fence(parent.fence)
    tc.check_name(parent.step_name, "step name")
    tc.check_name(parent.write_token, "write token")


def _check_opt_id(value: str | None, what: str) -> None:
    tc.check_optional_text(value, tc.MAX_ID_BYTES, what)


def _optional_names(new: base.NewWorkflow) -> list[tuple[str | None, str]]:
    return [
        (new.class_name, "class name"),
        (new.config_name, "config name"),
        (new.queue_name, "queue name"),
        (new.partition_key, "partition key"),
        (new.deduplication_id, "deduplication ID"),
        (new.application_name, "application name"),
        (new.application_version, "application version"),
        (new.app_id, "app ID"),
        (new.authenticated_user, "authenticated user"),
        (new.assumed_role, "assumed role"),
        (new.schedule_name, "schedule name"),
    ]


def check_new(new: base.NewWorkflow) -> None:
    """Every text field of a new row passes the storable-text check, identically on both backends."""
    tc.check_id(new.workflow_id)
    tc.check_name(new.name, "workflow name")
    for value, what in _optional_names(new):
        check_opt_name(value, what)
    for role in new.authenticated_roles or ():
        tc.check_name(role, "role")
    _check_opt_id(new.parent_workflow_id, "parent workflow ID")
    _check_opt_id(new.forked_from, "forked-from ID")
    check_serializer(new.inputs)
    tc.check_name(new.creator_token, "creator token")
    if new.owner is not None:
        tc.check_name(new.owner[0], "executor ID")
        tc.check_name(new.owner[2], "claim token")


def check_step(step: base.NewStep) -> None:
    tc.check_name(step.name, "step name")
    tc.check_name(step.write_token, "write token")
    _check_opt_id(step.child_workflow_id, "child workflow ID")
    check_serializer(step.output)
    check_serializer(step.error)


def check_claim(req: base.ClaimRequest) -> None:
    tc.check_name(req.queue_name, "queue name")
    tc.check_name(req.executor_id, "executor ID")
    check_opt_name(req.application_name, "application name")
    check_opt_name(req.application_version, "application version")
    tc.check_name(req.batch_token, "batch token")
    for name in req.registered:
        tc.check_name(name, "workflow name")


def check_registration(reg: base.ExecutorRegistration) -> None:
    tc.check_name(reg.executor_id, "executor ID")
    check_opt_name(reg.application_name, "application name")
    check_opt_name(reg.application_version, "application version")
    tc.check_name(reg.hostname, "hostname")
    tc.check_name(reg.host_identity, "host identity")
    check_opt_name(reg.process_start, "process start")
    check_queues_json(reg.queues_json)


MAX_QUEUES_JSON_BYTES = 1_000_000


def check_queues_json(text: str | None) -> None:
    """The queues an executor publishes (02 §12.1 rule 2): a JSON object of queue name -> declared limits."""
    if text is None:
        return
    tc.check_storable_text(text, MAX_QUEUES_JSON_BYTES, "published queues")
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        from ..error import DBOSValidationError

        raise DBOSValidationError("Invalid published queues: must be the text of a JSON object")


def app_key(application_name: str | None) -> str:
    """The app_versions key of an application: '' for none, which no real name equals (07 §3.2 rule 7)."""
    return "" if application_name is None else application_name


def new_version_id() -> str:
    return str(uuid.uuid4())


# ---------------------------------------------------------------------------------------------------------------
# Deduplication verdicts and the result rows of inserts (03 §7)
# ---------------------------------------------------------------------------------------------------------------


def dedup_kind(new: base.NewWorkflow, holder: tuple[str, str | None, str | None]) -> base.InsertKind:
    """After an insert refused by the (dedup_queue, deduplication_id) binding, from the holder's (name,
    class_name, config_name): another function, a rejecting policy, or the holder to return."""
    if holder != (new.name, new.class_name, new.config_name):
        return "dedup_conflict"
    return "dedup_rejected" if new.duplication_policy == "reject" else "dedup_existing"


def insert_result(kind: base.InsertKind, r: Columns) -> base.InsertResult:
    """An `InsertResult` naming the row `r` (columns workflow_id, name, class_name, config_name, status,
    queue_name, created_at, deadline_ms)."""
    return base.InsertResult(
        kind,
        r["workflow_id"],
        r["name"],
        r["class_name"],
        r["config_name"],
        r["status"],
        r["queue_name"],
        r["created_at"],
        r["deadline_ms"],
    )


# ---------------------------------------------------------------------------------------------------------------
# Claims: budget arithmetic and fair lane selection (03 §8 rule 5, §11, §12, §21 rules 3-4)
# ---------------------------------------------------------------------------------------------------------------

CLAIM_BATCH_MAX = 1000
RATE_CLAIMS_RETENTION_MS = 86_400_000  # the largest allowed period: older queue_claims rows are dead
RATE_CLAIMS_PRUNE_EVERY_S = 60.0

# (lane key, offset, limit) -> the lane's eligible rows [(workflow_id, priority, seq)] in priority-then-FIFO
# order, skipping the first `offset`; the NULL key is the "no key" lane.
LaneFetch = Callable[[str | None, int, int], list[tuple[str, int, int]]]


def rate_room(rate: base.RateLimit, in_window: int, oldest: int | None) -> tuple[int, int | None]:
    """(claims left in the window, and when it is exhausted, the time its oldest claim ages out)."""
    left = rate.limit - in_window
    if left > 0:
        return left, None
    return 0, None if oldest is None else oldest + rate.period_ms


def claim_budget(
    req: base.ClaimRequest, pending: int, in_window: int, oldest: int | None
) -> tuple[int, int | None]:
    """The queue-wide budget: min(max_rows, G - PENDING rows, L - claims in the window), clamped at 0; plus
    the rate slot when L is what blocks. `pending`/`in_window`/`oldest` are ignored for unset limits."""
    budget = min(req.max_rows, CLAIM_BATCH_MAX)
    slot = None
    if req.global_concurrency is not None:
        budget = min(budget, req.global_concurrency - pending)
    if req.rate is not None:
        left, slot = rate_room(req.rate, in_window, oldest)
        budget = min(budget, left)
    return max(0, budget), slot


def lane_room(
    req: base.ClaimRequest, key: str | None, pending: int, in_window: int, oldest: int | None
) -> tuple[int | None, int | None]:
    """A lane's room: min over the set terms PG - its PENDING rows, PL - its claims in the window, and the
    local PW remainder (`partition_local_room[key]`, else PW); None = unlimited. Plus PL's rate slot."""
    terms: list[int] = []
    slot = None
    if req.partition_concurrency is not None:
        terms.append(req.partition_concurrency - pending)
    if req.partition_rate is not None:
        left, slot = rate_room(req.partition_rate, in_window, oldest)
        terms.append(left)
    local = req.partition_worker_concurrency
    if req.partition_local_room is not None:
        local = req.partition_local_room.get(key, local)
    if local is not None:
        terms.append(local)
    return (max(0, min(terms)) if terms else None), slot


def order_lanes(
    heads: Mapping[str | None, tuple[int, int]], lane_order: Sequence[str | None]
) -> list[str | None]:
    """Lanes by their head's (priority, seq): priority descending, then lanes not in `lane_order` (in head
    order), then those in `lane_order` order (the most recently served is last)."""
    served = {k: i for i, k in enumerate(lane_order)}

    def rank(k: str | None) -> tuple[int, int, int]:
        priority, seq = heads[k]
        pos = served.get(k)
        return (-priority, 0, seq) if pos is None else (-priority, 1, pos)

    return sorted(heads, key=rank)


class _Lane:
    __slots__ = ("key", "room", "rows", "fetched", "drained")

    def __init__(self, key: str | None, room: int) -> None:
        self.key = key
        self.room = room
        self.rows: collections.deque[tuple[str, int, int]] = collections.deque()
        self.fetched = 0
        self.drained = False

    def refill(self, fetch: LaneFetch, want: int) -> None:
        want = min(want, self.room)
        got = fetch(self.key, self.fetched, want)
        self.fetched += len(got)
        self.drained = len(got) < want
        self.rows.extend(got)

    def take(self, fetch: LaneFetch, chunk: int) -> str | None:
        if not self.rows and not self.drained:
            self.refill(fetch, chunk)
        if not self.rows:
            return None
        self.room -= 1
        return self.rows.popleft()[0]

    def open(self) -> bool:
        return self.room > 0 and (bool(self.rows) or not self.drained)


def pick_lanes(
    heads: Mapping[str | None, tuple[str, int, int]],
    rooms: Mapping[str | None, int | None],
    budget: int,
    lane_order: Sequence[str | None],
    fetch: LaneFetch,
) -> list[str]:
    """The workflow IDs to claim from a partitioned queue, in claim order.

    `heads` maps every lane with eligible work to its first eligible row (workflow_id, priority, seq), `rooms`
    gives each lane's room (None = unlimited; absent = unlimited). Lanes are ordered by `order_lanes`; pass 1
    takes each lane's head, pass 2 each lane's second row (lanes with room left), ... until the budget is spent.
    Further rows are fetched lazily, in chunks of about budget / open lanes, so the cost is O(rows claimed +
    lanes), never the backlog."""
    if budget <= 0:
        return []
    lanes: dict[str | None, _Lane] = {}
    for key, head in heads.items():
        room = rooms.get(key)
        lane = _Lane(key, budget if room is None else min(room, budget))
        if lane.room > 0:
            lane.rows.append(head)
            lane.fetched = 1
            lanes[key] = lane
    order = order_lanes({k: (lane.rows[0][1], lane.rows[0][2]) for k, lane in lanes.items()}, lane_order)
    active = [lanes[k] for k in order]
    picked: list[str] = []
    while budget > 0 and active:
        chunk = max(1, -(-budget // len(active)))
        still: list[_Lane] = []
        for lane in active:
            if budget == 0:
                break
            wid = lane.take(fetch, chunk)
            if wid is None:
                continue
            picked.append(wid)
            budget -= 1
            if lane.open():
                still.append(lane)
        active = still
    return picked
