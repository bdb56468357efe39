"""The storable-text guard at the store boundary (07 §3.4 rule 1), shared by both backends.

API validators already check user input; this guard covers the paths that bypass them (imports, clients,
derived IDs) so SQLite and PostgreSQL store exactly the same text.
"""

from __future__ import annotations

from typing import Any

MAX_ID_BYTES = 2048  # workflow IDs (derived IDs may reach it)
MAX_NAME_BYTES = 1024  # names, keys, topics, queue and schedule names, executor IDs
MAX_SERIALIZER_BYTES = 64


def _validation_error(message: str) -> Exception:
    from ..error import DBOSValidationError

    return DBOSValidationError(message)


def _show(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _text_problem(value: str, max_bytes: int) -> str | None:
    if "\x00" in value:
        return "must not contain NUL (U+0000)"
    if value.isascii():
        size = len(value)
    else:
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            return "must be encodable as UTF-8 (it contains a lone surrogate)"
    if size > max_bytes:
        return f"must be at most {max_bytes} bytes in UTF-8 (it has {size})"
    return None


def check_storable_text(value: Any, max_bytes: int, what: str = "text") -> str:
    """Return `value` if it can be stored identically by both backends; else raise `DBOSValidationError`."""
    if type(value) is str and value.isascii() and len(value) <= max_bytes and "\x00" not in value:
        return value  # the common case, in one call: every check point of every write passes here
    if not isinstance(value, str):
        raise _validation_error(f"Invalid {what} {_show(value)}: must be a str, not {type(value).__name__}")
    problem = _text_problem(value, max_bytes)
    if problem is not None:
        raise _validation_error(f"Invalid {what} {_show(value)}: {problem}")
    return value


def check_optional_text(value: Any, max_bytes: int, what: str = "text") -> str | None:
    return None if value is None else check_storable_text(value, max_bytes, what)


def check_id(value: Any, what: str = "workflow ID") -> str:
    return check_storable_text(value, MAX_ID_BYTES, what)


def check_name(value: Any, what: str = "name") -> str:
    return check_storable_text(value, MAX_NAME_BYTES, what)
