"""afpipe.codec: message bodies hold many events and never exceed the byte limit."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from afpipe.codec import (
    BODY_OVERHEAD_BYTES,
    DecodeError,
    EncodedEvent,
    decode_body,
    encode_body,
    encode_event,
    pack,
)
from tests.events import from_payload

payloads = st.dictionaries(
    st.text(min_size=1, max_size=10),
    st.one_of(st.text(max_size=60), st.integers(), st.booleans(), st.none()),
    min_size=1,
    max_size=5,
)


def body_size(items: Sequence[EncodedEvent]) -> int:
    """Exact UTF-8 size of the body holding ``items``: what pack's groups are held to."""
    return len(encode_body(items).encode("utf-8"))


def test_encode_decode_round_trip() -> None:
    batch = [{"event_name": "install", "n": i, "text": "ß€😀"} for i in range(5)]
    items = [encode_event(p) for p in batch]
    events = decode_body(encode_body(items))
    assert [e.payload for e in events] == batch
    assert [e.id for e in events] == [from_payload(p).id for p in batch]
    assert [e.id for e in events] == [item.id for item in items]


def test_body_is_the_documented_envelope() -> None:
    item = encode_event({"a": 1})
    assert json.loads(encode_body([item])) == {
        "afpipe": 1,
        "events": [{"id": item.id, "payload": {"a": 1}}],
    }


def test_decode_accepts_bytes_and_items_without_id() -> None:
    body = b'{"afpipe":1,"events":[{"payload":{"b":2,"a":1}}]}'
    (event,) = decode_body(body)
    assert event.payload == {"a": 1, "b": 2}
    assert event.id == from_payload({"a": 1, "b": 2}).id


def test_bare_old_service_object_decodes_as_one_event() -> None:
    payload = {"event_name": "af_purchase", "app_id": "id1", "afpipe_like": 1}
    (event,) = decode_body(json.dumps(payload))
    assert event.payload == payload
    assert event.id == from_payload(payload).id


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("", "not valid JSON"),
        ("{not json", "not valid JSON"),
        (b"\xff\xfe{}", "not valid JSON"),
        ("[1, 2]", "neither"),
        ('[{"event_name": "x"}]', "neither"),
        ('"just a string"', "neither"),
        ("42", "neither"),
        ("null", "neither"),
        ("{}", "empty JSON object"),
        ('{"afpipe": 1, "events": "nope"}', "neither"),
        ('{"afpipe": 1, "events": [{"payload": 5}]}', "neither"),
        ('{"afpipe": 1, "events": [{"id": "x"}]}', "neither"),
    ],
)
def test_undecodable_bodies_raise_decode_error_with_reason(body: str | bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_body(body)


def test_pack_rejects_an_event_larger_than_a_message() -> None:
    big = encode_event({"x": "y" * 500})
    with pytest.raises(ValueError, match="larger than one queue message"):
        list(pack([big], BODY_OVERHEAD_BYTES + len(big.item) - 1))
    # exactly fitting is fine
    assert list(pack([big], BODY_OVERHEAD_BYTES + len(big.item))) == [[big]]


def test_pack_of_nothing_is_nothing() -> None:
    assert list(pack([], 1024)) == []


@settings(max_examples=150, deadline=None)
@given(st.lists(payloads, max_size=30), st.integers(min_value=60, max_value=2000))
def test_pack_never_exceeds_the_limit_and_keeps_order(
    batch: list[dict[str, Any]], max_bytes: int
) -> None:
    items = [encode_event(p) for p in batch]
    if any(BODY_OVERHEAD_BYTES + len(i.item) > max_bytes for i in items):
        with pytest.raises(ValueError):
            list(pack(items, max_bytes))
        return
    groups = list(pack(items, max_bytes))
    assert [i for g in groups for i in g] == items  # nothing lost, nothing reordered
    for index, group in enumerate(groups):
        assert group, "no empty body"
        body = encode_body(group)
        assert len(body.encode("utf-8")) == body_size(group) <= max_bytes
        assert [e.payload for e in decode_body(body)] == [
            json.loads(i.item)["payload"] for i in group
        ]
        if index + 1 < len(groups):
            # greedy: the next event would not have fitted in this body
            assert body_size([*group, groups[index + 1][0]]) > max_bytes


@pytest.mark.parametrize(("slack", "per_body"), [(-1, 1), (0, 2), (1, 2)])
def test_pack_at_the_exact_byte_boundary(slack: int, per_body: int) -> None:
    items = [encode_event({"n": i}) for i in range(10)]  # all the same size
    max_bytes = body_size(items[:2]) + slack
    groups = list(pack(items, max_bytes))
    assert [len(g) for g in groups] == [per_body] * (10 // per_body)
    assert all(body_size(g) <= max_bytes for g in groups)


def test_encoded_event_item_is_its_id_and_canonical_payload() -> None:
    item = encode_event({"b": [1, {"d": 1, "c": 2}], "a": None})
    assert item == EncodedEvent(
        id=from_payload({"a": None, "b": [1, {"c": 2, "d": 1}]}).id,
        item=b'{"id":"' + item.id.encode() + b'","payload":{"a":null,"b":[1,{"c":2,"d":1}]}}',
    )
