"""SqsQueue against moto in server mode: round trips, visibility, partial batch failures."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import msgspec
import pytest
import trio

from afpipe.aws import AwsClient, AwsService, CredentialCache, RetryPolicy, static_credentials
from afpipe.errors import PermanentError
from afpipe.queue.base import Queue
from afpipe.queue.sqs import SqsQueue
from tests.fixtures.moto import (
    FAKE_ACCESS_KEY_ID,
    FAKE_SECRET_ACCESS_KEY,
    receive_at_least,
    sqs_depth,
)

FAST_RETRIES = RetryPolicy(base_delay_s=0.01, max_delay_s=0.1)


class FaultInjector(httpx.AsyncBaseTransport):
    """Forwards to moto, but fails chosen entries of one batch operation.

    For each call of ``operation`` the next set in ``failures`` names entry
    Ids that are cut from the request moto sees and answered as failed with a
    transient, receiver-side error, exactly as SQS reports a partial failure.
    """

    def __init__(self, operation: str, failures: list[set[str]]) -> None:
        self.target = f"AmazonSQS.{operation}"
        self.failures = failures
        self.sent_ids: list[list[str]] = []  # entry Ids of every call of ``operation``
        self.targets: list[str] = []  # X-Amz-Target of every request
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.targets.append(request.headers["X-Amz-Target"])
        if request.headers["X-Amz-Target"] != self.target:
            return await self._inner.handle_async_request(request)
        payload = msgspec.json.decode(request.content)
        self.sent_ids.append([e["Id"] for e in payload["Entries"]])
        failing = self.failures.pop(0) if self.failures else set()
        payload["Entries"] = [e for e in payload["Entries"] if e["Id"] not in failing]
        headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
        forward = httpx.Request("POST", request.url, headers=headers, json=payload)
        response = await self._inner.handle_async_request(forward)
        result = msgspec.json.decode(await response.aread())
        await response.aclose()
        result["Failed"] = [
            *result.get("Failed", []),
            *(
                {"Id": i, "SenderFault": False, "Code": "InternalError", "Message": "x"}
                for i in failing
            ),
        ]
        return httpx.Response(response.status_code, json=result)

    async def aclose(self) -> None:
        await self._inner.aclose()


@asynccontextmanager
async def client_via(transport: httpx.AsyncBaseTransport) -> AsyncIterator[AwsClient]:
    credentials = CredentialCache(static_credentials(FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY))
    async with AwsClient(credentials=credentials, policy=FAST_RETRIES, transport=transport) as aws:
        yield aws


@pytest.fixture
def queue(aws_client: AwsClient, moto_sqs_service: AwsService, sqs_queue_url: str) -> SqsQueue:
    return SqsQueue(aws_client, moto_sqs_service, sqs_queue_url)


async def test_sqs_queue_is_a_queue(queue: SqsQueue) -> None:
    checked: Queue = queue
    assert checked.name == queue.url


async def test_send_receive_delete(queue: SqsQueue, boto_sqs: Any) -> None:
    bodies = ['{"afpipe":1,"events":[]}', "héllo ✓ \\ ' \U0001f600", "x" * 10_000]
    with trio.fail_after(20):
        ids = await queue.send_batch(bodies)
        got = await receive_at_least(queue, 3)
        assert sqs_depth(boto_sqs, queue.url) == (0, 3)
        await queue.delete([m.receipt_handle for m in got])
    assert sorted(m.body for m in got) == sorted(bodies)
    assert {m.message_id for m in got} == set(ids)
    assert all(m.receive_count == 1 for m in got)
    assert all(abs(m.sent_at_s - time.time()) < 60 for m in got)
    assert sqs_depth(boto_sqs, queue.url) == (0, 0)


async def test_receive_count_and_visibility(queue: SqsQueue, boto_sqs: Any) -> None:
    with trio.fail_after(20):
        [message_id] = await queue.send_batch(["only"])
        [first] = await queue.receive(max_messages=10, wait_s=0, visibility_s=30)
        assert await queue.receive(max_messages=10, wait_s=0, visibility_s=30) == []
        await queue.change_visibility([first.receipt_handle], 0)  # release
        [second] = await queue.receive(max_messages=10, wait_s=0, visibility_s=30)
        await queue.change_visibility([second.receipt_handle], 600)  # heartbeat
        assert await queue.receive(max_messages=10, wait_s=0, visibility_s=30) == []
    assert (first.message_id, first.receive_count) == (message_id, 1)
    assert (second.message_id, second.receive_count) == (message_id, 2)
    assert sqs_depth(boto_sqs, queue.url) == (0, 1)


async def test_delete_and_visibility_take_more_than_ten(queue: SqsQueue, boto_sqs: Any) -> None:
    with trio.fail_after(20):
        await queue.send_batch([f"a{i}" for i in range(10)])
        await queue.send_batch([f"b{i}" for i in range(3)])
        got = await receive_at_least(queue, 13)
        await queue.change_visibility([m.receipt_handle for m in got], 0)
        assert sqs_depth(boto_sqs, queue.url) == (13, 0)
        got = await receive_at_least(queue, 13)
        await queue.delete([m.receipt_handle for m in got])
    assert sqs_depth(boto_sqs, queue.url) == (0, 0)


async def test_partial_send_failure_retries_only_failed_entries(
    moto_sqs_service: AwsService, sqs_queue_url: str, boto_sqs: Any
) -> None:
    injector = FaultInjector("SendMessageBatch", [{"1", "3"}, {"3"}])
    async with client_via(injector) as aws:
        queue = SqsQueue(aws, moto_sqs_service, sqs_queue_url)
        with trio.fail_after(20):
            ids = await queue.send_batch(["a", "b", "c", "d"])
            got = await receive_at_least(queue, 4)
    assert injector.sent_ids == [["0", "1", "2", "3"], ["1", "3"], ["3"]]
    assert [m.body for m in sorted(got, key=lambda m: ids.index(m.message_id))] == list("abcd")
    assert sqs_depth(boto_sqs, sqs_queue_url) == (0, 4)  # each body exactly once


@pytest.mark.parametrize("operation", ["DeleteMessageBatch", "ChangeMessageVisibilityBatch"])
async def test_partial_failure_retried_for_handles(
    operation: str, moto_sqs_service: AwsService, sqs_queue_url: str, boto_sqs: Any
) -> None:
    injector = FaultInjector(operation, [{"0"}])
    async with client_via(injector) as aws:
        queue = SqsQueue(aws, moto_sqs_service, sqs_queue_url)
        with trio.fail_after(20):
            await queue.send_batch(["a", "b"])
            handles = [m.receipt_handle for m in await receive_at_least(queue, 2)]
            if operation == "DeleteMessageBatch":
                await queue.delete(handles)
            else:
                await queue.change_visibility(handles, 0)
    assert injector.sent_ids == [["0", "1"], ["0"]]
    assert sqs_depth(boto_sqs, sqs_queue_url) == (
        (0, 0) if operation == "DeleteMessageBatch" else (2, 0)
    )


async def test_invalid_receipt_handle_is_not_retried_nor_an_error(
    moto_sqs_service: AwsService, sqs_queue_url: str
) -> None:
    """Deleted or expired under us: nothing to delete, nothing to retry (a debug log)."""
    injector = FaultInjector("DeleteMessageBatch", [])
    async with client_via(injector) as aws:
        queue = SqsQueue(aws, moto_sqs_service, sqs_queue_url)
        with trio.fail_after(20):
            await queue.delete(["not-a-receipt-handle"])
    assert injector.sent_ids == [["0"]]


async def test_attributes_and_ping(
    aws_client: AwsClient, moto_sqs_service: AwsService, make_sqs_queue: Callable[..., str]
) -> None:
    dlq_url = make_sqs_queue("afpipe-dlq")
    dlq_arn = f"arn:aws:sqs:us-east-1:123456789012:{dlq_url.rsplit('/', 1)[1]}"
    redrive = msgspec.json.encode({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5}).decode()
    url = make_sqs_queue("afpipe-test", VisibilityTimeout="120", RedrivePolicy=redrive)
    queue = SqsQueue(aws_client, moto_sqs_service, url)
    with trio.fail_after(20):
        await queue.ping()
        attributes = await queue.attributes()
    assert attributes["VisibilityTimeout"] == "120"
    assert attributes["ApproximateNumberOfMessages"] == "0"
    assert msgspec.json.decode(attributes["RedrivePolicy"])["deadLetterTargetArn"] == dlq_arn


async def test_missing_queue_is_permanent(
    aws_client: AwsClient, moto_sqs_service: AwsService, sqs_queue_url: str
) -> None:
    queue = SqsQueue(aws_client, moto_sqs_service, sqs_queue_url + "-missing")
    with trio.fail_after(20), pytest.raises(PermanentError) as caught:
        await queue.ping()
    assert caught.value.code == "AWS.SimpleQueueService.NonExistentQueue"
    assert caught.value.request_id


async def test_send_batch_bounds(queue: SqsQueue) -> None:
    with trio.fail_after(20):
        assert await queue.send_batch([]) == []
        with pytest.raises(ValueError, match="at most 10"):
            await queue.send_batch(["x"] * 11)
