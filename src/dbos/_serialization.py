"""Serialization of inputs, receivers, outputs, errors, messages, events and stream values (01 §12).

Every stored value records the name of the serializer that wrote it, and readers choose the serializer by that
name. `SerializerSet` is the one entry point the engine, the client and the messaging layer use: it holds the
configured serializer plus the two built-ins, fails at the call with `DBOSSerializationError` or
`DBOSPayloadTooLargeError`, and never fails when recording an exception.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import pickle
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from ._store.base import Payload
from ._validation import show
from .error import (
    DBOSInitializationError,
    DBOSMaxStepRetriesExceeded,
    DBOSPayloadTooLargeError,
    DBOSSerializationError,
)

PICKLE_NAME = "py_pickle"
JSON_NAME = "portable_json"
BUILTIN_NAMES = frozenset({PICKLE_NAME, JSON_NAME})
MAX_SERIALIZER_NAME_CHARS = 64

_JSON_ACCEPTS = (
    "portable_json accepts only None, bool, int, finite float, str, list, tuple and dict with str keys"
)
_RECEIVER_ADVICE = (
    "Make the instance serializable, or subclass DBOSConfiguredInstance and register it by name "
    "(its workflows then record the config name instead of the instance)"
)


class Serializer(ABC):
    """Turns values into text and back. `name()` is recorded with every value it writes."""

    @abstractmethod
    def serialize(self, data: Any) -> str: ...

    @abstractmethod
    def deserialize(self, serialized_data: str) -> Any: ...

    def name(self) -> str:
        return "custom_serializer"


class PickleSerializer(Serializer):
    """The default: base64 text of `pickle.dumps(value)`. Unpickling runs code: the database must be trusted."""

    def serialize(self, data: Any) -> str:
        return base64.b64encode(pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)).decode("ascii")

    def deserialize(self, serialized_data: str) -> Any:
        return pickle.loads(base64.b64decode(serialized_data.encode("ascii"), validate=True))

    def name(self) -> str:
        return PICKLE_NAME


class JsonSerializer(Serializer):
    """Portable JSON: None, bool, int, finite float, str, list, tuple (read back as list), dict with str keys."""

    def serialize(self, data: Any) -> str:
        problem = json_problem(data, "value")
        if problem is not None:
            raise DBOSSerializationError("a value", f"{problem} ({_JSON_ACCEPTS})")
        return _json_dumps(data)

    def deserialize(self, serialized_data: str) -> Any:
        return json.loads(serialized_data)

    def name(self) -> str:
        return JSON_NAME


class PortableWorkflowError(Exception):
    """An exception in portable form: JSON errors, and substitutes for exceptions that cannot be pickled."""

    def __init__(self, message: str, name: str, code: int | str | None = None, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.name = name
        self.code = code
        self.data = data

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"PortableWorkflowError(message={self.message!r}, name={self.name!r}, code={self.code!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (PortableWorkflowError, (self.message, self.name, self.code, self.data))


# --------------------------------------------------------------------------------------------------------------
# JSON checking, with the path of the first unsupported value
# --------------------------------------------------------------------------------------------------------------


def _json_dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=True, allow_nan=False, separators=(",", ":"))


def json_problem(value: Any, root: str) -> str | None:
    """None if `value` is accepted by portable JSON, else e.g. "argument 'data' → key 'when': datetime"."""
    segments: list[str | int] = []
    try:
        reason = _find_json_problem(value, segments, set())
    except RecursionError:
        return f"{root}: nesting is too deep"
    if reason is None:
        return None
    path = " → ".join([root, *(f"index {s}" if isinstance(s, int) else f"key {s!r}" for s in segments)])
    return f"{path}: {reason}"


def _find_json_problem(value: Any, segments: list[str | int], active: set[int]) -> str | None:
    if value is None or isinstance(value, (str, bool, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"non-finite float {value!r}"
    if isinstance(value, (list, tuple, dict)):
        if id(value) in active:
            return "circular reference"
        active.add(id(value))
        if isinstance(value, dict):
            reason = _find_in_dict(value, segments, active)
        else:
            reason = _find_in_list(value, segments, active)
        if reason is None:
            active.discard(id(value))
        return reason
    return type(value).__name__


def _find_in_list(
    value: list[Any] | tuple[Any, ...], segments: list[str | int], active: set[int]
) -> str | None:
    for i, item in enumerate(value):
        if item is None or type(item) in (str, int, bool):
            continue
        segments.append(i)
        reason = _find_json_problem(item, segments, active)
        if reason is not None:
            return reason
        segments.pop()
    return None


def _find_in_dict(value: dict[Any, Any], segments: list[str | int], active: set[int]) -> str | None:
    for key, item in value.items():
        if not isinstance(key, str):
            return f"dict key {show(key)} of type {type(key).__name__} (keys must be str)"
        segments.append(key)
        reason = _find_json_problem(item, segments, active)
        if reason is not None:
            return reason
        segments.pop()
    return None


# --------------------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------------------


def resolve_serializer(config_value: Serializer | str | None) -> Serializer:
    """The serializer for the `serializer` config value; raises `DBOSInitializationError` when invalid."""
    if config_value is None or config_value == "pickle":
        return PickleSerializer()
    if config_value == "json":
        return JsonSerializer()
    if not isinstance(config_value, Serializer):
        raise DBOSInitializationError(
            f"Invalid config 'serializer' {show(config_value)}: must be 'pickle', 'json' or a Serializer instance"
        )
    if type(config_value) in (PickleSerializer, JsonSerializer):
        return config_value
    _check_custom_name(config_value)
    return config_value


def _check_custom_name(serializer: Serializer) -> None:
    try:
        name: object = serializer.name()
    except Exception as exc:
        raise DBOSInitializationError(
            f"Invalid config 'serializer': {type(serializer).__name__}.name() raised {_describe(exc)}"
        ) from exc
    problem = _name_problem(name)
    if problem is not None:
        raise DBOSInitializationError(
            f"Invalid config 'serializer': the name() of {type(serializer).__name__} is {show(name)}, "
            f"but it {problem}"
        )


def _name_problem(name: object) -> str | None:
    if not isinstance(name, str):
        return f"must return a str, not {type(name).__name__}"
    if not name:
        return "must not be empty"
    if len(name) > MAX_SERIALIZER_NAME_CHARS or not name.isascii() or "\x00" in name:
        return f"must be at most {MAX_SERIALIZER_NAME_CHARS} ASCII characters with no NUL"
    if name in BUILTIN_NAMES:
        return f"must not be one of the built-in names {sorted(BUILTIN_NAMES)}"
    return None


# --------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------


class _InvalidOutput(Exception):
    """A custom serializer produced text that cannot be stored."""


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {_safe_str(exc)}"


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<unprintable {type(exc).__name__}>"


def _qualified_name(cls: type) -> str:
    module = getattr(cls, "__module__", None) or "builtins"
    qualname = getattr(cls, "__qualname__", None) or getattr(cls, "__name__", "?")
    return f"{module}.{qualname}"


def _portable_code(exc: BaseException) -> int | str | None:
    code = getattr(exc, "dbos_error_code", None)
    if isinstance(code, bool) or not isinstance(code, (int, str)):
        return None
    return code


def _utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def _is_stateless(obj: object) -> bool:
    """Empty `__dict__` and no slot holding a value."""
    if getattr(obj, "__dict__", None):
        return False
    for klass in type(obj).__mro__:
        slots = klass.__dict__.get("__slots__", ())
        for slot in (slots,) if isinstance(slots, str) else slots:
            if slot in ("__dict__", "__weakref__"):
                continue
            mangled = slot.startswith("__") and not slot.endswith("__")
            attr = f"_{klass.__name__.lstrip('_')}{slot}" if mangled else slot
            if hasattr(obj, attr):
                return False
    return True


def _pickle_roundtrip(value: object) -> bytes | None:
    """The pickle of `value` if it also unpickles, else None."""
    try:
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        pickle.loads(data)
    except Exception:
        return None
    return data


def _substitute(exc: BaseException, message: str | None = None) -> PortableWorkflowError:
    return PortableWorkflowError(
        message=_safe_str(exc) if message is None else message,
        name=_qualified_name(type(exc)),
        code=_portable_code(exc),
    )


def _with_portable_entries(exc: DBOSMaxStepRetriesExceeded) -> BaseException:
    """A copy of `exc` whose unpicklable `errors` entries are replaced; the original is left untouched."""
    try:
        clone = copy.copy(exc)
        clone.errors = [e if _pickle_roundtrip(e) is not None else _substitute(e) for e in exc.errors]
    except Exception:
        return exc
    return clone


def _pickled_error(exc: BaseException) -> bytes:
    target = _with_portable_entries(exc) if isinstance(exc, DBOSMaxStepRetriesExceeded) else exc
    data = _pickle_roundtrip(target)
    if data is None:
        data = _pickle_roundtrip(_substitute(exc))
    if data is None:
        data = pickle.dumps(PortableWorkflowError(_safe_str(exc), _qualified_name(type(exc))))
    return data


def _truncated(message: str, limit: int, size: int, max_bytes: int) -> str:
    note = f" [truncated: the error took {size} bytes serialized, more than max_payload_bytes={max_bytes}]"
    return message[:limit] + note


# --------------------------------------------------------------------------------------------------------------
# The serializer set
# --------------------------------------------------------------------------------------------------------------


class SerializerSet:
    """The configured serializer, plus the two built-ins, which remain readable whatever is configured."""

    resolve_serializer = staticmethod(resolve_serializer)

    def __init__(self, config_value: Serializer | str | None = None) -> None:
        configured = resolve_serializer(config_value)
        self._pickle: Serializer = configured if type(configured) is PickleSerializer else PickleSerializer()
        self._json: Serializer = configured if type(configured) is JsonSerializer else JsonSerializer()
        self._serializer = configured
        self._name = configured.name()
        self._by_name: dict[str, Serializer] = {PICKLE_NAME: self._pickle, JSON_NAME: self._json}
        self._by_name.setdefault(self._name, configured)

    @property
    def serializer(self) -> Serializer:
        return self._serializer

    @property
    def name(self) -> str:
        """Name of the configured serializer, recorded with every value it writes."""
        return self._name

    @property
    def is_json(self) -> bool:
        return self._serializer is self._json

    def get(self, name: str, *, what: str = "a stored value") -> Serializer:
        """The serializer registered under `name`; `DBOSSerializationError` if this process has none."""
        serializer = self._by_name.get(name)
        if serializer is None:
            raise DBOSSerializationError(
                what,
                f"it was written by serializer {name!r}, which this process does not have "
                "(configure DBOS with that serializer to read it)",
            )
        return serializer

    # ---- low level ------------------------------------------------------------------------------------------

    def _dump(self, serializer: Serializer, value: Any) -> str:
        if serializer is self._json:
            return _json_dumps(value)  # callers have already run json_problem with a meaningful root
        text = serializer.serialize(value)
        if serializer is not self._pickle and serializer is not self._json:
            self._check_output(serializer, text)
        return text

    @staticmethod
    def _check_output(serializer: Serializer, text: object) -> None:
        label = f"serializer {serializer.name()!r}"
        if not isinstance(text, str):
            raise _InvalidOutput(f"{label} returned {type(text).__name__}, not str")
        if "\x00" in text:
            raise _InvalidOutput(f"{label} returned text containing NUL (U+0000), which cannot be stored")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise _InvalidOutput(f"{label} returned text that is not encodable as UTF-8 ({exc})") from None

    def _load(self, serializer: Serializer, text: str, what: str) -> Any:
        try:
            return serializer.deserialize(text)
        except Exception as exc:
            raise DBOSSerializationError(
                what, f"cannot deserialize text written by {serializer.name()!r}: {_describe(exc)}"
            ) from exc

    @staticmethod
    def _check_size(text: str, what: str, max_bytes: int) -> None:
        size = _utf8_size(text)
        if size > max_bytes:
            raise DBOSPayloadTooLargeError(what, size, max_bytes)

    # ---- inputs ---------------------------------------------------------------------------------------------

    def serialize_inputs(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        workflow_name: str,
        max_bytes: int,
        arg_names: Sequence[str] | None = None,
    ) -> Payload:
        """Inputs as one payload. `arg_names` (optional) names positional arguments in error messages."""
        what = f"the inputs of workflow {workflow_name!r}"
        labels = self._arg_labels(args, kwargs, arg_names)
        data: dict[str, Any]
        if self.is_json:
            self._check_json_args(labels, what)
            data = {"positionalArgs": list(args), "namedArgs": dict(kwargs)}
        else:
            data = {"args": tuple(args), "kwargs": dict(kwargs)}
        try:
            text = self._dump(self._serializer, data)
        except Exception as exc:
            raise DBOSSerializationError(what, self._find_culprit(labels, exc)) from exc
        self._check_size(text, what, max_bytes)
        return Payload(text, self._name)

    @staticmethod
    def _arg_labels(
        args: tuple[Any, ...], kwargs: dict[str, Any], arg_names: Sequence[str] | None
    ) -> list[tuple[str, Any]]:
        names = list(arg_names or ())
        labels = [
            (f"argument {names[i]!r}" if i < len(names) else f"positional argument {i}", value)
            for i, value in enumerate(args)
        ]
        labels.extend((f"argument {key!r}", value) for key, value in kwargs.items())
        return labels

    @staticmethod
    def _check_json_args(labels: list[tuple[str, Any]], what: str) -> None:
        for label, value in labels:
            problem = json_problem(value, label)
            if problem is not None:
                raise DBOSSerializationError(what, f"{problem} ({_JSON_ACCEPTS})")

    def _find_culprit(self, labels: list[tuple[str, Any]], exc: Exception) -> str:
        """Serialize each argument alone to name the one that fails."""
        for label, value in labels:
            try:
                self._dump(self._serializer, value)
            except Exception as arg_exc:
                return f"{label} ({type(value).__name__}) cannot be serialized: {_describe(arg_exc)}"
        return f"{self._name} failed: {_describe(exc)}"

    def deserialize_inputs(self, p: Payload) -> tuple[tuple[Any, ...], dict[str, Any]]:
        what = "the stored workflow inputs"
        value = self._load(self.get(p.serializer, what=what), p.text, what)
        if isinstance(value, dict):
            if "positionalArgs" in value or "namedArgs" in value:
                args, kwargs = value.get("positionalArgs", []), value.get("namedArgs", {})
            else:
                args, kwargs = value.get("args", ()), value.get("kwargs", {})
            if isinstance(args, (list, tuple)) and isinstance(kwargs, dict):
                return tuple(args), dict(kwargs)
        raise DBOSSerializationError(
            what, f"expected {{'args', 'kwargs'}} or {{'positionalArgs', 'namedArgs'}}, found {show(value)}"
        )

    # ---- receiver -------------------------------------------------------------------------------------------

    def serialize_receiver(self, obj: object, *, class_name: str, max_bytes: int) -> str:
        """The plain-instance receiver; under JSON only stateless instances, recorded by class alone."""
        what = f"the receiver (an instance of class {class_name!r})"
        if self.is_json:
            if not _is_stateless(obj):
                raise DBOSSerializationError(
                    what,
                    "the portable_json serializer accepts only stateless instances (empty __dict__ and no slot "
                    f"values). {_RECEIVER_ADVICE}",
                )
            text = _json_dumps({"className": class_name})
        else:
            try:
                text = self._dump(self._serializer, obj)
            except Exception as exc:
                raise DBOSSerializationError(what, f"{_describe(exc)}. {_RECEIVER_ADVICE}") from exc
        self._check_size(text, what, max_bytes)
        return text

    def deserialize_receiver(self, text: str, serializer_name: str, cls: type | None) -> object:
        class_label = cls.__qualname__ if cls is not None else "unknown"
        what = f"the stored receiver (an instance of class {class_label!r})"
        serializer = self.get(serializer_name, what=what)
        if serializer is self._json:
            self._load(serializer, text, what)
            if cls is None:
                raise DBOSSerializationError(what, "a portable_json receiver needs its registered class")
            klass: Any = cls
            return klass.__new__(klass)  # rebuilt without __init__, as recorded (01 §4.4 rule 3)
        return self._load(serializer, text, what)

    # ---- values ---------------------------------------------------------------------------------------------

    def serialize_value(self, value: Any, *, what: str, max_bytes: int) -> Payload:
        """An output, message, event or stream value."""
        if self.is_json:
            problem = json_problem(value, "value")
            if problem is not None:
                raise DBOSSerializationError(what, f"{problem} ({_JSON_ACCEPTS})")
        try:
            text = self._dump(self._serializer, value)
        except Exception as exc:
            raise DBOSSerializationError(
                what, f"{type(value).__name__} cannot be serialized: {_describe(exc)}"
            ) from exc
        self._check_size(text, what, max_bytes)
        return Payload(text, self._name)

    def deserialize_value(self, p: Payload, *, what: str = "a stored value") -> Any:
        return self._load(self.get(p.serializer, what=what), p.text, what)

    # ---- errors ---------------------------------------------------------------------------------------------

    def serialize_error(self, exc: BaseException, *, max_bytes: int) -> Payload:
        """Never fails: unserializable (or oversized) exceptions are replaced by a `PortableWorkflowError`."""
        if self.is_json:
            return self._json_error(exc, max_bytes)
        if self._serializer is not self._pickle:
            try:
                text = self._dump(self._serializer, exc)
                if _utf8_size(text) <= max_bytes:
                    return Payload(text, self._name)
            except Exception:
                pass  # fall back to the built-in pickle, which every process can read
        return self._pickle_error(exc, max_bytes)

    def _pickle_error(self, exc: BaseException, max_bytes: int) -> Payload:
        text = base64.b64encode(_pickled_error(exc)).decode("ascii")
        size = len(text)
        limit = max_bytes // 2
        while len(text) > max_bytes and limit > 0:
            substitute = _substitute(exc, _truncated(_safe_str(exc), limit, size, max_bytes))
            text = base64.b64encode(pickle.dumps(substitute, protocol=pickle.HIGHEST_PROTOCOL)).decode(
                "ascii"
            )
            limit //= 2
        return Payload(text, PICKLE_NAME)

    def _json_error(self, exc: BaseException, max_bytes: int) -> Payload:
        if isinstance(exc, PortableWorkflowError):
            name, message, code, data = exc.name, exc.message, exc.code, exc.data
        else:
            name, message, code, data = _qualified_name(type(exc)), _safe_str(exc), _portable_code(exc), None
        text = self._json_error_text(name, message, code, data)
        size = len(text)
        limit = max_bytes // 2
        while len(text) > max_bytes and limit > 0:
            text = self._json_error_text(name, _truncated(message, limit, size, max_bytes), code, None)
            limit //= 2
        return Payload(text, JSON_NAME)

    @staticmethod
    def _json_error_text(name: str, message: str, code: int | str | None, data: Any) -> str:
        record: dict[str, Any] = {"name": str(name), "message": str(message)}
        if isinstance(code, (int, str)) and not isinstance(code, bool):
            record["code"] = code
        if data is not None and json_problem(data, "data") is None:
            record["data"] = data
        try:
            return _json_dumps(record)
        except (ValueError, TypeError, RecursionError):
            record.pop("data", None)
            return _json_dumps(record)

    def deserialize_error(self, p: Payload) -> BaseException:
        what = "a stored error"
        value = self._load(self.get(p.serializer, what=what), p.text, what)
        if isinstance(value, BaseException):
            return value
        if isinstance(value, dict) and "message" in value:
            code = value.get("code")
            return PortableWorkflowError(
                message=str(value["message"]),
                name=str(value.get("name", "Error")),
                code=code if isinstance(code, (int, str)) and not isinstance(code, bool) else None,
                data=value.get("data"),
            )
        raise DBOSSerializationError(what, f"expected an exception, found {show(value)}")


__all__ = [
    "JSON_NAME",
    "PICKLE_NAME",
    "JsonSerializer",
    "PickleSerializer",
    "PortableWorkflowError",
    "Serializer",
    "SerializerSet",
    "json_problem",
    "resolve_serializer",
]
