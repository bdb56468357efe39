"""Pure budget arithmetic of the dispatcher's local terms (03 §21 rule 3); the shared terms are applied by the
store under its claim lock."""

from __future__ import annotations

from collections.abc import Mapping

MAX_BATCH = 1000


def local_budget(capacity: int, worker_concurrency: int | None, local_in_flight: int) -> int:
    """How many rows this process may claim now: min(process capacity, W - local in flight), clamped to 0."""
    budget = min(capacity, MAX_BATCH)
    if worker_concurrency is not None:
        budget = min(budget, worker_concurrency - local_in_flight)
    return max(0, budget)


def partition_room(
    partition_worker_concurrency: int | None, lane_in_flight: Mapping[str | None, int]
) -> dict[str | None, int] | None:
    """PW remainder per lane that has local work in flight (absent lanes have the full PW), or None."""
    if partition_worker_concurrency is None:
        return None
    return {lane: max(0, partition_worker_concurrency - n) for lane, n in lane_in_flight.items() if n > 0}
