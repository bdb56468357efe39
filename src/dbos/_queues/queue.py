"""`Queue`: a declared, in-memory queue and its limits model (03 §2, §3)."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
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


CONFIG_FIELDS = (
    "concurrency",
    "worker_concurrency",
    "limiter",
    "priority_enabled",
    "partition_queue",
    "polling_interval_sec",
    "global_concurrency",
    "partition_concurrency",
    "partition_worker_concurrency",
    "partition_limiter",
)


@dataclass(frozen=True)
class QueueConfig:
    """The validated constructor arguments of a queue, as given (03 §2), and the limits they imply (§3)."""

    concurrency: int | None = None
    worker_concurrency: int | None = None
    limiter: QueueRateLimit | None = None
    priority_enabled: bool = False
    partition_queue: bool = False
    polling_interval_sec: float = 1.0
    global_concurrency: int | None = None
    partition_concurrency: int | None = None
    partition_worker_concurrency: int | None = None
    partition_limiter: QueueRateLimit | None = None

    @staticmethod
    def validated(values: Mapping[str, Any]) -> QueueConfig:
        unknown = set(values) - set(CONFIG_FIELDS)
        if unknown:
            raise DBOSValidationError(f"unknown queue setting(s) {sorted(unknown)}")
        cfg = QueueConfig(
            concurrency=_count(values.get("concurrency"), "concurrency"),
            worker_concurrency=_count(values.get("worker_concurrency"), "worker_concurrency"),
            limiter=_limiter(values.get("limiter"), "limiter"),
            priority_enabled=_flag(values.get("priority_enabled", False), "priority_enabled"),
            partition_queue=_flag(values.get("partition_queue", False), "partition_queue"),
            polling_interval_sec=_polling(values.get("polling_interval_sec", 1.0)),
            global_concurrency=_count(values.get("global_concurrency"), "global_concurrency"),
            partition_concurrency=_count(values.get("partition_concurrency"), "partition_concurrency"),
            partition_worker_concurrency=_count(
                values.get("partition_worker_concurrency"), "partition_worker_concurrency"
            ),
            partition_limiter=_limiter(values.get("partition_limiter"), "partition_limiter"),
        )
        cfg.limits  # noqa: B018 -- raises on a cross-field violation
        return cfg

    @property
    def limits(self) -> Limits:
        return build_limits(
            concurrency=self.concurrency,
            worker_concurrency=self.worker_concurrency,
            limiter=self.limiter,
            partition_queue=self.partition_queue,
            global_concurrency=self.global_concurrency,
            partition_concurrency=self.partition_concurrency,
            partition_worker_concurrency=self.partition_worker_concurrency,
            partition_limiter=self.partition_limiter,
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> QueueConfig:
        return QueueConfig.validated(json.loads(text))


def check_queue_name(name: Any) -> str:
    checked = check_identifier(name, "queue name")
    if checked.startswith(RESERVED_PREFIX):
        raise DBOSValidationError(f"Queue name {name!r} uses the reserved prefix '{RESERVED_PREFIX}'")
    return checked


class Queue:
    """A durable queue. Declared with `Queue(...)` its configuration lives in this process and is fixed (03 §2);
    returned by `DBOS.register_queue` it is database-backed: attributes read the stored definition and the
    `set_*` methods change it at run time for every process (03 §18)."""

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
        self._name = check_queue_name(name)
        self._config = QueueConfig.validated(
            dict(
                concurrency=concurrency,
                worker_concurrency=worker_concurrency,
                limiter=limiter,
                priority_enabled=priority_enabled,
                partition_queue=partition_queue,
                polling_interval_sec=polling_interval_sec,
                global_concurrency=global_concurrency,
                partition_concurrency=partition_concurrency,
                partition_worker_concurrency=partition_worker_concurrency,
                partition_limiter=partition_limiter,
            )
        )
        self.database_backed = False
        from .definitions import refuse_if_registered

        refuse_if_registered(self._name)
        QUEUES.add(self)

    @classmethod
    def _database_backed(cls, name: str) -> Queue:
        q = object.__new__(cls)
        q._name = name
        q.database_backed = True
        return q

    def config(self) -> QueueConfig:
        """The configuration in force: as declared, or (database-backed) as currently stored."""
        if not self.database_backed:
            return self._config
        from .definitions import stored_config

        return stored_config(self._name)

    @property
    def name(self) -> str:
        return self._name

    @property
    def limits(self) -> Limits:
        return self.config().limits

    @property
    def concurrency(self) -> int | None:
        return self.config().concurrency

    @property
    def worker_concurrency(self) -> int | None:
        return self.config().worker_concurrency

    @property
    def limiter(self) -> QueueRateLimit | None:
        return self.config().limiter

    @property
    def priority_enabled(self) -> bool:
        return self.config().priority_enabled

    @property
    def partition_queue(self) -> bool:
        return self.config().limits.partitioned

    @property
    def polling_interval_sec(self) -> float:
        return self.config().polling_interval_sec

    @property
    def global_concurrency(self) -> int | None:
        return self.config().global_concurrency

    @property
    def partition_concurrency(self) -> int | None:
        return self.config().limits.partition_concurrency

    @property
    def partition_worker_concurrency(self) -> int | None:
        return self.config().partition_worker_concurrency

    @property
    def partition_limiter(self) -> QueueRateLimit | None:
        return self.config().partition_limiter

    def _set(self, field: str, value: Any) -> None:
        if not self.database_backed:
            raise DBOSException(
                f"queue {self._name!r} is declared in memory; only database-backed queues change"
            )
        from .definitions import update_stored

        update_stored(self._name, {field: value})

    def set_concurrency(self, value: int | None) -> None:
        self._set("concurrency", value)

    def set_worker_concurrency(self, value: int | None) -> None:
        self._set("worker_concurrency", value)

    def set_limiter(self, value: QueueRateLimit | None) -> None:
        self._set("limiter", value)

    def set_priority_enabled(self, value: bool) -> None:
        self._set("priority_enabled", value)

    def set_global_concurrency(self, value: int | None) -> None:
        self._set("global_concurrency", value)

    def set_partition_concurrency(self, value: int | None) -> None:
        self._set("partition_concurrency", value)

    def set_partition_worker_concurrency(self, value: int | None) -> None:
        self._set("partition_worker_concurrency", value)

    def set_partition_limiter(self, value: QueueRateLimit | None) -> None:
        self._set("partition_limiter", value)

    def set_polling_interval_sec(self, value: float) -> None:
        self._set("polling_interval_sec", value)

    def __repr__(self) -> str:
        return f"Queue({self._name!r})"

    def enqueue(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from .enqueue import enqueue

        return enqueue(self._name, func, args, kwargs)

    async def enqueue_async(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from .enqueue import enqueue_async

        return await enqueue_async(self._name, func, args, kwargs)
