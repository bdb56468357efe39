"""Failpoints: named crash/fault injection sites for tests (07 §11). Unarmed cost: one global bool test."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

SITES: frozenset[str] = frozenset(
    {
        "workflow.insert.after_commit",
        "step.before_commit",
        "step.after_commit",
        "transaction.after_commit",
        "outcome.before_commit",
        "outcome.after_commit",
        "claim.after_commit",
        "sleep.after_record",
        "heartbeat.before",
        "takeover.after_commit",
    }
)

_armed_any = False
_lock = threading.Lock()
_rng = random.Random(int(os.environ.get("DBOS_FAILPOINTS_SEED", "0") or 0))


@dataclass
class _Arm:
    action: str | Callable[[], None]
    nth: int | None = None
    probability: float | None = None
    hits: int = 0
    released: threading.Event = field(default_factory=threading.Event)


_arms: dict[str, _Arm] = {}
_hits: dict[str, int] = {}


def _site_of(spec: str) -> str:
    return spec.split(":", 1)[0]


def arm(
    spec: str, action: str | Callable[[], None], *, nth: int | None = None, probability: float | None = None
) -> None:
    global _armed_any
    if _site_of(spec) not in SITES:
        from .error import DBOSInitializationError

        raise DBOSInitializationError(f"unknown failpoint site {spec!r}; known sites: {sorted(SITES)}")
    with _lock:
        _arms[spec] = _Arm(action, nth, probability)
        _armed_any = True


def disarm(spec: str | None = None) -> None:
    global _armed_any
    with _lock:
        targets = list(_arms) if spec is None else [spec]
        for s in targets:
            a = _arms.pop(s, None)
            if a is not None:
                a.released.set()
        _armed_any = bool(_arms)


def release(spec: str) -> None:
    a = _arms.get(spec)
    if a is not None:
        a.released.set()


def hits(spec: str) -> int:
    return _hits.get(spec, 0)


@contextmanager
def armed(spec: str, action: str | Callable[[], None], **trigger: Any) -> Iterator[None]:
    arm(spec, action, **trigger)
    try:
        yield
    finally:
        disarm(spec)


def _fires(a: _Arm) -> bool:
    a.hits += 1
    if a.nth is not None:
        return a.hits == a.nth
    if a.probability is not None:
        return _rng.random() < a.probability
    return True


def _act(a: _Arm) -> None:
    action = a.action
    if callable(action):
        action()
    elif action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action.startswith("exit:"):
        os._exit(int(action[5:]))
    elif action.startswith("sleep:"):
        time.sleep(int(action[6:]) / 1000)
    elif action == "hang":
        a.released.wait()
    elif action.startswith("raise:"):
        raise RuntimeError(f"failpoint raised ({action})")


def failpoint(site: str, qualifier: str | None = None) -> None:
    if not _armed_any:
        return
    for spec in (site, f"{site}:{qualifier}" if qualifier is not None else None):
        if spec is None:
            continue
        a = _arms.get(spec)
        if a is None:
            continue
        _hits[spec] = _hits.get(spec, 0) + 1
        if _fires(a):
            _act(a)


def load_from_env() -> None:
    """Arm from DBOS_FAILPOINTS="spec=action[@trigger];..." (read at import and at DBOS construction)."""
    raw = os.environ.get("DBOS_FAILPOINTS", "").strip()
    if not raw:
        return
    from .error import DBOSInitializationError

    for item in filter(None, (p.strip() for p in raw.split(";"))):
        if "=" not in item:
            raise DBOSInitializationError(f"malformed DBOS_FAILPOINTS entry {item!r}; expected spec=action")
        spec, action = item.split("=", 1)
        nth: int | None = None
        prob: float | None = None
        if "@" in action:
            action, trig = action.split("@", 1)
            try:
                if trig.startswith("p"):
                    prob = float(trig[1:])
                else:
                    nth = int(trig)
            except ValueError:
                raise DBOSInitializationError(f"malformed failpoint trigger {trig!r} in {item!r}") from None
        arm(spec.strip(), action.strip(), nth=nth, probability=prob)


try:
    load_from_env()
except Exception:  # reported again, as an error, at DBOS(...) construction
    pass
