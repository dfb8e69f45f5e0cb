"""afpipe.pipeline.batching: pure batching by rows, bytes and linger (no event loop)."""

from __future__ import annotations

import math

import pytest

from afpipe.event import Event
from afpipe.pipeline.batching import Batch, Held, events_of
from afpipe.queue.base import ReceivedMessage
from tests.events import from_payload


def held(body: str, *events: Event, message_id: str = "m", alone: bool = False) -> Held:
    message = ReceivedMessage(message_id, f"{message_id}-handle", body, 1, 0.0)
    return Held(message=message, events=list(events), alone=alone)


def some_events(count: int, tag: str = "") -> list[Event]:
    return [from_payload({"tag": tag, "n": n}) for n in range(count)]


def test_empty_batch() -> None:
    batch = Batch(max_rows=10, max_bytes=100, linger_s=1.0)
    assert not batch
    assert not batch.full
    assert batch.deadline == math.inf
    assert batch.take() == []


def test_linger_deadline_starts_at_the_first_message() -> None:
    batch = Batch(max_rows=10, max_bytes=10_000, linger_s=2.5)
    batch.add(held("a", *some_events(1)), now=100.0)
    assert batch.deadline == 102.5
    batch.add(held("b", *some_events(1, "b")), now=101.0)
    assert batch.deadline == 102.5  # not pushed back by later messages
    assert batch and not batch.full


def test_full_by_rows() -> None:
    batch = Batch(max_rows=5, max_bytes=10_000, linger_s=1.0)
    batch.add(held("a", *some_events(3, "a")), now=0.0)
    assert not batch.full
    batch.add(held("b", *some_events(2, "b")), now=0.0)
    assert batch.full
    assert batch.rows == 5


def test_full_by_bytes_counts_utf8_bytes() -> None:
    batch = Batch(max_rows=1000, max_bytes=12, linger_s=1.0)
    batch.add(held("€€€"), now=0.0)  # 3 characters, 9 bytes
    assert batch.size_bytes == 9
    assert not batch.full
    batch.add(held("€"), now=0.0)
    assert batch.size_bytes == 12
    assert batch.full


def test_a_batch_holds_whole_messages_even_past_the_row_limit() -> None:
    batch = Batch(max_rows=3, max_bytes=10_000, linger_s=1.0)
    big = held("big", *some_events(7))
    batch.add(big, now=0.0)
    assert batch.full
    assert batch.take() == [big]  # never split: delete-after-commit is per message


def test_take_resets() -> None:
    batch = Batch(max_rows=2, max_bytes=10_000, linger_s=1.0)
    items = [held("a", *some_events(1, "a")), held("b", *some_events(1, "b"))]
    for item in items:
        batch.add(item, now=5.0)
    assert batch.full
    assert batch.take() == items
    assert (batch.rows, batch.size_bytes, batch.deadline, bool(batch)) == (0, 0, math.inf, False)
    batch.add(items[0], now=9.0)
    assert batch.deadline == 10.0


def test_events_of_keeps_order_and_each_id_once() -> None:
    one, two, three = some_events(3)
    items = [
        held("x", one, two, message_id="m1"),
        held("y", two, three, one, message_id="m2"),  # a repeated send of the same events
        held("z", message_id="m3"),
    ]
    assert events_of(items) == [one, two, three]
    assert events_of([]) == []


def test_a_message_loaded_alone_is_a_full_batch_by_itself() -> None:
    batch = Batch(max_rows=1000, max_bytes=10_000, linger_s=1.0)
    worn = held("w", *some_events(1, "w"), message_id="w", alone=True)
    assert batch.fits(worn)
    batch.add(worn, now=0.0)
    assert batch.full  # at once: no linger, nothing else joins
    other = held("a", *some_events(1, "a"), message_id="a")
    assert not batch.fits(other)
    with pytest.raises(ValueError, match="alone"):
        batch.add(other, now=0.0)
    assert batch.take() == [worn]
    assert not batch.full


def test_a_message_loaded_alone_joins_no_started_batch() -> None:
    batch = Batch(max_rows=1000, max_bytes=10_000, linger_s=1.0)
    first = held("a", *some_events(1, "a"), message_id="a")
    batch.add(first, now=0.0)
    worn = held("w", *some_events(1, "w"), message_id="w", alone=True)
    assert not batch.fits(worn)
    with pytest.raises(ValueError, match="alone"):
        batch.add(worn, now=0.0)
    assert batch.fits(held("b", *some_events(1, "b"), message_id="b"))  # others still do
    assert batch.take() == [first]
    assert batch.fits(worn)
