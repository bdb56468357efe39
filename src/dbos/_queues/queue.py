"""`Queue`: a declared, in-memory queue and its limits model (03 §2, §3)."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

from .._validation import check_identifier
from ..error import DBOSException, DBOSValidationError

RESERVED_PREFIX = "_dbos"
MAX_PERIOD_S = 86_400.0


class QueueRateLimit(TypedDict):
    limit: int
    period: float


@dataclass(frozen=True)
class Limits:
    """The six internal limits of 03 §3 (None = unlimited), plus the partitioning flag."""

    global_concurrency: int | None = None  # G
    worker_concurrency: int | None = None  # W
    rate: QueueRateLimit | None = None  # L
    partitioned: bool = False
    partition_concurrency: int | None = None  # PG (effective: 1 on a partitioned queue when not given)
    partition_worker_concurrency: int | None = None  # PW
    partition_rate: QueueRateLimit | None = None  # PL


def _count(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DBOSValidationError(f"Queue {field} must be an int >= 1, got {value!r}")
    return value


def _limiter(value: Any, field: str) -> QueueRateLimit | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or set(value) != {"limit", "period"}:
        raise DBOSValidationError(
            f"Queue {field} must be a mapping with exactly 'limit' and 'period', got {value!r}"
        )
    limit, period = value["limit"], value["period"]
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise DBOSValidationError(f"Queue {field}['limit'] must be an int >= 1, got {limit!r}")
    if (
        isinstance(period, bool)
        or not isinstance(period, (int, float))
        or not math.isfinite(period)
        or not 0 < period <= MAX_PERIOD_S
    ):
        raise DBOSValidationError(f"Queue {field}['period'] must be a number in (0, 86400], got {period!r}")
    return {"limit": limit, "period": float(period)}


def _flag(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise DBOSValidationError(f"Queue {field} must be a bool, got {value!r}")
    return value


def _polling(value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0 < value <= 3600
    ):
        raise DBOSValidationError(f"Queue polling_interval_sec must be a number in (0, 3600], got {value!r}")
    return float(value)


def _not_above(small: tuple[str, int | None], big: tuple[str, int | None]) -> None:
    (sname, s), (bname, b) = small, big
    if s is not None and b is not None and s > b:
        raise DBOSValidationError(f"Queue {sname}={s} cannot exceed {bname}={b}")


def build_limits(
    *,
    concurrency: int | None,
    worker_concurrency: int | None,
    limiter: QueueRateLimit | None,
    partition_queue: bool,
    global_concurrency: int | None,
    partition_concurrency: int | None,
    partition_worker_concurrency: int | None,
    partition_limiter: QueueRateLimit | None,
) -> Limits:
    """Map the constructor arguments onto the internal limits, seed or explicit style (03 §3)."""
    explicit = any(
        x is not None for x in (partition_concurrency, partition_worker_concurrency, partition_limiter)
    )
    if concurrency is not None and global_concurrency is not None:
        raise DBOSValidationError(
            f"Queue concurrency={concurrency} and global_concurrency={global_concurrency} are aliases; give one"
        )
    if partition_queue and (global_concurrency is not None or explicit):
        raise DBOSValidationError(
            "Queue partition_queue=True cannot be combined with global_concurrency or partition_* arguments; "
            "use the explicit style (partition_concurrency=..., global_concurrency=...) instead"
        )
    if partition_queue:
        limits = Limits(
            partitioned=True,
            partition_concurrency=concurrency or 1,
            partition_worker_concurrency=worker_concurrency,
            partition_rate=limiter,
        )
    else:
        limits = Limits(
            global_concurrency=global_concurrency if global_concurrency is not None else concurrency,
            worker_concurrency=worker_concurrency,
            rate=limiter,
            partitioned=explicit,
            partition_concurrency=(partition_concurrency or 1) if explicit else None,
            partition_worker_concurrency=partition_worker_concurrency,
            partition_rate=partition_limiter,
        )
    _check_cross_fields(limits)
    return limits


def _check_cross_fields(lim: Limits) -> None:
    g = ("global_concurrency", lim.global_concurrency)
    w = ("worker_concurrency", lim.worker_concurrency)
    pg = ("partition_concurrency", lim.partition_concurrency)
    pw = ("partition_worker_concurrency", lim.partition_worker_concurrency)
    _not_above(w, g)
    _not_above(pw, pg)
    _not_above(pw, w)
    _not_above(pg, g)


class _QueueRegistry:
    def __init__(self) -> None:
        self.queues: dict[str, Queue] = {}
        self.lock = threading.Lock()
        self.on_declare: Callable[[Queue], None] | None = None

    def add(self, q: Queue) -> None:
        with self.lock:
            if q.name in self.queues:
                raise DBOSException(f"Queue '{q.name}' has already been declared")
            self.queues[q.name] = q
        if self.on_declare is not None:
            self.on_declare(q)

    def get(self, name: str) -> Queue | None:
        return self.queues.get(name)

    def all(self) -> list[Queue]:
        with self.lock:
            return list(self.queues.values())

    def clear(self) -> None:
        with self.lock:
            self.queues.clear()


QUEUES = _QueueRegistry()


class Queue:
    """A durable queue declared in this process; its configuration is fixed at construction (03 §2)."""

    def __init__(
        self,
        name: str,
        concurrency: int | None = None,
        limiter: QueueRateLimit | None = None,
        *,
        worker_concurrency: int | None = None,
        priority_enabled: bool = False,
        partition_queue: bool = False,
        polling_interval_sec: float = 1.0,
        global_concurrency: int | None = None,
        partition_concurrency: int | None = None,
        partition_worker_concurrency: int | None = None,
        partition_limiter: QueueRateLimit | None = None,
    ) -> None:
        self._name = check_identifier(name, "queue name")
        if self._name.startswith(RESERVED_PREFIX):
            raise DBOSValidationError(f"Queue name {name!r} uses the reserved prefix '{RESERVED_PREFIX}'")
        self.concurrency = _count(concurrency, "concurrency")
        self.worker_concurrency = _count(worker_concurrency, "worker_concurrency")
        self.global_concurrency = _count(global_concurrency, "global_concurrency")
        self.partition_worker_concurrency = _count(
            partition_worker_concurrency, "partition_worker_concurrency"
        )
        explicit_pc = _count(partition_concurrency, "partition_concurrency")
        self.limiter = _limiter(limiter, "limiter")
        self.partition_limiter = _limiter(partition_limiter, "partition_limiter")
        self.priority_enabled = _flag(priority_enabled, "priority_enabled")
        partition_flag = _flag(partition_queue, "partition_queue")
        self.polling_interval_sec = _polling(polling_interval_sec)
        self.limits = build_limits(
            concurrency=self.concurrency,
            worker_concurrency=self.worker_concurrency,
            limiter=self.limiter,
            partition_queue=partition_flag,
            global_concurrency=self.global_concurrency,
            partition_concurrency=explicit_pc,
            partition_worker_concurrency=self.partition_worker_concurrency,
            partition_limiter=self.partition_limiter,
        )
        self.partition_queue = self.limits.partitioned
        self.partition_concurrency = self.limits.partition_concurrency
        self.database_backed = False
        QUEUES.add(self)

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"Queue({self._name!r})"

    def enqueue(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from .enqueue import enqueue

        return enqueue(self._name, func, args, kwargs)

    async def enqueue_async(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from .enqueue import enqueue_async

        return await enqueue_async(self._name, func, args, kwargs)
