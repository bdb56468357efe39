"""Dialect-independent pieces of database-backed queue definitions and pauses (03 §18; 07 §2.2 "Queues and
claims", §3.2 `queue_defs` / `queue_pauses`), shared by both backends: boundary checks, the config merge of
`update_queue`, and result rows to `QueueDefRow`."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from . import base
from . import textcheck as tc
from .records import Indexed

DEF_COLUMNS = ("name", "config", "revision", "application_name", "created_at", "updated_at")
CTL_KEY = "queues"  # the key of the `ctl` change every definition or pause write emits


def _validation_error(message: str) -> Exception:
    from ..error import DBOSValidationError

    return DBOSValidationError(message)


def check_queue_name(name: Any) -> str:
    return tc.check_name(name, "queue name")


def check_config(config: Any, max_bytes: int) -> str:
    """Storable text holding a JSON object; stored exactly as given."""
    text = tc.check_storable_text(config, max_bytes, "queue config")
    config_object(text)
    return text


def config_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise _validation_error(f"Invalid queue config: not JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise _validation_error(
            f"Invalid queue config: a JSON object is required, not {type(value).__name__}"
        )
    return value


def merged_config(
    stored: str,
    patch: Mapping[str, Any],
    validate: Callable[[Mapping[str, Any]], None],
    max_bytes: int,
) -> str:
    """The stored config with `patch` merged in (as JSON with sorted keys), after `validate(merged)` accepted
    it (it raises to refuse)."""
    merged = {**config_object(stored), **patch}
    validate(merged)
    return tc.check_storable_text(json.dumps(merged, sort_keys=True), max_bytes, "queue config")


def def_row(r: Indexed) -> base.QueueDefRow:
    """A row of `DEF_COLUMNS`, by position."""
    return base.QueueDefRow(
        name=str(r[0]),
        config=str(r[1]),
        revision=int(r[2]),
        application_name=None if r[3] is None else str(r[3]),
        created_at=int(r[4]),
        updated_at=int(r[5]),
    )


def changes_of(name: str) -> list[base.Change]:
    """What a definition or pause write that changed something publishes."""
    return [base.Change("ctl", (CTL_KEY,)), base.Change("queue", (name,))]
