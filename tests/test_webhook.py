"""afpipe.http.payloads: every bad request maps to a BadRequest (400/413); token compare."""

from __future__ import annotations

import json
from typing import Any

import pytest

from afpipe.codec import BODY_OVERHEAD_BYTES, decode_body, encode_body
from afpipe.http.payloads import (
    BadRequest,
    encode_all,
    payload_from_query,
    payloads_from_json,
    token_matches,
)
from tests.events import from_payload

ONE = {"event_name": "install", "app_id": "com.example.app"}


def test_object_is_one_event() -> None:
    assert payloads_from_json(json.dumps(ONE).encode()) == ([ONE], False)


def test_array_is_a_batch() -> None:
    two = [ONE, {"event_name": "af_purchase"}]
    assert payloads_from_json(json.dumps(two).encode()) == (two, True)


def test_array_of_one_is_still_an_array() -> None:
    assert payloads_from_json(b"[" + json.dumps(ONE).encode() + b"]") == ([ONE], True)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty"),
        (b"   \n", "empty"),
        (b"{not json", "invalid JSON"),
        (b'{"a": 1', "invalid JSON"),
        (b'{"a": 1} trailing', "invalid JSON"),
        (b"\xff\xfe", "invalid JSON"),
        (b'{"a": "\xc3("}', "invalid JSON"),  # invalid UTF-8 inside a string
        (b'{"a": "\\ud800"}', "invalid JSON"),  # a lone surrogate cannot round-trip
        (b"[" * 100_000 + b"]" * 100_000, "invalid JSON"),
        (b"[]", "array is empty"),
        (b"{}", "empty object"),
        (b'"text"', "object or an array"),
        (b"42", "object or an array"),
        (b"null", "object or an array"),
        (b"true", "object or an array"),
        (b'[{"a": 1}, 2]', "item 1 is not a JSON object"),
        (b'[{"a": 1}, [{"b": 2}]]', "item 1 is not a JSON object"),
        (b'[{"a": 1}, {}]', "event 1 is an empty object"),
    ],
)
def test_bad_json_bodies_are_400(body: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=message) as caught:
        payloads_from_json(body)
    assert caught.value.status == 400


def test_query_is_the_payload_all_strings() -> None:
    pairs = [("event_name", "install"), ("wifi", "true"), ("event_name", "re-install")]
    assert payload_from_query(pairs) == {"event_name": "re-install", "wifi": "true"}


def test_empty_query_is_400() -> None:
    with pytest.raises(BadRequest, match="no event fields") as caught:
        payload_from_query([])
    assert caught.value.status == 400


def test_encode_all_gives_ids_and_items() -> None:
    batch: list[dict[str, Any]] = [ONE, {"n": 1}]
    encoded = encode_all(batch, 4096)
    assert [e.id for e in encoded] == [from_payload(p).id for p in batch]
    assert [e.payload for e in decode_body(encode_body(encoded))] == batch


def test_event_larger_than_a_message_is_413() -> None:
    payload = {"x": "y" * 1000}
    (fits,) = encode_all([payload], 4096)
    limit = BODY_OVERHEAD_BYTES + len(fits.item)
    assert encode_all([payload], limit) == [fits]
    with pytest.raises(BadRequest, match="event 1 is larger") as caught:
        encode_all([ONE, payload], limit - 1)
    assert caught.value.status == 413


def test_unencodable_payload_is_400() -> None:
    # GET query values can carry undecodable bytes as lone surrogates
    with pytest.raises(BadRequest, match="event 0 cannot be encoded") as caught:
        encode_all([{"a": "\udcff"}], 4096)
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("presented", "ok"),
    [
        ("s3cret", True),
        ("Bearer s3cret", True),
        ("bearer s3cret", False),
        ("s3cre", False),
        ("s3cret ", False),
        ("S3CRET", False),
        ("", False),
        (None, False),
        ("Bearer ", False),
        ("\udcff", False),
    ],
)
def test_token_matches(presented: str | None, ok: bool) -> None:
    assert token_matches("s3cret", presented) is ok


def test_token_with_undecodable_bytes_from_the_environment() -> None:
    # os.environ decodes non-UTF-8 bytes with surrogateescape; that must not crash a request
    assert token_matches("tok\udcff", "tok\udcff") is True
    assert token_matches("tok\udcff", "tok") is False
