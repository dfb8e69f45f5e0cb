"""Dead letters on moto: dead_letter keeps the reason, peek shows it, redrive brings it back."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from afpipe.aws import AwsClient, AwsService
from afpipe.errors import ConfigError
from afpipe.queue.base import ReceivedMessage
from afpipe.queue.sqs import SqsQueue
from afpipe.queue.sqs_dead_letters import peek_dead_letters, redrive
from tests.fixtures.moto import receive_at_least, sqs_depth


@pytest.fixture
def queue(
    aws_client: AwsClient, moto_sqs_service: AwsService, sqs_queue_url: str, sqs_dlq_url: str
) -> SqsQueue:
    return SqsQueue(aws_client, moto_sqs_service, sqs_queue_url, dlq_url=sqs_dlq_url)


@pytest.fixture
def dlq(aws_client: AwsClient, moto_sqs_service: AwsService, sqs_dlq_url: str) -> SqsQueue:
    return SqsQueue(aws_client, moto_sqs_service, sqs_dlq_url)


async def dead_letter_all(queue: SqsQueue, bodies: list[str]) -> list[ReceivedMessage]:
    """Send ``bodies``, receive them and dead-letter each with reason ``why <body>``."""
    await queue.send_batch(bodies)
    messages = await receive_at_least(queue, len(bodies))
    for message in messages:
        assert await queue.dead_letter(message, f"why {message.body}", message.body)
    await queue.delete([m.receipt_handle for m in messages])
    return messages


async def test_dead_letter_keeps_body_and_reason(
    queue: SqsQueue, sqs_dlq_url: str, boto_sqs: Any
) -> None:
    with trio.fail_after(20):
        [message] = await dead_letter_all(queue, ['{"not": "an envelope"'])
    answer = boto_sqs.receive_message(
        QueueUrl=sqs_dlq_url, MessageAttributeNames=["All"], WaitTimeSeconds=0
    )
    [kept] = answer["Messages"]
    attributes = {k: v["StringValue"] for k, v in kept["MessageAttributes"].items()}
    assert kept["Body"] == message.body
    assert attributes == {
        "afpipe_reason": f"why {message.body}",
        "afpipe_source_message_id": message.message_id,
        "afpipe_receive_count": "1",
    }


async def test_peek_shows_reasons_and_deletes_nothing(
    queue: SqsQueue, dlq: SqsQueue, boto_sqs: Any
) -> None:
    with trio.fail_after(20):
        messages = await dead_letter_all(queue, ["a", "b", "c"])
        peeked = await peek_dead_letters(dlq, 10, wait_s=0)
        again = await peek_dead_letters(dlq, 2, wait_s=0)
    assert sorted((p.body, p.reason) for p in peeked) == [
        ("a", "why a"),
        ("b", "why b"),
        ("c", "why c"),
    ]
    by_body = {m.body: m for m in messages}
    assert all(p.source_message_id == by_body[p.body].message_id for p in peeked)
    assert all(p.receive_count == 1 for p in peeked)
    assert len(again) == 2
    assert sqs_depth(boto_sqs, dlq.url) == (3, 0)  # all still there, and visible


async def test_redrive_moves_messages_back(queue: SqsQueue, dlq: SqsQueue, boto_sqs: Any) -> None:
    with trio.fail_after(20):
        await dead_letter_all(queue, ["p1", "p2", "p3"])
        assert await redrive(dlq, queue, 2, wait_s=0) == 2  # bounded
        assert sqs_depth(boto_sqs, dlq.url) == (1, 0)
        assert await redrive(dlq, queue, 10, wait_s=0) == 1
        back = await receive_at_least(queue, 3)
    assert sorted(m.body for m in back) == ["p1", "p2", "p3"]
    assert sqs_depth(boto_sqs, dlq.url) == (0, 0)


async def test_redrive_of_an_empty_dlq(queue: SqsQueue, dlq: SqsQueue) -> None:
    with trio.fail_after(20):
        assert await redrive(dlq, queue, 10, wait_s=0) == 0
        assert await peek_dead_letters(dlq, 10, wait_s=0) == []


async def test_the_queue_peeks_and_redrives_its_own_dead_letters(
    queue: SqsQueue, dlq: SqsQueue, boto_sqs: Any
) -> None:
    """Through the Queue protocol, as `afpipe dlq` uses it whatever the backend."""
    with trio.fail_after(20):
        await dead_letter_all(queue, ["q1", "q2"])
        peeked = await queue.peek_dead_letters(10)
        assert sorted(p.body for p in peeked) == ["q1", "q2"]
        assert await queue.redrive(10) == 2
        back = await receive_at_least(queue, 2)
    assert sorted(m.body for m in back) == ["q1", "q2"]
    assert sqs_depth(boto_sqs, dlq.url) == (0, 0)


async def test_without_a_dlq_peek_and_redrive_say_so(
    aws_client: AwsClient, moto_sqs_service: AwsService, sqs_queue_url: str
) -> None:
    plain = SqsQueue(aws_client, moto_sqs_service, sqs_queue_url)
    with pytest.raises(ConfigError, match="AFPIPE_DLQ_URL: not set"):
        await plain.peek_dead_letters(10)
    with pytest.raises(ConfigError, match="AFPIPE_DLQ_URL: not set"):
        await plain.redrive(10)
