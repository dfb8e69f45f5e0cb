"""SendMessageBatch's entries together are bounded like one message (BatchRequestTooLong).

A sender that packs ten full bodies into one call fails the call every time, and
what it carries cycles for ever: every batch afpipe sends must fit the total.
"""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from afpipe.aws import AwsClient, AwsService
from afpipe.codec import decode_body, encode_event
from afpipe.pipeline.secondary import Secondary
from afpipe.producer import Producer
from afpipe.queue.base import group_by_size
from afpipe.queue.sqs import SqsQueue
from tests.events import from_payload
from tests.fakes import FakeQueue, FakeWarehouse
from tests.fixtures.moto import receive_at_least

TIMEOUT_S = 30
KIB = 1024


def big_events(count: int, pad_bytes: int) -> list[Any]:
    return [
        from_payload({"event_name": "install", "n": n, "pad": "x" * pad_bytes})
        for n in range(count)
    ]


async def test_secondary_hand_off_fits_sqs_batch_total(
    aws_client: AwsClient, moto_sqs_service: AwsService, sqs_queue_url: str
) -> None:
    """1.2 MB of events in 256 KiB bodies: more than SQS takes in one call."""
    events = big_events(60, 20_000)
    retry = SqsQueue(aws_client, moto_sqs_service, sqs_queue_url)
    down = FakeWarehouse(name="secondary", transient_failures=1)
    sink = Secondary(down, retry, timeout_s=10, body_limit_bytes=256 * KIB)
    with trio.fail_after(TIMEOUT_S):
        delivery = await sink.deliver(events)
        assert delivery.safe and delivery.rejected == []
        got = await receive_at_least(retry, 5)
    handed = [e.id for m in got for e in decode_body(m.body)]
    assert sorted(handed) == sorted(e.id for e in events)


async def test_secondary_hand_off_sends_within_its_body_limit_in_all(
    autojump_clock: trio.testing.MockClock,
) -> None:
    events = big_events(40, 3_000)  # 120 KB
    retry = FakeQueue()
    retry.max_batch_bytes = 16 * KIB  # an old queue's limit, scaled down
    sink = Secondary(
        FakeWarehouse(transient_failures=1), retry, timeout_s=5, body_limit_bytes=16 * KIB
    )
    assert (await sink.deliver(events)).safe
    assert all(sum(len(b.encode()) for b in call) <= 16 * KIB for call in retry.send_calls)
    handed = [e.id for m in retry.remaining() for e in decode_body(retry.body_of(m))]
    assert sorted(handed) == sorted(e.id for e in events)


async def test_producer_batches_fit_the_total_under_concurrent_load(
    autojump_clock: trio.testing.MockClock,
) -> None:
    queue = FakeQueue()
    queue.max_batch_bytes = 1000
    producer = Producer(queue, max_message_bytes=1000, max_pending_events=1000, senders=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(producer.run)
        tickets = [
            producer.submit(
                [
                    encode_event({"r": r, "n": n, "pad": "y" * (r * 31 % 200)})
                    for n in range(1 + r % 3)
                ]
            )
            for r in range(50)
        ]
        for ticket in tickets:
            await ticket.done.wait()
        producer.close()
    assert all(t.error is None for t in tickets)
    assert all(sum(len(b.encode()) for b in call) <= 1000 for call in queue.send_calls)


def test_group_by_size_bounds_count_and_total_bytes() -> None:
    bodies = ["é" * 100, "x" * 300, "x" * 50, "x" * 500, *["z"] * 12]
    groups = list(group_by_size(bodies, 500))
    assert [i for g in groups for i in g] == list(range(len(bodies)))  # all, in order
    for group in groups:
        assert len(group) <= 10
        assert sum(len(bodies[i].encode()) for i in group) <= 500
    assert groups[:3] == [[0, 1], [2], [3]]
