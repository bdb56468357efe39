"""dbos._validation: the bad-input rules of 01 §15 (no database needed)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from dbos._validation import (
    check_app_name,
    check_count,
    check_derived_id,
    check_id_list,
    check_identifier,
    check_polling_interval,
    check_priority,
    check_roles,
    check_seconds,
    check_sleep_seconds,
    check_topic,
    check_user,
    derive_app_name,
)
from dbos.error import DBOSValidationError

EMOJI = "\U0001f600"  # 4 bytes in UTF-8


class _Str(str):
    pass


# ---------------------------------------------------------------------------------------------------------------
# Identifiers
# ---------------------------------------------------------------------------------------------------------------

ACCEPTED_IDS = [
    "a\nb",
    "x" * 1024,
    EMOJI * 256,
    "'; DROP TABLE x; --",
    "%_\\",
    "%s",
    "{0}",
    "$1",
    " leading and trailing ",
    "á",
    _Str("subclass"),
]
REJECTED_IDS = ["", "   ", "\t\n", "a\x00b", "\ud800", "x" * 1025, EMOJI * 257, None, 1, b"bytes", ["a"]]


@pytest.mark.parametrize("value", ACCEPTED_IDS, ids=repr)
def test_identifier_accepted_exactly_as_given(value: str) -> None:
    result = check_identifier(value, "workflow ID")
    assert result is value


@pytest.mark.parametrize("value", REJECTED_IDS, ids=lambda v: repr(v)[:40])
def test_identifier_rejected(value: object) -> None:
    with pytest.raises(DBOSValidationError) as info:
        check_identifier(value, "workflow ID")
    assert isinstance(info.value, ValueError)
    assert "workflow ID" in str(info.value)


def test_identifier_message_names_value_and_truncates() -> None:
    with pytest.raises(DBOSValidationError) as info:
        check_identifier("y" * 2000, "queue name")
    message = info.value.message
    assert "queue name" in message and "'yyyy" in message and "1024" in message
    assert len(message) < 250
    with pytest.raises(DBOSValidationError, match="NUL"):
        check_identifier("a\x00b", "queue name")
    with pytest.raises(DBOSValidationError, match="surrogate") as info:
        check_identifier("\ud800", "queue name")
    info.value.message.encode("utf-8")  # the message itself is printable and encodable
    with pytest.raises(DBOSValidationError, match="int"):
        check_identifier(5, "queue name")


def test_derived_id() -> None:
    assert check_derived_id("p" * 2046 + "-1") == "p" * 2046 + "-1"
    assert check_derived_id(EMOJI * 512) == EMOJI * 512
    with pytest.raises(DBOSValidationError, match="2048"):
        check_derived_id("p" * 2047 + "-1")
    with pytest.raises(DBOSValidationError):
        check_derived_id(EMOJI * 512 + "x")


def test_id_list() -> None:
    assert check_id_list(["a", "b"], "workflow_ids") == ["a", "b"]
    assert check_id_list(("a",), "workflow_ids") == ["a"]
    assert check_id_list([], "workflow_ids") == []
    with pytest.raises(DBOSValidationError, match="list or tuple"):
        check_id_list("abc", "workflow_ids")
    with pytest.raises(DBOSValidationError, match=r"workflow_ids\[1\]"):
        check_id_list(["a", ""], "workflow_ids")
    with pytest.raises(DBOSValidationError):
        check_id_list({"a"}, "workflow_ids")


# ---------------------------------------------------------------------------------------------------------------
# Topics, user, roles
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", "   ", "a\nb", "x" * 1024, EMOJI * 256, "%_\\"], ids=repr)
def test_topic_accepted(value: str | None) -> None:
    assert check_topic(value, "topic") is value


@pytest.mark.parametrize("value", ["a\x00", "\udfff", "x" * 1025, EMOJI * 257, 3, b"t"], ids=repr)
def test_topic_rejected(value: object) -> None:
    with pytest.raises(DBOSValidationError, match="event key"):
        check_topic(value, "event key")


def test_user() -> None:
    assert check_user(None) is None
    assert check_user("") == ""
    assert check_user("u" * 1024) == "u" * 1024
    for bad in ("u" * 1025, 7, ["u"], "a\x00"):
        with pytest.raises(DBOSValidationError):
            check_user(bad)


def test_roles() -> None:
    assert check_roles(["admin", "user"], "roles", allow_none=False) == ["admin", "user"]
    assert check_roles(("admin",), "roles", allow_none=False) == ["admin"]
    assert check_roles([], "roles", allow_none=False) == []
    assert check_roles(None, "roles", allow_none=True) is None
    with pytest.raises(DBOSValidationError):
        check_roles(None, "roles", allow_none=False)
    with pytest.raises(DBOSValidationError, match="'admin'"):
        check_roles("admin", "required roles", allow_none=True)
    for bad in (["admin", ""], ["admin", 3], [None], {"admin"}):
        with pytest.raises(DBOSValidationError):
            check_roles(bad, "roles", allow_none=True)


# ---------------------------------------------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------------------------------------------

NOT_NUMBERS: list[Any] = [True, False, "1", None, [1], 1j]
NOT_FINITE = [float("nan"), float("inf"), float("-inf")]


def test_seconds_positive() -> None:
    assert check_seconds(1, "workflow timeout", positive=True) == 1.0
    assert isinstance(check_seconds(1, "workflow timeout", positive=True), float)
    assert check_seconds(0.001, "t", positive=True) == 0.001
    assert check_seconds(315_360_000, "t", positive=True) == 315_360_000.0
    for bad in [0, 0.0, -1, 315_360_001, 315_360_000.5, 10**400, *NOT_FINITE, *NOT_NUMBERS]:
        with pytest.raises(DBOSValidationError, match="workflow timeout"):
            check_seconds(bad, "workflow timeout", positive=True)


def test_seconds_non_negative_and_none() -> None:
    assert check_seconds(0, "timeout_seconds", positive=False) == 0.0
    assert check_seconds(2.5, "timeout_seconds", positive=False) == 2.5
    assert check_seconds(None, "timeout_seconds", positive=False, allow_none=True) is None
    for bad in [-0.001, -1, *NOT_FINITE, *NOT_NUMBERS]:
        with pytest.raises(DBOSValidationError):
            check_seconds(bad, "timeout_seconds", positive=False)


def test_sleep_seconds() -> None:
    assert check_sleep_seconds(0) == 0.0
    assert check_sleep_seconds(-5) == -5.0
    assert check_sleep_seconds(1.5) == 1.5
    assert check_sleep_seconds(315_360_000) == 315_360_000.0
    for bad in [315_360_001, *NOT_FINITE, *NOT_NUMBERS]:
        with pytest.raises(DBOSValidationError):
            check_sleep_seconds(bad)


def test_polling_interval() -> None:
    assert check_polling_interval(0.1) == 0.1
    assert check_polling_interval(2) == 2.0
    for bad in [0, -1, *NOT_FINITE, *NOT_NUMBERS]:
        with pytest.raises(DBOSValidationError, match="polling_interval_sec"):
            check_polling_interval(bad)


def test_priority() -> None:
    assert check_priority(None) is None
    assert check_priority(1) == 1
    assert check_priority(2_147_483_647) == 2_147_483_647
    for bad in [0, -1, 2_147_483_648, True, 1.0, "1"]:
        with pytest.raises(DBOSValidationError, match="priority"):
            check_priority(bad)


def test_count() -> None:
    assert check_count(0, "offset", minimum=0) == 0
    assert check_count(10, "limit", minimum=1, maximum=10) == 10
    assert check_count(None, "limit", minimum=1, allow_none=True) is None
    for bad in [None, -1, 11, True, 1.0, "3"]:
        with pytest.raises(DBOSValidationError, match="limit"):
            check_count(bad, "limit", minimum=0, maximum=10)


# ---------------------------------------------------------------------------------------------------------------
# Application name
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["abc", "my-app", "my_app", "a1_-", "x" * 30])
def test_app_name_accepted(name: str) -> None:
    assert check_app_name(name) == name


@pytest.mark.parametrize("name", ["ab", "Bad Name!", "MyApp", "x" * 31, "abc\n", "", None, 123, "añb"])
def test_app_name_rejected(name: object) -> None:
    with pytest.raises(DBOSValidationError, match="application name"):
        check_app_name(name)


@pytest.mark.parametrize(
    ("argv0", "expected"),
    [
        ("payment_job.py", "payment_job"),
        ("/home/me/scripts/Payment Job.py", "payment-job"),
        ("./My..Weird!!Name.py", "my-weird-name"),
        ("--x--.py", "x-app"),
        ("_ab_.py", "ab-app"),
        ("a.py", "a-app"),
        ("", "dbos-app"),
        ("-c", "dbos-app"),
        ("!!!.py", "dbos-app"),
        ("/usr/bin/pytest", "pytest"),
        ("x" * 40 + ".py", "x" * 30),
        ("tool.tar.gz", "tool-tar"),
    ],
)
def test_derive_app_name(argv0: str, expected: str) -> None:
    derived = derive_app_name(argv0)
    assert derived == expected
    assert check_app_name(derived) == derived


def test_checks_survive_python_dash_o() -> None:
    """Misuse must not rely on `assert`, so the checks behave the same under `python -O`."""
    code = (
        "from dbos._validation import check_identifier, check_polling_interval\n"
        "from dbos.error import DBOSValidationError\n"
        "for call in (lambda: check_identifier('', 'x'), lambda: check_polling_interval(0)):\n"
        "    try:\n"
        "        call()\n"
        "    except DBOSValidationError:\n"
        "        pass\n"
        "    else:\n"
        "        raise SystemExit(1)\n"
    )
    subprocess.run([sys.executable, "-O", "-c", code], check=True, timeout=60)
