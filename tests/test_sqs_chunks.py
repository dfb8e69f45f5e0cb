"""Delete and visibility changes go in chunks of ten; each entry's failure is its own.

A handle deleted under a heartbeat (a race), or expired, fails its entry only:
every other chunk is still sent, the heartbeat of the other messages goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytest
import trio
import trio.testing

from afpipe.aws import AwsClient, AwsService, sqs_api
from afpipe.errors import PermanentError
from afpipe.pipeline.inflight import InFlight, heartbeat
from afpipe.queue.base import EntriesFailed, ReceivedMessage
from afpipe.queue.sqs import SqsQueue
from tests.fakes import FakeQueue
from tests.fixtures.moto import receive_at_least, sqs_depth
from tests.test_sqs_requests import Scripted, failure, sqs_queue

TIMEOUT_S = 20


async def held(queue: SqsQueue, count: int) -> list[str]:
    for start in range(0, count, 10):
        await queue.send_batch([f"m{i}" for i in range(start, min(count, start + 10))])
    return [m.receipt_handle for m in await receive_at_least(queue, count)]


@pytest.fixture
def queue(aws_client: AwsClient, moto_sqs_service: AwsService, sqs_queue_url: str) -> SqsQueue:
    return SqsQueue(aws_client, moto_sqs_service, sqs_queue_url)


async def test_release_reaches_every_chunk_past_a_deleted_message(
    queue: SqsQueue, boto_sqs: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "afpipe.sqs")
    with trio.fail_after(TIMEOUT_S):
        handles = await held(queue, 15)
        await queue.delete([handles[2]])  # the writer's delete, racing the heartbeat
        await queue.change_visibility(handles, 0)  # no error: that entry is merely gone
    assert sqs_depth(boto_sqs, queue.url) == (14, 0)  # both chunks released
    assert any("no longer held" in r.getMessage() for r in caplog.records)
    assert all(r.levelno <= logging.DEBUG for r in caplog.records if r.name == "afpipe.sqs")


async def test_delete_reaches_every_chunk_past_an_invalid_handle(
    queue: SqsQueue, boto_sqs: Any
) -> None:
    with trio.fail_after(TIMEOUT_S):
        handles = await held(queue, 15)
        await queue.delete(["not-a-receipt-handle", *handles])
    assert sqs_depth(boto_sqs, queue.url) == (0, 0)


async def test_an_entry_failing_for_good_fails_alone_and_every_chunk_is_sent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def answer(op: str, payload: dict[str, Any]) -> dict[str, Any]:
        entries = payload["Entries"]
        ok = [{"Id": e["Id"]} for e in entries if e["ReceiptHandle"] != "h3"]
        bad = [
            failure(e["Id"], "InvalidParameterValue", sender_fault=True)
            for e in entries
            if e["ReceiptHandle"] == "h3"
        ]
        return {"Successful": ok, "Failed": bad}

    scripted = Scripted(answer)
    async with sqs_queue(scripted) as queue:
        with trio.fail_after(60), pytest.raises(EntriesFailed) as caught:
            await queue.change_visibility([f"h{i}" for i in range(25)], 60)
    assert [len(p["Entries"]) for _, p in scripted.calls] == [10, 10, 5]
    assert list(caught.value.failed) == [3]
    assert isinstance(caught.value.failed[3], PermanentError)
    assert caught.value.failed[3].code == "InvalidParameterValue"


def test_gone_handles_are_told_from_real_failures() -> None:
    assert sqs_api.handle_gone("ReceiptHandleIsInvalid")
    assert sqs_api.handle_gone("AWS.SimpleQueueService.MessageNotInflight")
    assert not sqs_api.handle_gone("InvalidParameterValue")
    assert not sqs_api.handle_gone("InternalError")


class OneEntryFails(FakeQueue):
    """Every visibility change fails for the first handle it is given, for good."""

    async def change_visibility(self, receipt_handles: Sequence[str], timeout_s: int) -> None:
        await super().change_visibility(receipt_handles, timeout_s)
        raise EntriesFailed("ChangeMessageVisibilityBatch", {0: PermanentError("no")})


async def test_heartbeat_goes_on_for_the_others_when_one_entry_fails(
    autojump_clock: trio.testing.MockClock,
) -> None:
    queue, inflight = OneEntryFails(), InFlight()
    for handle in ("h0", "h1"):
        inflight.add(ReceivedMessage(handle, handle, "{}", 1, 0.0))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(heartbeat, queue, inflight, 40)  # due after 20 s, checked every 10
        await trio.sleep(31)
        nursery.cancel_scope.cancel()
    calls = [(call.at_s, call.handles) for call in queue.visibility_calls]
    # h1 was extended at 20 s: not due again at 30 s; h0's failure is retried.
    assert calls == [(20, ["h0", "h1"]), (30, ["h0"])]
