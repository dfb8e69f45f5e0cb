"""afpipe.event: deterministic ids, canonical JSON and the warehouse columns."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from afpipe.event import (
    DEVICE_ID_FIELDS,
    VARCHAR_MAX_BYTES,
    Row,
    canonical_json,
    event_id,
    parse_event_time,
    to_row,
    truncate_utf8,
)
from tests.events import from_payload

IOS_PURCHASE: dict[str, Any] = {
    "api_version": "2.0",
    "app_id": "id123456789",
    "platform": "ios",
    "appsflyer_id": "1700000000000-1234567",
    "customer_user_id": "user-42",
    "idfa": "00000000-0000-0000-0000-000000000000",
    "idfv": "6F1A2B3C-1111-2222-3333-444455556666",
    "event_name": "af_purchase",
    "event_time": "2024-03-02 12:00:01.123",
    "event_value": '{"af_revenue":"9.99","af_currency":"USD"}',
    "event_revenue": "9.99",
    "is_retargeting": False,
    "country_code": "US",
}


def test_id_is_sha256_of_sorted_compact_json() -> None:
    payload = {"b": 1, "a": {"z": [1, 2], "y": "é"}}
    expected = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_json(payload) == expected.encode("utf-8")
    assert from_payload(payload).id == hashlib.sha256(expected.encode("utf-8")).hexdigest()


def test_id_ignores_key_order_at_every_depth() -> None:
    one = {"a": 1, "b": {"c": 2, "d": 3}}
    two = {"b": {"d": 3, "c": 2}, "a": 1}
    assert from_payload(one).id == from_payload(two).id


def test_id_differs_when_any_value_differs() -> None:
    other = dict(IOS_PURCHASE, event_time="2024-03-02 12:00:01.124")
    assert from_payload(IOS_PURCHASE).id != from_payload(other).id
    # a string "1" and a number 1 are different payloads
    assert from_payload({"x": "1"}).id != from_payload({"x": 1}).id


@given(
    st.dictionaries(
        st.text(max_size=8),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
            max_leaves=10,
        ),
        max_size=6,
    )
)
def test_canonical_json_round_trips_and_is_stable(payload: dict[str, Any]) -> None:
    canonical = canonical_json(payload)
    assert json.loads(canonical) == payload
    # re-encoding the decoded value gives the same bytes, hence the same id
    assert canonical_json(json.loads(canonical)) == canonical
    assert event_id(canonical) == from_payload(payload).id


def test_to_row_maps_the_columns() -> None:
    event = from_payload(IOS_PURCHASE)
    row = to_row(event)
    assert row == Row(
        id=event.id,
        event_time="2024-03-02 12:00:01.123000",
        event_name="af_purchase",
        app_id="id123456789",
        user_id="user-42",
        device_id="00000000-0000-0000-0000-000000000000",
        event_data=canonical_json(IOS_PURCHASE).decode("utf-8"),
    )
    # event_data keeps the whole payload, no field dropped
    assert json.loads(row.event_data) == IOS_PURCHASE


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ("2023-11-01 04:05:07.925", "2023-11-01 04:05:07.925000"),
        ("2023-11-01 04:05:07", "2023-11-01 04:05:07.000000"),
        ("2023-11-01T04:05:07.5", "2023-11-01 04:05:07.500000"),
        (" 2023-11-01 04:05:07.925 ", "2023-11-01 04:05:07.925000"),
        ("2023-11-01", None),
        ("2023-13-01 04:05:07.925", None),
        ("2023-02-30 04:05:07", None),
        ("yesterday", None),
        ("", None),
        ("2023-11-01 04:05:07.925" + " " * 40, None),
        (1698811507, None),
        (None, None),
    ],
)
def test_parse_event_time(raw: Any, parsed: str | None) -> None:
    assert parse_event_time(raw) == parsed


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ("0999-01-02 03:04:05.678", "0999-01-02 03:04:05.678000"),
        ("0001-01-01 00:00:00", "0001-01-01 00:00:00.000000"),
        ("0099-12-31T23:59:59.5", "0099-12-31 23:59:59.500000"),
    ],
)
def test_years_before_1000_keep_four_digits(raw: str, parsed: str) -> None:
    """glibc's strftime("%Y") writes year 999 as "999", a TIMESTAMP Redshift refuses:
    the event was dead-lettered. The year is always four digits."""
    assert parse_event_time(raw) == parsed
    assert to_row(from_payload({"event_time": raw})).event_time == parsed


def test_unparseable_event_time_is_null_and_kept_in_event_data() -> None:
    payload = {"event_name": "install", "event_time": "not a time"}
    row = to_row(from_payload(payload))
    assert row.event_time is None
    assert json.loads(row.event_data)["event_time"] == "not a time"


@pytest.mark.parametrize("present", DEVICE_ID_FIELDS)
def test_device_id_is_the_first_present_field(present: str) -> None:
    index = DEVICE_ID_FIELDS.index(present)
    # this field and every later one are present; earlier ones are absent or empty
    payload: dict[str, Any] = {name: f"value-of-{name}" for name in DEVICE_ID_FIELDS[index:]}
    payload.update({name: "" for name in DEVICE_ID_FIELDS[:index]})
    assert to_row(from_payload(payload)).device_id == f"value-of-{present}"


def test_device_id_is_null_when_none_is_present() -> None:
    assert to_row(from_payload({"event_name": "x", "idfa": None})).device_id is None


def test_absent_and_empty_columns_are_null() -> None:
    row = to_row(from_payload({"event_name": "", "other": "x"}))
    assert (row.event_name, row.app_id, row.user_id, row.device_id, row.event_time) == (
        None,
        None,
        None,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (True, "true"),
        (False, "false"),
        (42, "42"),
        (9.5, "9.5"),
        ({"b": 1, "a": 2}, '{"a":2,"b":1}'),
        (["x", 1], '["x",1]'),
    ],
)
def test_non_string_values_become_text(value: Any, text: str) -> None:
    row = to_row(from_payload({"customer_user_id": value, "app_id": value}))
    assert row.user_id == text
    assert row.app_id == text


def test_truncate_keeps_short_text() -> None:
    assert truncate_utf8("a" * VARCHAR_MAX_BYTES) == "a" * VARCHAR_MAX_BYTES
    assert truncate_utf8("€" * 85) == "€" * 85  # exactly 255 bytes


@pytest.mark.parametrize("char", ["é", "€", "😀"])
def test_truncate_cuts_at_a_character_boundary(char: str) -> None:
    text = "a" + char * 300  # the cut falls inside a multi-byte character for some widths
    cut = truncate_utf8(text)
    raw = cut.encode("utf-8")
    assert len(raw) <= VARCHAR_MAX_BYTES
    assert len(raw) > VARCHAR_MAX_BYTES - len(char.encode("utf-8"))  # no more cut than needed
    assert text.startswith(cut)


@given(st.text(max_size=400), st.integers(min_value=0, max_value=300))
def test_truncate_property(text: str, max_bytes: int) -> None:
    cut = truncate_utf8(text, max_bytes)
    assert text.startswith(cut)
    assert len(cut.encode("utf-8")) <= max_bytes
    if cut != text:
        # the next character would not have fitted
        assert len(text[: len(cut) + 1].encode("utf-8")) > max_bytes


def test_long_column_values_are_truncated_but_event_data_is_whole() -> None:
    long_name = "ü" * 200  # 400 bytes
    row = to_row(from_payload({"event_name": long_name, "idfa": "x" * 300}))
    assert row.event_name == "ü" * 127  # 254 bytes: the 128th would make 256
    assert row.device_id == "x" * 255
    assert json.loads(row.event_data) == {"event_name": long_name, "idfa": "x" * 300}
