"""Events holding characters SQS refuses (U+FFFE, U+FFFF...) are queued byte-exact.

SQS refuses a whole SendMessage(Batch) call for one such character
(InvalidMessageContents); the producer packs many requests into one message, so
one request's characters must never fail the others, nor be retried for ever.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from afpipe.aws import AwsClient, AwsService
from afpipe.codec import BODY_OVERHEAD_BYTES, EncodedEvent, decode_body, encode_body, encode_event
from afpipe.errors import PermanentError, RefusedContent
from afpipe.health import Health
from afpipe.http.app import create_app
from afpipe.http.config import IngestConfig
from afpipe.producer import Producer, Ticket
from afpipe.queue.base import EntriesFailed
from afpipe.queue.sqs import SqsQueue
from tests.events import from_payload
from tests.fakes import FakeQueue
from tests.fixtures.moto import receive_at_least, sqs_depth

# SQS's rule, written out here rather than taken from afpipe.
SQS_ALLOWED = re.compile("[\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*")
HOSTILE = {
    "event_name": "af_purchase\ufffe",
    "customer_user_id": "\uffff",
    "key \ufffe": ["\x00\x01\x1f", "\ud7ff\ue000\ufffd\U0010ffff", "é😀"],
}
TIMEOUT_S = 20
# Any code point JSON text can hold (no lone surrogates), the edges of SQS's set often.
# (Built by hand: st.text drops noncharacters such as U+FFFE from its alphabet.)
CHARACTERS = st.one_of(
    st.sampled_from("\t\n\r\x00\x1f\x20\ud7ff\ue000\ufffd\ufffe\uffff\U00010000\U0010ffff"),
    st.characters(exclude_categories=["Cs"]),
)


def text(max_size: int) -> st.SearchStrategy[str]:
    return st.lists(CHARACTERS, max_size=max_size).map("".join)


def test_bodies_escape_every_character_sqs_refuses() -> None:
    item = encode_event(HOSTILE)
    body = encode_body([item])
    assert SQS_ALLOWED.fullmatch(body), body
    assert b"\\ufffe" in item.item and b"\\uffff" in item.item
    [event] = decode_body(body)
    assert event.payload == HOSTILE  # byte-exact
    assert event.id == item.id == from_payload(HOSTILE).id  # the id is not changed
    assert BODY_OVERHEAD_BYTES + len(item.item) == len(body.encode())  # what senders count


def test_only_refused_characters_are_escaped() -> None:
    item = encode_event({"a": "é😀\ufffd", "b": "\ufffe"})
    assert item.item.endswith('"payload":{"a":"é😀\ufffd","b":"\\ufffe"}}'.encode())


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(text(max_size=8), text(max_size=40), min_size=1, max_size=4))
def test_any_payload_makes_a_body_sqs_accepts_and_decodes_exactly(payload: dict[str, Any]) -> None:
    item = encode_event(payload)
    body = encode_body([item, encode_event({"n": 1})])
    assert SQS_ALLOWED.fullmatch(body)
    assert [e.payload for e in decode_body(body)] == [payload, {"n": 1}]
    assert decode_body(body)[0].id == from_payload(payload).id


def request(tag: str) -> list[EncodedEvent]:
    return [encode_event({"request": tag, "n": n}) for n in range(3)]


async def test_a_hostile_event_among_concurrent_requests_is_queued_byte_exact(
    aws_client: AwsClient, moto_sqs_service: AwsService, sqs_queue_url: str
) -> None:
    queue = SqsQueue(aws_client, moto_sqs_service, sqs_queue_url)
    producer = Producer(queue, max_message_bytes=256 * 1024, max_pending_events=100, senders=1)
    requests = [request("a"), [encode_event(HOSTILE)], request("b")]
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(producer.run)
            tickets = [producer.submit(events) for events in requests]  # one message
            for ticket in tickets:
                await ticket.done.wait()
            producer.close()
        assert [t.error for t in tickets] == [None, None, None]
        got = await receive_at_least(queue, 1)
    payloads = [e.payload for m in got for e in decode_body(m.body)]
    assert HOSTILE in payloads and len(payloads) == 7


async def test_sqs_send_batch_fails_only_the_refused_entry(
    aws_client: AwsClient, moto_sqs_service: AwsService, sqs_queue_url: str, boto_sqs: Any
) -> None:
    queue = SqsQueue(aws_client, moto_sqs_service, sqs_queue_url)
    with trio.fail_after(TIMEOUT_S), pytest.raises(EntriesFailed) as caught:
        await queue.send_batch(["good 0", "raw \ufffe, as if the codec missed it", "good 2"])
    assert list(caught.value.failed) == [1]
    assert isinstance(caught.value.failed[1], RefusedContent)
    assert sorted(caught.value.message_ids) == [0, 2]
    with trio.fail_after(TIMEOUT_S):
        got = await receive_at_least(queue, 2)
    assert sorted(m.body for m in got) == ["good 0", "good 2"]
    assert {m.message_id for m in got} == set(caught.value.message_ids.values())
    assert sqs_depth(boto_sqs, sqs_queue_url) == (0, 2)


async def test_a_single_refused_body_is_reported_as_refused_content(
    aws_client: AwsClient, moto_sqs_service: AwsService, sqs_queue_url: str
) -> None:
    queue = SqsQueue(aws_client, moto_sqs_service, sqs_queue_url)
    with trio.fail_after(TIMEOUT_S), pytest.raises(EntriesFailed) as caught:
        await queue.send_batch(["\uffff"])
    [error] = caught.value.failed.values()
    assert isinstance(error, RefusedContent) and isinstance(error, PermanentError)
    assert error.code == "InvalidMessageContents"


def raw(tag: str, text: str) -> EncodedEvent:
    """An event the codec did not escape (a bug, or a new rule at SQS)."""
    good = encode_event({"request": tag})
    return EncodedEvent(id=good.id, item=good.item.replace(tag.encode(), text.encode()))


async def test_the_producer_fails_only_the_request_at_fault(
    autojump_clock: trio.testing.MockClock,
) -> None:
    queue = FakeQueue()  # as strict as SQS behind SqsQueue
    producer = Producer(queue, max_message_bytes=4096, max_pending_events=100, senders=1)
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(producer.run)
            tickets: list[Ticket] = [
                producer.submit(request("a")),
                producer.submit([raw("bad", "\ufffe"), *request("bad-too")]),
                producer.submit(request("b")),
            ]
            for ticket in tickets:
                await ticket.done.wait()
            producer.close()
    assert tickets[0].error is None and tickets[2].error is None
    assert isinstance(tickets[1].error, RefusedContent)
    queued = [
        e.payload["request"] for m in queue.remaining() for e in decode_body(queue.body_of(m))
    ]
    assert sorted(queued) == ["a"] * 3 + ["b"] * 3  # the neighbours, once each
    assert len(queue.send_calls) == 2  # the packed message, then each request alone in one call


async def test_a_request_the_queue_can_never_take_is_answered_400() -> None:
    """4xx only for what can never succeed: the queue refused this request's own message."""
    queue = FakeQueue()
    queue.send_error = EntriesFailed("SendMessageBatch", {0: RefusedContent("refused")})
    producer = Producer(queue, max_message_bytes=64 * 1024, max_pending_events=10, senders=1)
    config = IngestConfig(
        max_body_bytes=16 * 1024, max_message_bytes=64 * 1024, enqueue_timeout_s=5
    )
    app = create_app(producer, Health(fail_after_s=30), config)
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(producer.run)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://afpipe") as client:
                response = await client.post("/webhook/appsflyer", json={"event_name": "x"})
            producer.close()
    assert response.status_code == 400
    assert response.json()["success"] is False
    assert "Retry-After" not in response.headers
