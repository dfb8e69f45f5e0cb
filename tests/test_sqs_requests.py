"""SqsQueue's requests and batch retries, against a scripted HTTP transport."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import msgspec
import pytest
import trio
import trio.testing

from afpipe.aws import AwsClient, CredentialCache, RetryPolicy, sqs_service, static_credentials
from afpipe.errors import RefusedContent, TransientError
from afpipe.queue.base import EntriesFailed, ReceivedMessage
from afpipe.queue.sqs import SqsQueue

SQS = sqs_service("us-east-1", {"AWS_ENDPOINT_URL_SQS": "https://sqs.test"})
URL = "https://sqs.test/123456789012/q"
Answer = Callable[[str, dict[str, Any]], dict[str, Any]]


class Scripted:
    """Records each call's operation and payload; answers through ``answer``."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.times: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        operation = request.headers["X-Amz-Target"].removeprefix("AmazonSQS.")
        payload = msgspec.json.decode(request.content)
        self.calls.append((operation, payload))
        self.times.append(trio.current_time())
        return httpx.Response(200, json=self.answer(operation, payload))


@asynccontextmanager
async def sqs_queue(scripted: Scripted, dlq_url: str | None = None) -> AsyncIterator[SqsQueue]:
    policy = RetryPolicy(max_attempts=4, base_delay_s=2.0)
    async with AwsClient(
        credentials=CredentialCache(static_credentials("AKID", "SECRET")),
        policy=policy,
        transport=httpx.MockTransport(scripted),
        rand=lambda: 0.5,
    ) as aws:
        await aws.credentials.get()  # in a thread: before any deadline (autojump clock)
        yield SqsQueue(aws, SQS, URL, dlq_url=dlq_url)


def failure(entry_id: str, code: str, *, sender_fault: bool) -> dict[str, Any]:
    return {"Id": entry_id, "SenderFault": sender_fault, "Code": code, "Message": code}


async def test_receive_request_is_bounded() -> None:
    scripted = Scripted(lambda op, payload: {})
    async with sqs_queue(scripted) as queue:
        with trio.fail_after(5):
            assert await queue.receive(max_messages=50, wait_s=25.0, visibility_s=90) == []
    [(operation, payload)] = scripted.calls
    assert operation == "ReceiveMessage"
    assert payload == {
        "QueueUrl": URL,
        "MaxNumberOfMessages": 10,
        "WaitTimeSeconds": 20,
        "VisibilityTimeout": 90,
        "MessageSystemAttributeNames": ["ApproximateReceiveCount", "SentTimestamp"],
    }


async def test_sender_fault_is_permanent_after_the_others_are_done(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def answer(op: str, payload: dict[str, Any]) -> dict[str, Any]:
        ids = [e["Id"] for e in payload["Entries"]]
        if ids == ["0", "1", "2"]:
            return {
                "Successful": [{"Id": "0", "MessageId": "m0"}],
                "Failed": [
                    failure("1", "InvalidMessageContents", sender_fault=True),
                    failure("2", "ServiceUnavailable", sender_fault=False),
                ],
            }
        return {"Successful": [{"Id": i, "MessageId": f"m{i}"} for i in ids]}

    scripted = Scripted(answer)
    async with sqs_queue(scripted) as queue:
        with trio.fail_after(60), pytest.raises(EntriesFailed) as caught:
            await queue.send_batch(["a", "b\x00", "c"])
    assert [[e["Id"] for e in p["Entries"]] for _, p in scripted.calls] == [["0", "1", "2"], ["2"]]
    [(index, error)] = caught.value.failed.items()
    assert index == 1 and isinstance(error, RefusedContent)
    assert error.code == "InvalidMessageContents"
    assert caught.value.message_ids == {0: "m0", 2: "m2"}  # the others are on the queue
    assert "entry 1" in str(caught.value)


async def test_entries_still_failing_are_transient(autojump_clock: trio.testing.MockClock) -> None:
    def answer(op: str, payload: dict[str, Any]) -> dict[str, Any]:
        ok = [{"Id": e["Id"]} for e in payload["Entries"] if e["Id"] != "1"]
        return {"Successful": ok, "Failed": [failure("1", "InternalError", sender_fault=False)]}

    scripted = Scripted(answer)
    async with sqs_queue(scripted) as queue:
        start = trio.current_time()
        with trio.fail_after(60), pytest.raises(EntriesFailed) as caught:
            await queue.delete(["h0", "h1"])
    assert [t - start for t in scripted.times] == [0.0, 1.0, 3.0, 7.0]
    assert [len(p["Entries"]) for _, p in scripted.calls] == [2, 1, 1, 1]
    [(index, error)] = caught.value.failed.items()
    assert index == 1 and isinstance(error, TransientError)
    assert error.code == "BatchEntriesFailed"


async def test_dead_letter_without_a_dlq_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    scripted = Scripted(lambda op, payload: {})
    message = ReceivedMessage("m1", "h1", "{", 1, 0.0)
    async with sqs_queue(scripted) as queue:
        with trio.fail_after(5), caplog.at_level(logging.WARNING, logger="afpipe.sqs"):
            assert not await queue.dead_letter(message, "bad json", message.body)
            assert not await queue.dead_letter(message, "bad json", message.body)
    assert scripted.calls == []
    assert len([r for r in caplog.records if "no dead-letter queue" in r.getMessage()]) == 1


async def test_dead_letter_request(caplog: pytest.LogCaptureFixture) -> None:
    scripted = Scripted(lambda op, payload: {"MessageId": "d1"})
    message = ReceivedMessage("m1", "h1", "{", 3, 0.0)
    async with sqs_queue(scripted, dlq_url=URL + "-dlq") as queue:
        with trio.fail_after(5):
            assert await queue.dead_letter(message, "bad\x00 json " + "!" * 5000, "{")
    [(operation, payload)] = scripted.calls
    assert operation == "SendMessage"
    assert payload["QueueUrl"] == URL + "-dlq"
    assert payload["MessageBody"] == "{"
    reason = payload["MessageAttributes"]["afpipe_reason"]["StringValue"]
    assert reason.startswith("bad\ufffd json !!!")
    assert len(reason) == 1024
    assert payload["MessageAttributes"]["afpipe_receive_count"] == {
        "DataType": "Number",
        "StringValue": "3",
    }
