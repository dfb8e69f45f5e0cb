"""The queue on AWS SQS (JSON protocol), through the shared AWS client.

Batch calls retry only their failed entries, with the client's backoff and
retry budget; an entry SQS rejects for good (a sender fault) ends the call
with ``PermanentError`` once the other entries are done.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import msgspec

from afpipe.aws import sqs_api
from afpipe.aws.client import AwsClient
from afpipe.aws.service import AwsService
from afpipe.aws.sqs_api import SqsMessage
from afpipe.errors import PermanentError, TransientError
from afpipe.queue.base import ReceivedMessage

logger = logging.getLogger("afpipe.sqs")


class SqsQueue:
    """``Queue`` on one SQS queue URL; dead letters go to ``dlq_url`` when set."""

    def __init__(
        self, aws: AwsClient, service: AwsService, queue_url: str, *, dlq_url: str | None = None
    ) -> None:
        self.name = queue_url
        self.url = queue_url
        self.dlq_url = dlq_url
        self._aws = aws
        self._service = service
        self._warned_no_dlq = False

    async def send_batch(self, bodies: Sequence[str]) -> list[str]:
        if len(bodies) > sqs_api.MAX_BATCH_ENTRIES:
            raise ValueError(f"{len(bodies)} bodies: SendMessageBatch takes at most 10")
        entries = [{"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies)]
        done = await self._batch("SendMessageBatch", entries)
        return [str(done[str(i)]["MessageId"]) for i in range(len(bodies))]

    async def receive(
        self, *, max_messages: int, wait_s: float, visibility_s: int
    ) -> list[ReceivedMessage]:
        messages = await self.receive_messages(
            max_messages=max_messages, wait_s=wait_s, visibility_s=visibility_s
        )
        return [
            ReceivedMessage(m.message_id, m.receipt_handle, m.body, m.receive_count, m.sent_at_s)
            for m in messages
        ]

    async def receive_messages(
        self, *, max_messages: int, wait_s: float, visibility_s: int, with_attributes: bool = False
    ) -> list[SqsMessage]:
        """ReceiveMessage as SQS answers it (``with_attributes``: our message attributes too)."""
        payload: dict[str, Any] = {
            "QueueUrl": self.url,
            "MaxNumberOfMessages": max(1, min(sqs_api.MAX_BATCH_ENTRIES, max_messages)),
            "WaitTimeSeconds": max(0, min(sqs_api.MAX_WAIT_S, int(wait_s))),
            "VisibilityTimeout": max(0, min(sqs_api.MAX_VISIBILITY_S, visibility_s)),
            "MessageSystemAttributeNames": list(sqs_api.SYSTEM_ATTRIBUTES),
        }
        if with_attributes:
            payload["MessageAttributeNames"] = ["All"]
        return sqs_api.parse_messages(await self._call("ReceiveMessage", payload))

    async def delete(self, receipt_handles: Sequence[str]) -> None:
        for chunk in sqs_api.chunks(receipt_handles):
            entries = [{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(chunk)]
            await self._batch("DeleteMessageBatch", entries)

    async def change_visibility(self, receipt_handles: Sequence[str], timeout_s: int) -> None:
        timeout_s = max(0, min(sqs_api.MAX_VISIBILITY_S, timeout_s))
        for chunk in sqs_api.chunks(receipt_handles):
            entries = [
                {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": timeout_s}
                for i, h in enumerate(chunk)
            ]
            await self._batch("ChangeMessageVisibilityBatch", entries)

    async def attributes(self) -> dict[str, str]:
        """All of the queue's attributes (depth, visibility timeout, redrive policy...)."""
        result = await self._call(
            "GetQueueAttributes", {"QueueUrl": self.url, "AttributeNames": ["All"]}
        )
        return {str(k): str(v) for k, v in result.get("Attributes", {}).items()}

    async def ping(self) -> None:
        await self.attributes()

    async def dead_letter(self, message: ReceivedMessage, reason: str, body: str) -> bool:
        if self.dlq_url is None:
            if not self._warned_no_dlq:
                self._warned_no_dlq = True
                logger.warning(
                    "no dead-letter queue configured; bad messages are left to %s's redrive policy",
                    self.name,
                )
            return False
        attributes = sqs_api.dead_letter_attributes(
            reason, message.message_id, message.receive_count
        )
        payload = {"QueueUrl": self.dlq_url, "MessageBody": body, "MessageAttributes": attributes}
        await self._call("SendMessage", payload)
        logger.warning(
            "message %s sent to the dead-letter queue: %.300s", message.message_id, reason
        )
        return True

    async def aclose(self) -> None:
        """Nothing to close: the AWS client belongs to whoever made it."""

    async def _call(self, operation: str, payload: dict[str, Any]) -> dict[str, Any]:
        return await self._aws.call(self._service, operation, payload)

    async def _batch(self, operation: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
        """Run a *Batch operation until every entry is done; result entries by Id."""
        pending = {str(e["Id"]): e for e in entries}
        done: dict[str, Any] = {}
        failed_for_good: list[sqs_api.EntryFailure] = []
        retry_index = 0
        while pending:
            result = await self._call(
                operation, {"QueueUrl": self.url, "Entries": [*pending.values()]}
            )
            outcome = sqs_api.split_batch_result(result, pending)
            done.update(outcome.succeeded)
            failed_for_good += outcome.permanent
            pending = {i: pending[i] for i in outcome.retry_ids}
            if pending and not await self._aws.backoff(self._service, retry_index):
                raise TransientError(
                    f"{operation}: entries {sorted(pending)} still failing after retries",
                    code="BatchEntriesFailed",
                )
            retry_index += 1
        if failed_for_good:
            raise _permanent(operation, failed_for_good)
        return done


def _permanent(operation: str, failures: list[sqs_api.EntryFailure]) -> PermanentError:
    first = failures[0]
    detail = "; ".join(f"entry {f.id}: {f.code}: {f.message}" for f in failures)
    return PermanentError(f"{operation}: {detail}", code=first.code)


class DeadLetter(msgspec.Struct, frozen=True):
    """A message on the dead-letter queue, as `afpipe dlq peek` shows it."""

    message_id: str
    body: str
    reason: str  # empty when something other than afpipe put it there (redrive policy)
    source_message_id: str
    source_receive_count: int
    dead_lettered_at_s: float


async def peek_dead_letters(
    dlq: SqsQueue, max_messages: int, *, wait_s: float = 1, hold_s: int = 30
) -> list[DeadLetter]:
    """Up to ``max_messages`` dead letters with their reasons; none is deleted.

    Each is held invisible (``hold_s``) only while we look, so one peek never
    shows a message twice, then released at once.
    """
    seen: list[SqsMessage] = []
    while len(seen) < max_messages:
        batch = await dlq.receive_messages(
            max_messages=max_messages - len(seen),
            wait_s=wait_s,
            visibility_s=hold_s,
            with_attributes=True,
        )
        if not batch:
            break
        seen += batch
    await dlq.change_visibility([m.receipt_handle for m in seen], 0)
    return [_dead_letter(m) for m in seen]


async def redrive(
    dlq: SqsQueue,
    target: SqsQueue,
    max_messages: int,
    *,
    wait_s: float = 1,
    hold_s: int = 60,
    max_batch_bytes: int = 256 * 1024,
) -> int:
    """Move up to ``max_messages`` from ``dlq`` to ``target``; returns how many moved.

    A message leaves the DLQ only after ``target`` accepted it: a failure
    part-way leaves it there (and at worst sends it twice, which loads dedupe).
    """
    moved = 0
    while moved < max_messages:
        batch = await dlq.receive_messages(
            max_messages=max_messages - moved, wait_s=wait_s, visibility_s=hold_s
        )
        if not batch:
            break
        bodies = [m.body for m in batch]
        for group in sqs_api.group_by_size(bodies, max_batch_bytes):
            await target.send_batch([bodies[i] for i in group])
            await dlq.delete([batch[i].receipt_handle for i in group])
            moved += len(group)
    logger.info("redrove %d messages from %s to %s", moved, dlq.name, target.name)
    return moved


def _dead_letter(message: SqsMessage) -> DeadLetter:
    count = message.attribute(sqs_api.RECEIVE_COUNT_ATTRIBUTE)
    return DeadLetter(
        message_id=message.message_id,
        body=message.body,
        reason=message.attribute(sqs_api.REASON_ATTRIBUTE),
        source_message_id=message.attribute(sqs_api.SOURCE_ID_ATTRIBUTE),
        source_receive_count=int(count) if count.isdigit() else 0,
        dead_lettered_at_s=message.sent_at_s,
    )
