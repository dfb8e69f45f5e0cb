"""How much the queues hold: Queue.size on each backend, sampled into the metrics."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import trio
import trio.testing
from prometheus_client import REGISTRY

from afpipe.errors import TransientError
from afpipe.pipeline.sampling import sample_queues
from afpipe.queue.base import QueueSize
from afpipe.queue.embedded import EmbeddedQueue
from afpipe.queue.sqs import SqsQueue
from tests.fakes import FakeQueue
from tests.fixtures.moto import receive_at_least


async def test_the_embedded_queue_counts_what_it_holds(tmp_path: Path) -> None:
    queue = EmbeddedQueue(tmp_path / "queue.db")
    try:
        before = time.time()
        await queue.send_batch(["a", "b", "c"])
        [held] = await queue.receive(max_messages=1, wait_s=0, visibility_s=30)
        assert await queue.dead_letter(held, "why", held.body)
        size = await queue.size()
        after = time.time()
    finally:
        await queue.aclose()
    assert (size.visible, size.in_flight, size.dead_letters) == (2, 1, 1)
    assert size.oldest_age_s is not None and 0 <= size.oldest_age_s <= after - before


async def test_an_empty_embedded_queue_has_an_oldest_message_of_no_age(tmp_path: Path) -> None:
    """0, as CloudWatch says of an empty SQS queue: the sampled gauge must fall back
    once the queue drains, not keep the last age it saw (it did: None skipped it)."""
    queue = EmbeddedQueue(tmp_path / "queue.db")
    try:
        await queue.send_batch(["a"])
        [held] = await queue.receive(max_messages=1, wait_s=0, visibility_s=30)
        await queue.delete([held.receipt_handle])
        empty = QueueSize(visible=0, in_flight=0, dead_letters=0, oldest_age_s=0.0)
        assert await queue.size() == empty
    finally:
        await queue.aclose()


async def test_sqs_counts_come_from_the_queue_attributes(
    sqs_queue_url: str, sqs_dlq_url: str, aws_client: Any, moto_sqs_service: Any
) -> None:
    queue = SqsQueue(aws_client, moto_sqs_service, sqs_queue_url, dlq_url=sqs_dlq_url)
    with trio.fail_after(20):
        await queue.send_batch(["a", "b", "c"])
        [held, *_] = await receive_at_least(queue, 1)
        assert await queue.dead_letter(held, "why", held.body)
        size = await queue.size()
    assert size.visible + size.in_flight == 3 and size.in_flight >= 1
    assert size.dead_letters == 1
    assert size.oldest_age_s is None  # SQS tells CloudWatch, not GetQueueAttributes
    alone = SqsQueue(aws_client, moto_sqs_service, sqs_queue_url)
    with trio.fail_after(20):
        assert (await alone.size()).dead_letters is None


class Failing(FakeQueue):
    async def size(self) -> QueueSize:
        raise TransientError("down")


def messages(queue: str, state: str) -> float | None:
    return REGISTRY.get_sample_value("afpipe_queue_messages", {"queue": queue, "state": state})


async def test_samples_are_taken_at_once_then_every_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    queue, broken = FakeQueue(), Failing()
    queue.name, broken.name = "sampled-test", "broken-test"
    queue.put("a")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sample_queues, [broken, queue], 15.0)
        await trio.sleep(1)
        assert messages("sampled-test", "visible") == 1  # a failing queue stops no other
        assert messages("sampled-test", "dead_letters") == 0
        assert messages("broken-test", "visible") is None
        queue.put("b")
        await trio.sleep(10)
        assert messages("sampled-test", "visible") == 1  # not before the interval
        await trio.sleep(5)
        assert messages("sampled-test", "visible") == 2
        nursery.cancel_scope.cancel()
