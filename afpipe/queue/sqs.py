"""The queue on AWS SQS (JSON protocol), through the shared AWS client.

Batch calls retry only their failed entries, with the client's backoff and
retry budget. Each entry's fate is its own: every chunk is sent, and what
failed (for good, or still after the retries) is reported per entry with
``EntriesFailed`` once the others are done. A whole SendMessageBatch refused
for one entry's characters is sent again entry by entry, so that only the
entries at fault fail (``RefusedContent``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from afpipe.aws import sqs_api
from afpipe.aws.client import AwsClient
from afpipe.aws.service import AwsService
from afpipe.aws.sqs_api import SqsMessage
from afpipe.errors import AfpipeError, ConfigError, PermanentError, RefusedContent, TransientError
from afpipe.queue import sqs_dead_letters
from afpipe.queue.base import DeadLetter, EntriesFailed, QueueSize, ReceivedMessage
from afpipe.queue.sqs_age import CloudWatchAge

logger = logging.getLogger("afpipe.sqs")


class SqsQueue:
    """``Queue`` on one SQS queue URL; dead letters go to ``dlq_url`` when set; the
    oldest message's age comes from CloudWatch when ``age`` is given."""

    def __init__(
        self,
        aws: AwsClient,
        service: AwsService,
        queue_url: str,
        *,
        dlq_url: str | None = None,
        age: CloudWatchAge | None = None,
    ) -> None:
        self.name = queue_url
        self.url = queue_url
        self.dlq_url = dlq_url
        self._age = age
        self._aws = aws
        self._service = service
        self._warned_no_dlq = False

    async def send_batch(self, bodies: Sequence[str]) -> list[str]:
        """Message ids in order; ``EntriesFailed`` names the entries that failed and
        the others' ids (each entry's fate is its own)."""
        if len(bodies) > sqs_api.MAX_BATCH_ENTRIES:
            raise ValueError(f"{len(bodies)} bodies: SendMessageBatch takes at most 10")
        entries = [{"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies)]
        try:
            done, failed = await self._batch("SendMessageBatch", entries)
        except RefusedContent as exc:
            done, failed = await self._send_each(entries, exc)
        if failed:
            ids = {int(i): str(result["MessageId"]) for i, result in done.items()}
            raise EntriesFailed("SendMessageBatch", _by_index(failed), ids)
        return [str(done[str(i)]["MessageId"]) for i in range(len(bodies))]

    async def _send_each(
        self, entries: list[dict[str, Any]], refused: RefusedContent
    ) -> tuple[dict[str, Any], dict[str, AfpipeError]]:
        """SQS refused the whole call for some entry's characters: send each alone,
        so that only the entries at fault fail."""
        if len(entries) == 1:
            return {}, {entries[0]["Id"]: refused}
        done: dict[str, Any] = {}
        failed: dict[str, AfpipeError] = {}
        for entry in entries:
            try:
                one_done, one_failed = await self._batch("SendMessageBatch", [entry])
            except ConfigError:
                raise
            except AfpipeError as exc:
                one_done, one_failed = {}, {entry["Id"]: exc}
            done |= one_done
            failed |= one_failed
        return done, failed

    async def receive(
        self, *, max_messages: int, wait_s: float, visibility_s: int | None
    ) -> list[ReceivedMessage]:
        messages = await self.receive_messages(
            max_messages=max_messages, wait_s=wait_s, visibility_s=visibility_s
        )
        return [
            ReceivedMessage(m.message_id, m.receipt_handle, m.body, m.receive_count, m.sent_at_s)
            for m in messages
        ]

    async def receive_messages(
        self,
        *,
        max_messages: int,
        wait_s: float,
        visibility_s: int | None,
        with_attributes: bool = False,
    ) -> list[SqsMessage]:
        """ReceiveMessage as SQS answers it (``with_attributes``: our message attributes too);
        ``visibility_s`` None leaves the queue's own VisibilityTimeout in force."""
        payload: dict[str, Any] = {
            "QueueUrl": self.url,
            "MaxNumberOfMessages": max(1, min(sqs_api.MAX_BATCH_ENTRIES, max_messages)),
            "WaitTimeSeconds": max(0, min(sqs_api.MAX_WAIT_S, int(wait_s))),
            "MessageSystemAttributeNames": list(sqs_api.SYSTEM_ATTRIBUTES),
        }
        if visibility_s is not None:
            payload["VisibilityTimeout"] = max(0, min(sqs_api.MAX_VISIBILITY_S, visibility_s))
        if with_attributes:
            payload["MessageAttributeNames"] = ["All"]
        return sqs_api.parse_messages(await self._call("ReceiveMessage", payload))

    async def delete(self, receipt_handles: Sequence[str]) -> None:
        entries = [{"ReceiptHandle": h} for h in receipt_handles]
        await self._each_chunk("DeleteMessageBatch", entries)

    async def change_visibility(self, receipt_handles: Sequence[str], timeout_s: int) -> None:
        timeout_s = max(0, min(sqs_api.MAX_VISIBILITY_S, timeout_s))
        entries = [{"ReceiptHandle": h, "VisibilityTimeout": timeout_s} for h in receipt_handles]
        await self._each_chunk("ChangeMessageVisibilityBatch", entries)

    async def _each_chunk(self, operation: str, entries: list[dict[str, Any]]) -> None:
        """Send every chunk of ten whatever became of the others; each entry's failure
        is its own (``EntriesFailed``, by index). A handle no longer held (deleted
        under a heartbeat, or expired) is expected and only logged."""
        failed: dict[int, AfpipeError] = {}
        for start in range(0, len(entries), sqs_api.MAX_BATCH_ENTRIES):
            chunk = entries[start : start + sqs_api.MAX_BATCH_ENTRIES]
            chunk = [{"Id": str(i), **entry} for i, entry in enumerate(chunk)]
            try:
                _, chunk_failed = await self._batch(operation, chunk)
            except ConfigError:
                raise  # no chunk can succeed: an operator must act
            except AfpipeError as exc:  # the whole call: each of its entries failed
                chunk_failed = {entry["Id"]: exc for entry in chunk}
            failed |= {start + i: error for i, error in _by_index(chunk_failed).items()}
        gone = [i for i, error in failed.items() if _gone(error)]
        if gone:
            logger.debug("%s: %d receipt handles no longer held", operation, len(gone))
        failed = {i: error for i, error in failed.items() if i not in gone}
        if failed:
            raise EntriesFailed(operation, failed)

    async def attributes(self) -> dict[str, str]:
        """All of the queue's attributes (depth, visibility timeout, redrive policy...)."""
        result = await self._call(
            "GetQueueAttributes", {"QueueUrl": self.url, "AttributeNames": ["All"]}
        )
        return {str(k): str(v) for k, v in result.get("Attributes", {}).items()}

    async def size(self) -> QueueSize:
        """Approximate counts (GetQueueAttributes), and the DLQ's when there is one; the
        oldest message's age from CloudWatch (at most once a minute), or None."""
        mine = await self._counts(self.url)
        dead = None if self.dlq_url is None else sum(await self._counts(self.dlq_url))
        age_s = None if self._age is None else await self._age.get(empty=sum(mine) == 0)
        return QueueSize(visible=mine[0], in_flight=mine[1], dead_letters=dead, oldest_age_s=age_s)

    async def _counts(self, url: str) -> tuple[int, int]:
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        result = await self._call("GetQueueAttributes", {"QueueUrl": url, "AttributeNames": names})
        found = result.get("Attributes", {})
        visible, in_flight = (int(found.get(name, 0) or 0) for name in names)
        return visible, in_flight

    async def peek_dead_letters(self, limit: int) -> list[DeadLetter]:
        return await sqs_dead_letters.peek_dead_letters(self._dead_letter_queue(), limit)

    async def redrive(self, limit: int) -> int:
        return await sqs_dead_letters.redrive(self._dead_letter_queue(), self, limit)

    def _dead_letter_queue(self) -> SqsQueue:
        if self.dlq_url is None:
            raise ConfigError(
                "AFPIPE_DLQ_URL: not set; the queue's own redrive policy holds dead letters"
            )
        return SqsQueue(self._aws, self._service, self.dlq_url)

    async def ping(self) -> None:
        await self.attributes()

    async def visibility_timeout_s(self) -> int:
        value = (await self.attributes()).get("VisibilityTimeout", "")
        if not value.isdigit():
            raise TransientError(f"GetQueueAttributes: VisibilityTimeout {value!r}")
        return int(value)

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
        try:
            return await self._aws.call(self._service, operation, payload)
        except PermanentError as exc:
            if exc.code in sqs_api.CONTENT_REFUSED_CODES:
                raise sqs_api.refused_content(exc) from exc
            raise

    async def _batch(
        self, operation: str, entries: list[dict[str, Any]]
    ) -> tuple[dict[str, Any], dict[str, AfpipeError]]:
        """Run a *Batch operation, retrying the entries that failed for now (with the
        client's backoff and budget): (result entries by Id, failures by Id)."""
        pending = {str(e["Id"]): e for e in entries}
        done: dict[str, Any] = {}
        failed: dict[str, AfpipeError] = {}
        retry_index = 0
        while pending:
            result = await self._call(
                operation, {"QueueUrl": self.url, "Entries": [*pending.values()]}
            )
            outcome = sqs_api.split_batch_result(result, pending)
            done |= outcome.succeeded
            failed |= {f.id: sqs_api.entry_error(operation, f) for f in outcome.permanent}
            pending = {i: pending[i] for i in outcome.retry_ids}
            if pending and not await self._aws.backoff(self._service, retry_index):
                message = f"{operation}: entry still failing after retries"
                failed |= {i: TransientError(message, code="BatchEntriesFailed") for i in pending}
                break
            retry_index += 1
        return done, failed


def _by_index(failed: dict[str, AfpipeError]) -> dict[int, AfpipeError]:
    return {int(entry_id): error for entry_id, error in failed.items()}


def _gone(error: AfpipeError) -> bool:
    return isinstance(error, PermanentError) and sqs_api.handle_gone(error.code)
