"""The dispatcher's pure budget arithmetic and the Queue limits model (03 §3, §21 rule 3)."""

from __future__ import annotations

import pytest

from dbos._queues.limits import MAX_BATCH, local_budget, partition_room
from dbos._queues.queue import build_limits
from dbos.error import DBOSValidationError


@pytest.mark.parametrize(
    "capacity, w, in_flight, expected",
    [
        (10, None, 0, 10),
        (10, 4, 0, 4),
        (10, 4, 3, 1),
        (10, 4, 4, 0),
        (10, 2, 5, 0),  # a lowered limit: negative remainders clamp to 0
        (0, None, 0, 0),
        (5000, None, 0, MAX_BATCH),
    ],
)
def test_local_budget(capacity: int, w: int | None, in_flight: int, expected: int) -> None:
    assert local_budget(capacity, w, in_flight) == expected


def test_partition_room() -> None:
    assert partition_room(None, {"a": 1}) is None
    assert partition_room(2, {"a": 1, "b": 2, "c": 5, "d": 0}) == {"a": 1, "b": 0, "c": 0}


def _limits(**kw: object) -> object:
    base = dict(
        concurrency=None,
        worker_concurrency=None,
        limiter=None,
        partition_queue=False,
        global_concurrency=None,
        partition_concurrency=None,
        partition_worker_concurrency=None,
        partition_limiter=None,
    )
    base.update(kw)
    return build_limits(**base)  # type: ignore[arg-type]


def test_seed_style_maps_to_per_partition_limits() -> None:
    lim = _limits(
        partition_queue=True, concurrency=2, worker_concurrency=1, limiter={"limit": 3, "period": 1.0}
    )
    assert lim.partitioned and lim.partition_concurrency == 2 and lim.partition_worker_concurrency == 1
    assert lim.partition_rate == {"limit": 3, "period": 1.0}
    assert lim.global_concurrency is None and lim.rate is None


def test_explicit_style() -> None:
    lim = _limits(partition_concurrency=1, global_concurrency=3, worker_concurrency=2)
    assert lim.partitioned and lim.partition_concurrency == 1 and lim.global_concurrency == 3


def test_plain_queue_defaults() -> None:
    lim = _limits(concurrency=5)
    assert not lim.partitioned and lim.global_concurrency == 5 and lim.partition_concurrency is None


@pytest.mark.parametrize(
    "kw",
    [
        {"concurrency": 1, "global_concurrency": 2},
        {"partition_queue": True, "partition_concurrency": 2},
        {"worker_concurrency": 3, "concurrency": 2},
        {"partition_worker_concurrency": 2},
        {"partition_concurrency": 4, "global_concurrency": 2},
    ],
)
def test_cross_field_violations(kw: dict[str, object]) -> None:
    with pytest.raises(DBOSValidationError):
        _limits(**kw)
