"""dbos._serialization: serializers, inputs, receivers, values and errors (01 §12, 07 §3.4 rule 2)."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import decimal
import json
import pickle
import threading
from typing import Any

import pytest

from dbos._serialization import (
    JsonSerializer,
    PickleSerializer,
    PortableWorkflowError,
    Serializer,
    SerializerSet,
    json_problem,
    resolve_serializer,
)
from dbos._store.base import Payload
from dbos.error import (
    DBOSInitializationError,
    DBOSMaxStepRetriesExceeded,
    DBOSPayloadTooLargeError,
    DBOSSerializationError,
    DBOSStepTimeoutError,
    DBOSWorkflowTimeoutError,
)

LIMIT = 1 << 20


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int


class TwoArgError(Exception):
    """Picklable despite its two-argument __init__, because it defines __reduce__."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail

    def __reduce__(self) -> tuple[Any, ...]:
        return (TwoArgError, (self.code, self.detail))


class UnpicklableError(Exception):
    """Pickles, but cannot be unpickled: its __init__ needs two arguments and args holds one."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code}: {detail}")


class LockHoldingError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


class Custom(Serializer):
    """A custom serializer: JSON of repr-able values, with a name of its own."""

    def __init__(self, name: str = "my_json", output: str | None = None) -> None:
        self._name = name
        self._output = output

    def serialize(self, data: Any) -> str:
        if self._output is not None:
            return self._output
        return json.dumps(data, default=lambda o: {"__repr__": repr(o)})

    def deserialize(self, serialized_data: str) -> Any:
        return json.loads(serialized_data)

    def name(self) -> str:
        return self._name


# ---------------------------------------------------------------------------------------------------------------
# The two built-in serializers
# ---------------------------------------------------------------------------------------------------------------


def test_builtin_names() -> None:
    assert PickleSerializer().name() == "py_pickle"
    assert JsonSerializer().name() == "portable_json"

    class Minimal(Serializer):
        def serialize(self, data: Any) -> str:
            return str(data)

        def deserialize(self, serialized_data: str) -> Any:
            return serialized_data

    assert Minimal().name() == "custom_serializer"


def test_pickle_serializer_is_base64_of_pickle() -> None:
    text = PickleSerializer().serialize({"a": 1})
    assert text.isascii()
    assert pickle.loads(base64.b64decode(text)) == {"a": 1}
    assert PickleSerializer().deserialize(text) == {"a": 1}


def test_json_serializer_accepts_and_rejects() -> None:
    s = JsonSerializer()
    value = {"a": [1, 2.5, "x", None, True], "t": (1, 2), "u": "é\U0001f600"}
    text = s.serialize(value)
    assert text.isascii()  # ensure_ascii
    assert s.deserialize(text) == {"a": [1, 2.5, "x", None, True], "t": [1, 2], "u": "é\U0001f600"}
    for bad in (datetime.datetime.now(), decimal.Decimal(1), {1}, b"x", object(), float("nan"), {1: "a"}):
        with pytest.raises(DBOSSerializationError):
            s.serialize(bad)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"when": datetime.datetime(2024, 1, 1)}, "argument 'data' → key 'when': datetime"),
        ([1, [2, decimal.Decimal("3")]], "argument 'data' → index 1 → index 1: Decimal"),
        ({"s": {1, 2}}, "argument 'data' → key 's': set"),
        ({"b": b"x"}, "argument 'data' → key 'b': bytes"),
        ({"f": float("inf")}, "argument 'data' → key 'f': non-finite float inf"),
        ({"k": {3: "v"}}, "argument 'data' → key 'k': dict key 3 of type int (keys must be str)"),
        (Point(1, 2), "argument 'data': Point"),
    ],
)
def test_json_problem_paths(value: Any, expected: str) -> None:
    assert json_problem(value, "argument 'data'") == expected


def test_json_problem_accepts_and_detects_cycles() -> None:
    assert json_problem({"a": [1, 2.5, "x", None, True, (1, {"b": []})]}, "value") is None
    shared = [1]
    assert json_problem([shared, shared], "value") is None  # shared, not circular
    loop: list[Any] = []
    loop.append(loop)
    assert json_problem(loop, "value") == "value → index 0: circular reference"
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    assert "too deep" in (json_problem(deep, "value") or "")


# ---------------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------------


def test_resolve_serializer_builtins() -> None:
    assert isinstance(resolve_serializer(None), PickleSerializer)
    assert isinstance(resolve_serializer("pickle"), PickleSerializer)
    assert isinstance(resolve_serializer("json"), JsonSerializer)
    js = JsonSerializer()
    assert resolve_serializer(js) is js
    assert SerializerSet.resolve_serializer("json").name() == "portable_json"


@pytest.mark.parametrize(
    "bad",
    [
        "yaml",
        3,
        object(),
        Custom(""),
        Custom("x" * 65),
        Custom("naïve"),
        Custom("py_pickle"),
        Custom("a\x00"),
    ],
    ids=lambda v: (
        f"Custom({v.name()!r})"
        if isinstance(v, Custom)
        else type(v).__name__
        + ":"
        + (v if isinstance(v, str) else str(v) if isinstance(v, int) else "instance")
    ),
)
def test_resolve_serializer_rejects(bad: Any) -> None:
    with pytest.raises(DBOSInitializationError, match="serializer"):
        resolve_serializer(bad)


def test_resolve_serializer_custom() -> None:
    custom = Custom("x" * 64)
    assert resolve_serializer(custom) is custom
    s = SerializerSet(custom)
    assert s.name == "x" * 64 and s.serializer is custom
    assert isinstance(s.get("py_pickle"), PickleSerializer)
    assert isinstance(s.get("portable_json"), JsonSerializer)


def test_default_set_is_pickle() -> None:
    s = SerializerSet()
    assert s.name == "py_pickle" and not s.is_json
    assert SerializerSet("json").is_json


# ---------------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------------

PICKLE_VALUES: list[Any] = [
    datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.timezone.utc),
    decimal.Decimal("1.10"),
    {1, 2, 3},
    (1, (2, 3)),
    Point(1, 2),
    b"\x00bytes",
    None,
]


@pytest.mark.parametrize("value", PICKLE_VALUES, ids=repr)
def test_pickle_inputs_round_trip(value: Any) -> None:
    s = SerializerSet("pickle")
    p = s.serialize_inputs((value, 1), {"k": value}, workflow_name="wf", max_bytes=LIMIT)
    assert p.serializer == "py_pickle"
    stored = pickle.loads(base64.b64decode(p.text))
    assert stored == {"args": (value, 1), "kwargs": {"k": value}}
    args, kwargs = s.deserialize_inputs(p)
    assert args == (value, 1) and kwargs == {"k": value}
    assert type(args[0]) is type(value)


@pytest.mark.parametrize("value", PICKLE_VALUES, ids=repr)
def test_pickle_values_round_trip(value: Any) -> None:
    s = SerializerSet()
    back = s.deserialize_value(s.serialize_value(value, what="the output of step 's'", max_bytes=LIMIT))
    assert back == value and type(back) is type(value)


def test_json_inputs_round_trip_and_format() -> None:
    s = SerializerSet("json")
    p = s.serialize_inputs(
        ({"a": [1, 2.5, "x", None, True]}, (1, 2)), {"k": "v"}, workflow_name="wf", max_bytes=LIMIT
    )
    assert p.serializer == "portable_json"
    assert json.loads(p.text) == {
        "positionalArgs": [{"a": [1, 2.5, "x", None, True]}, [1, 2]],
        "namedArgs": {"k": "v"},
    }
    args, kwargs = s.deserialize_inputs(p)
    assert args == ({"a": [1, 2.5, "x", None, True]}, [1, 2])  # a tuple comes back as a list
    assert kwargs == {"k": "v"}


def test_json_input_error_names_argument_path_and_workflow() -> None:
    s = SerializerSet("json")
    with pytest.raises(DBOSSerializationError) as info:
        s.serialize_inputs(
            (), {"data": {"when": datetime.datetime.now()}}, workflow_name="report", max_bytes=LIMIT
        )
    assert isinstance(info.value, TypeError)
    assert "argument 'data' → key 'when': datetime" in str(info.value)
    assert "'report'" in str(info.value)
    with pytest.raises(DBOSSerializationError, match="positional argument 1: Decimal"):
        s.serialize_inputs((1, decimal.Decimal(2)), {}, workflow_name="wf", max_bytes=LIMIT)
    with pytest.raises(DBOSSerializationError, match="argument 'amount': Decimal"):
        s.serialize_inputs(
            (1, decimal.Decimal(2)), {}, workflow_name="wf", max_bytes=LIMIT, arg_names=["user", "amount"]
        )


def test_pickle_input_error_names_argument_workflow_and_cause() -> None:
    s = SerializerSet()
    with pytest.raises(DBOSSerializationError) as info:
        s.serialize_inputs(("ok",), {"fn": lambda: 1}, workflow_name="wf", max_bytes=LIMIT)
    message = str(info.value)
    assert "argument 'fn'" in message and "'wf'" in message and "lambda" in message
    with pytest.raises(DBOSSerializationError, match="positional argument 0 .*lock"):
        s.serialize_inputs((threading.Lock(),), {}, workflow_name="wf", max_bytes=LIMIT)


def test_input_size_limit_is_exact() -> None:
    s = SerializerSet("json")
    empty = len(s.serialize_inputs(("",), {}, workflow_name="wf", max_bytes=LIMIT).text)
    limit = 2048
    fits = "x" * (limit - empty)
    assert len(s.serialize_inputs((fits,), {}, workflow_name="wf", max_bytes=limit).text) == limit
    with pytest.raises(DBOSPayloadTooLargeError) as info:
        s.serialize_inputs((fits + "x",), {}, workflow_name="wf", max_bytes=limit)
    assert isinstance(info.value, ValueError)
    assert (info.value.size, info.value.limit) == (limit + 1, limit)
    assert "'wf'" in info.value.what


def test_size_counts_utf8_bytes_of_custom_output() -> None:
    s = SerializerSet(Custom(output="é" * 600))  # 600 characters, 1200 bytes
    with pytest.raises(DBOSPayloadTooLargeError) as info:
        s.serialize_value(1, what="the event 'k'", max_bytes=1024)
    assert info.value.size == 1200


def test_deserialize_inputs_of_either_shape() -> None:
    s = SerializerSet()
    client_payload = SerializerSet("json").serialize_inputs(
        (1,), {"a": 2}, workflow_name="wf", max_bytes=LIMIT
    )
    assert s.deserialize_inputs(client_payload) == ((1,), {"a": 2})  # chosen by the payload's serializer name
    custom = SerializerSet(Custom())
    p = custom.serialize_inputs((1, 2), {"a": 3}, workflow_name="wf", max_bytes=LIMIT)
    assert p.serializer == "my_json"
    assert custom.deserialize_inputs(p) == ((1, 2), {"a": 3})
    with pytest.raises(DBOSSerializationError):
        s.deserialize_inputs(Payload(PickleSerializer().serialize([1]), "py_pickle"))


# ---------------------------------------------------------------------------------------------------------------
# Receiver
# ---------------------------------------------------------------------------------------------------------------


class Service:
    def __init__(self, n: int) -> None:
        self.n = n


class Stateless:
    pass


class Slotted:
    __slots__ = ("value",)
    value: int


class LockedService:
    def __init__(self) -> None:
        self.lock = threading.Lock()


def test_pickle_receiver_round_trips_state() -> None:
    s = SerializerSet()
    text = s.serialize_receiver(Service(7), class_name="Service", max_bytes=LIMIT)
    back = s.deserialize_receiver(text, "py_pickle", Service)
    assert isinstance(back, Service) and back.n == 7


def test_unserializable_receiver_error_advice() -> None:
    with pytest.raises(DBOSSerializationError) as info:
        SerializerSet().serialize_receiver(LockedService(), class_name="LockedService", max_bytes=LIMIT)
    message = str(info.value)
    assert "LockedService" in message and "DBOSConfiguredInstance" in message and "serializable" in message


def test_json_receiver_only_stateless() -> None:
    s = SerializerSet("json")
    text = s.serialize_receiver(Stateless(), class_name="Stateless", max_bytes=LIMIT)
    assert isinstance(s.deserialize_receiver(text, "portable_json", Stateless), Stateless)
    assert isinstance(s.serialize_receiver(Slotted(), class_name="Slotted", max_bytes=LIMIT), str)
    filled = Slotted()
    filled.value = 1
    for obj, name in ((Service(1), "Service"), (filled, "Slotted")):
        with pytest.raises(DBOSSerializationError, match=f"{name}.*DBOSConfiguredInstance"):
            s.serialize_receiver(obj, class_name=name, max_bytes=LIMIT)
    with pytest.raises(DBOSSerializationError):
        s.deserialize_receiver(text, "portable_json", None)


def test_receiver_size_limit() -> None:
    with pytest.raises(DBOSPayloadTooLargeError):
        SerializerSet().serialize_receiver(Service("x" * 5000), class_name="Service", max_bytes=1024)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------------------------------


def test_unserializable_value() -> None:
    with pytest.raises(DBOSSerializationError, match="the output of step 'make_fn'.*function"):
        SerializerSet().serialize_value(lambda: 1, what="the output of step 'make_fn'", max_bytes=LIMIT)
    with pytest.raises(DBOSSerializationError, match="value → key 'when': datetime"):
        SerializerSet("json").serialize_value(
            {"when": datetime.datetime.now()}, what="a message", max_bytes=LIMIT
        )


def test_value_size_limit() -> None:
    with pytest.raises(DBOSPayloadTooLargeError, match="the event 'k'"):
        SerializerSet().serialize_value("x" * 2000, what="the event 'k'", max_bytes=1024)


def test_unknown_serializer_and_corrupt_text() -> None:
    s = SerializerSet()
    with pytest.raises(DBOSSerializationError, match="'yaml_v2'"):
        s.deserialize_value(Payload("x", "yaml_v2"))
    with pytest.raises(DBOSSerializationError, match="'yaml_v2'"):
        s.deserialize_error(Payload("x", "yaml_v2"))
    with pytest.raises(DBOSSerializationError):
        s.deserialize_value(Payload("not base64 !!", "py_pickle"))
    with pytest.raises(DBOSSerializationError):
        s.deserialize_value(Payload("{broken", "portable_json"))
    with pytest.raises(DBOSSerializationError):
        s.deserialize_receiver("x", "yaml_v2", Service)


def test_json_values_readable_by_pickle_app_and_vice_versa() -> None:
    pickle_set, json_set = SerializerSet(), SerializerSet("json")
    p = json_set.serialize_value([1, "a"], what="v", max_bytes=LIMIT)
    assert pickle_set.deserialize_value(p) == [1, "a"]
    q = pickle_set.serialize_value({1, 2}, what="v", max_bytes=LIMIT)
    assert json_set.deserialize_value(q) == {1, 2}


@pytest.mark.parametrize("output", ["a\x00b", "\ud800", 42], ids=repr)
def test_custom_serializer_output_is_checked(output: Any) -> None:
    s = SerializerSet(Custom(output=output))
    with pytest.raises(DBOSSerializationError):
        s.serialize_inputs((1,), {}, workflow_name="wf", max_bytes=LIMIT)
    with pytest.raises(DBOSSerializationError):
        s.serialize_value(1, what="v", max_bytes=LIMIT)
    p = s.serialize_error(ValueError("still recorded"), max_bytes=LIMIT)  # falls back to pickle
    assert p.serializer == "py_pickle" and str(s.deserialize_error(p)) == "still recorded"


def test_custom_serializer_round_trip() -> None:
    s = SerializerSet(Custom())
    p = s.serialize_value({"a": 1}, what="v", max_bytes=LIMIT)
    assert p.serializer == "my_json" and s.deserialize_value(p) == {"a": 1}
    with pytest.raises(DBOSSerializationError, match="my_json"):
        SerializerSet().deserialize_value(p)  # written by a serializer this process does not have


# ---------------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------------


def test_picklable_errors_round_trip() -> None:
    s = SerializerSet()
    for exc in (ValueError("x"), TwoArgError(3, "three"), DBOSWorkflowTimeoutError("w", 1.0, 5)):
        back = s.deserialize_error(s.serialize_error(exc, max_bytes=LIMIT))
        assert type(back) is type(exc) and str(back) == str(exc)
    back = s.deserialize_error(s.serialize_error(TwoArgError(3, "three"), max_bytes=LIMIT))
    assert isinstance(back, TwoArgError) and (back.code, back.detail) == (3, "three")


@pytest.mark.parametrize("exc", [UnpicklableError(1, "one"), LockHoldingError("locked")], ids=repr)
def test_unpicklable_error_is_substituted(exc: Exception) -> None:
    s = SerializerSet()
    p = s.serialize_error(exc, max_bytes=LIMIT)
    back = s.deserialize_error(p)
    assert isinstance(back, PortableWorkflowError)
    assert back.name == f"{type(exc).__module__}.{type(exc).__qualname__}"
    assert type(exc).__name__ in back.name
    assert back.message == str(exc) == str(back)
    assert back.code is None


def test_substitute_keeps_dbos_error_code() -> None:
    class CodedUnpicklable(DBOSStepTimeoutError):
        def __init__(self) -> None:
            super().__init__("s", 1.0)
            self.lock = threading.Lock()

    back = SerializerSet().deserialize_error(
        SerializerSet().serialize_error(CodedUnpicklable(), max_bytes=LIMIT)
    )
    assert isinstance(back, PortableWorkflowError) and back.code == 18


def test_max_step_retries_entries_are_substituted() -> None:
    original = [ValueError("v"), UnpicklableError(2, "two"), LockHoldingError("locked")]
    exc = DBOSMaxStepRetriesExceeded("flaky", 3, list(original))
    s = SerializerSet()
    back = s.deserialize_error(s.serialize_error(exc, max_bytes=LIMIT))
    assert isinstance(back, DBOSMaxStepRetriesExceeded)
    assert (back.step_name, back.max_retries, str(back)) == ("flaky", 3, str(exc))
    assert type(back.errors[0]) is ValueError
    assert [type(e) for e in back.errors[1:]] == [PortableWorkflowError, PortableWorkflowError]
    substitute = back.errors[1]
    assert isinstance(substitute, PortableWorkflowError) and "UnpicklableError" in substitute.name
    assert exc.errors == original  # the live object is untouched


def test_error_too_large_is_truncated_not_raised() -> None:
    s = SerializerSet()
    p = s.serialize_error(ValueError("x" * 10_000), max_bytes=2048)
    assert len(p.text) <= 2048
    back = s.deserialize_error(p)
    assert isinstance(back, PortableWorkflowError) and "truncated" in back.message
    q = SerializerSet("json").serialize_error(ValueError("y" * 10_000), max_bytes=2048)
    assert len(q.text) <= 2048 and "truncated" in str(SerializerSet("json").deserialize_error(q))


def test_json_errors() -> None:
    s = SerializerSet("json")
    p = s.serialize_error(TwoArgError(3, "three"), max_bytes=LIMIT)
    assert p.serializer == "portable_json"
    assert json.loads(p.text) == {"name": f"{__name__}.TwoArgError", "message": "3: three"}
    back = s.deserialize_error(p)
    assert isinstance(back, PortableWorkflowError) and str(back) == "3: three"

    coded = json.loads(s.serialize_error(DBOSStepTimeoutError("s", 1.0), max_bytes=LIMIT).text)
    assert coded["code"] == 18 and coded["name"] == "dbos.error.DBOSStepTimeoutError"

    portable = PortableWorkflowError("boom", "TSError", code="E42", data={"k": [1]})
    back = s.deserialize_error(s.serialize_error(portable, max_bytes=LIMIT))
    assert isinstance(back, PortableWorkflowError)
    assert (back.message, back.name, back.code, back.data) == ("boom", "TSError", "E42", {"k": [1]})

    odd = PortableWorkflowError("boom", "X", data={"when": datetime.datetime.now()})
    assert "data" not in json.loads(s.serialize_error(odd, max_bytes=LIMIT).text)


def test_error_whose_str_raises_is_still_recorded() -> None:
    class NoStr(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    for s in (SerializerSet(), SerializerSet("json")):
        back = s.deserialize_error(s.serialize_error(NoStr(), max_bytes=LIMIT))
        assert isinstance(back, (NoStr, PortableWorkflowError))


def test_deserialize_error_rejects_non_errors() -> None:
    s = SerializerSet()
    with pytest.raises(DBOSSerializationError):
        s.deserialize_error(s.serialize_value(123, what="v", max_bytes=LIMIT))


def test_portable_workflow_error_shape_and_pickle() -> None:
    e = PortableWorkflowError("msg", "mod.Cls", 7, {"a": 1})
    assert isinstance(e, Exception) and str(e) == "msg"
    back = pickle.loads(pickle.dumps(e))
    assert (back.message, back.name, back.code, back.data, str(back)) == (
        "msg",
        "mod.Cls",
        7,
        {"a": 1},
        "msg",
    )
    assert PortableWorkflowError("m", "n").code is None
