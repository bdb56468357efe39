"""The one place for bad-input checks (01 §15). Every check raises `DBOSValidationError`.

Checks run at the API call, before any database access, so both backends accept exactly the same inputs.
Strings are returned exactly as given: no normalisation, trimming or case folding.
"""

from __future__ import annotations

import math
import os
import re

from .error import DBOSValidationError

MAX_IDENTIFIER_BYTES = 1024
MAX_DERIVED_ID_BYTES = 2048
MAX_TOPIC_BYTES = 1024
MAX_USER_BYTES = 1024
MAX_SECONDS = 315_360_000  # ten years
MAX_PRIORITY = 2_147_483_647
DEFAULT_APP_NAME = "dbos-app"
APP_NAME_MAX_LEN = 30

_SHOW_LIMIT = 80
_APP_NAME_RE = re.compile(r"[a-z0-9_-]{3,30}")
_APP_NAME_BAD_CHARS = re.compile(r"[^a-z0-9_-]")
_REPEATED_DASH = re.compile(r"-{2,}")


def show(value: object) -> str:
    """`repr(value)`, truncated to about 80 characters, for error messages (never raises)."""
    try:
        text = repr(value)
    except Exception:
        text = f"<unrepresentable {type(value).__name__}>"
    if len(text) > _SHOW_LIMIT:
        text = text[: _SHOW_LIMIT - 3] + "..."
    return text


def _fail(what: str, value: object, reason: str) -> DBOSValidationError:
    return DBOSValidationError(f"Invalid {what} {show(value)}: {reason}")


def _utf8_size(value: str) -> int | None:
    """Number of UTF-8 bytes of `value`, or None if it cannot be encoded (lone surrogates)."""
    if value.isascii():
        return len(value)
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return None


def _text_problem(value: str, max_bytes: int) -> str | None:
    """Why `value` cannot be stored as text of at most `max_bytes` UTF-8 bytes, or None."""
    if "\x00" in value:
        return "must not contain NUL (U+0000)"
    size = _utf8_size(value)
    if size is None:
        return "must be encodable as UTF-8 (it contains a lone surrogate)"
    if size > max_bytes:
        return f"must be at most {max_bytes} bytes in UTF-8 (it has {size})"
    return None


def _require_str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise _fail(what, value, f"must be a str, not {type(value).__name__}")
    return value


# --------------------------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------------------------


def check_identifier(value: object, what: str) -> str:
    """Workflow IDs, names, queue names, dedup IDs, partition keys, idempotency keys, executor IDs, versions."""
    text = _require_str(value, what)
    if not text.strip():
        raise _fail(what, value, "must not be empty or only whitespace")
    problem = _text_problem(text, MAX_IDENTIFIER_BYTES)
    if problem is not None:
        raise _fail(what, value, problem)
    return text


def check_derived_id(value: str) -> str:
    """A derived ID (for example a child's `{parent}-{n}`) must fit in 2048 UTF-8 bytes."""
    problem = _text_problem(value, MAX_DERIVED_ID_BYTES)
    if problem is not None:
        raise _fail("derived workflow ID", value, problem)
    return value


def check_topic(value: object, what: str) -> str | None:
    """A topic or key: None (the default topic, where allowed) or a str, possibly empty."""
    if value is None:
        return None
    text = _require_str(value, what)
    problem = _text_problem(text, MAX_TOPIC_BYTES)
    if problem is not None:
        raise _fail(what, value, problem)
    return text


def check_user(value: object) -> str | None:
    """`authenticated_user`: None or a str of at most 1024 UTF-8 bytes (and storable: no NUL or surrogate)."""
    if value is None:
        return None
    text = _require_str(value, "authenticated user")
    problem = _text_problem(text, MAX_USER_BYTES)
    if problem is not None:
        raise _fail("authenticated user", value, problem)
    return text


def check_roles(value: object, what: str, *, allow_none: bool) -> list[str] | None:
    """A list or tuple of non-empty strings; a bare str is rejected."""
    if value is None:
        if allow_none:
            return None
        raise _fail(what, value, "must be a list or tuple of non-empty strings, not None")
    if not isinstance(value, (list, tuple)):
        raise _fail(what, value, f"must be a list or tuple of non-empty strings, not {type(value).__name__}")
    roles: list[str] = []
    for i, role in enumerate(value):
        if not isinstance(role, str) or not role:
            raise _fail(f"{what}[{i}]", role, "every role must be a non-empty str")
        problem = _text_problem(role, MAX_IDENTIFIER_BYTES)
        if problem is not None:
            raise _fail(f"{what}[{i}]", role, problem)
        roles.append(role)
    return roles


def check_id_list(value: object, what: str) -> list[str]:
    """A list or tuple of identifiers; a bare str is rejected."""
    if not isinstance(value, (list, tuple)):
        raise _fail(what, value, f"must be a list or tuple of identifiers, not {type(value).__name__}")
    return [check_identifier(item, f"{what}[{i}]") for i, item in enumerate(value)]


# --------------------------------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------------------------------


def _finite_number(value: object, what: str) -> float:
    """An int or float (not a bool), finite and at most ten years, as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(what, value, f"must be an int or float, not {type(value).__name__}")
    if isinstance(value, int):
        if value > MAX_SECONDS:
            raise _fail(what, value, f"must be at most {MAX_SECONDS} seconds (10 years)")
        return float(value)
    if not math.isfinite(value):
        raise _fail(what, value, "must be finite")
    if value > MAX_SECONDS:
        raise _fail(what, value, f"must be at most {MAX_SECONDS} seconds (10 years)")
    return float(value)


def check_seconds(value: object, what: str, *, positive: bool, allow_none: bool = False) -> float | None:
    """A duration: > 0 when `positive`, else >= 0 (0 means check once). None only with `allow_none`."""
    if value is None:
        if allow_none:
            return None
        raise _fail(what, value, "must be an int or float, not None")
    return _signed_seconds(value, what, positive=positive)


def _signed_seconds(value: object, what: str, *, positive: bool) -> float:
    seconds = _finite_number(value, what)
    if positive and seconds <= 0:
        raise _fail(what, value, "must be greater than 0")
    if not positive and seconds < 0:
        raise _fail(what, value, "must be at least 0")
    return seconds


def check_sleep_seconds(value: object) -> float:
    """`DBOS.sleep` (01 §9): any finite number up to ten years; <= 0 returns at once."""
    return _finite_number(value, "sleep duration in seconds")


def check_polling_interval(value: object) -> float:
    """`polling_interval_sec`: a finite number > 0."""
    return _signed_seconds(value, "polling_interval_sec", positive=True)


def check_priority(value: object) -> int | None:
    """None, or an int (not a bool) in 1..2,147,483,647."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail("priority", value, f"must be an int, not {type(value).__name__}")
    if not 1 <= value <= MAX_PRIORITY:
        raise _fail("priority", value, f"must be between 1 and {MAX_PRIORITY}")
    return int(value)


def check_count(
    value: object, what: str, *, minimum: int, maximum: int | None = None, allow_none: bool = False
) -> int | None:
    """An int (not a bool) within [minimum, maximum]."""
    if value is None:
        if allow_none:
            return None
        raise _fail(what, value, "must be an int, not None")
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(what, value, f"must be an int, not {type(value).__name__}")
    if value < minimum:
        raise _fail(what, value, f"must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise _fail(what, value, f"must be at most {maximum}")
    return int(value)


# --------------------------------------------------------------------------------------------------------------
# Application name (01 §2)
# --------------------------------------------------------------------------------------------------------------


def check_app_name(value: object) -> str:
    """3–30 characters of [a-z0-9_-]. The config layer turns the error into `DBOSInitializationError`."""
    text = _require_str(value, "application name")
    if _APP_NAME_RE.fullmatch(text) is None:
        raise _fail("application name", value, "must be 3 to 30 characters of [a-z0-9_-]")
    return text


def derive_app_name(argv0: str) -> str:
    """The default application name derived from `sys.argv[0]` (01 §2 rule 3)."""
    if argv0 in ("", "-c", "-"):  # interactive interpreter, `python -c`, script on stdin
        return DEFAULT_APP_NAME
    stem = os.path.splitext(os.path.basename(argv0))[0].lower()
    name = _REPEATED_DASH.sub("-", _APP_NAME_BAD_CHARS.sub("-", stem)).strip("-_")
    name = name[:APP_NAME_MAX_LEN]
    if not name:
        return DEFAULT_APP_NAME
    if len(name) < 3:
        return f"{name}-app"
    return name
