"""Enqueueing: `Queue.enqueue(_async)` and `DBOS.enqueue_workflow(_async)` (03 §4, §5, §7, §14)."""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Callable
from typing import Any

from .._context import EnqueueOptions, current_or_empty
from .._handles import PolledHandle, PolledHandleAsync
from .._store.base import NewStep
from .._validation import check_identifier
from ..error import DBOSException, DBOSQueueDeduplicatedError
from .queue import QUEUES, QueueConfig

_log = logging.getLogger("dbos")
_unknown_logged: set[str] = set()


def _definition(engine: Any, queue_name: str) -> QueueConfig | None:
    """The queue's configuration in force: declared in memory, else database-backed. Database definitions come
    from the dispatcher's copy (refreshed on every `ctl` change), so an enqueue costs no extra read."""
    declared = QUEUES.get(queue_name)
    if declared is not None:
        return declared.config()
    dispatcher = engine.dispatcher
    if dispatcher is not None:
        text = dispatcher.definitions.get(queue_name)
        return None if text is None else QueueConfig.from_json(text)
    row = engine.db.get_queue(queue_name)
    return None if row is None else QueueConfig.from_json(row.config)


def check_against_definition(
    cfg: QueueConfig, queue_name: str, priority: int | None, partition_key: str | None
) -> None:
    """The enqueue checks against a known queue definition (03 §5 rule 5)."""
    partitioned = cfg.limits.partitioned
    if priority is not None and not cfg.priority_enabled:
        raise DBOSException(
            f"priority {priority} given for queue {queue_name!r}, which was declared without priority_enabled=True"
        )
    if partitioned and partition_key is None:
        raise DBOSException(
            f"queue {queue_name!r} is partitioned: enqueue inside SetEnqueueOptions(queue_partition_key=...)"
        )
    if not partitioned and partition_key is not None:
        raise DBOSException(
            f"queue_partition_key {partition_key!r} given for queue {queue_name!r}, which is not "
            "partitioned (declare it with partition_queue=True)"
        )


def queue_target(engine: Any, queue_name: str, options: EnqueueOptions | None) -> Any:
    """Check the options against the queue's definition (03 §5 rule 5) and build the QueueTarget."""
    from .._engine.workflows import QueueTarget

    opts = options or EnqueueOptions()
    cfg = _definition(engine, queue_name)
    if cfg is None:
        if queue_name not in _unknown_logged:
            _unknown_logged.add(queue_name)
            _log.info("enqueue onto queue %r, which is not declared in this process", queue_name)
    else:
        check_against_definition(cfg, queue_name, opts.priority, opts.queue_partition_key)
    delay_ms = int(math.ceil((opts.delay_seconds or 0) * 1000))
    return QueueTarget(
        queue_name=queue_name,
        priority=opts.priority or 0,
        partition_key=opts.queue_partition_key,
        deduplication_id=opts.deduplication_id,
        duplication_policy=opts.duplication_policy or "return-existing",
        delay_ms=delay_ms,
        app_version=opts.app_version,
    )


def _plan(
    engine: Any, queue_name: str, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    from .._engine.workflows import plan_start, resolve_callable

    info, lead = resolve_callable(engine.registry, func)
    ctx = current_or_empty()
    if ctx.in_step or ctx.in_transaction:
        raise DBOSException("cannot enqueue a workflow from inside a step; enqueue from the workflow body")
    # Options belong to the caller's context; the enqueued workflow never inherits them (03 §5 rule 4).
    target = queue_target(engine, queue_name, ctx.enqueue)
    return plan_start(engine, info, (*lead, *args), kwargs, direct=False, queue=target)


def _insert(engine: Any, plan: Any) -> str:
    """Write the row (or find the existing or deduplicated one); returns the ID the handle points to."""
    from .._engine.workflows import insert, write_step

    try:
        res = insert(engine, plan)
    except DBOSQueueDeduplicatedError as e:
        if plan.parent is not None and plan.step_id is not None:  # checkpoint the failure (03 §7 rule 7)
            err = engine.serializers.serialize_error(e, max_bytes=engine.settings.max_payload_bytes)
            write_step(
                engine, plan.parent, NewStep(plan.step_id, plan.name, None, err, secrets.token_hex(16))
            )
        raise
    if res.kind == "created" and plan.new.delay_until_ms is not None and engine.dispatcher is not None:
        engine.dispatcher.note_delay(plan.new.delay_until_ms)
    if res.kind == "existing" and res.queue_name != plan.queue.queue_name:
        _log.warning(
            "workflow %s already exists (queue %r); enqueue onto %r returns it",
            res.workflow_id,
            res.queue_name,
            plan.queue.queue_name,
        )
    return str(res.workflow_id)


def enqueue(queue_name: str, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    from .._dbos import current_engine

    engine = current_engine()
    plan = _plan(engine, check_identifier(queue_name, "queue name"), func, args, kwargs)
    wid = plan.workflow_id if plan.replayed_child is not None else _insert(engine, plan)
    return PolledHandle(engine, wid)


async def enqueue_async(
    queue_name: str, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    from .._dbos import current_engine

    engine = current_engine()
    plan = _plan(engine, check_identifier(queue_name, "queue name"), func, args, kwargs)
    wid = plan.workflow_id if plan.replayed_child is not None else await engine.io(_insert, engine, plan)
    return PolledHandleAsync(engine, wid)
