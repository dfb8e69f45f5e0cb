"""The SQS dead-letter queue (AFPIPE_DLQ_URL): peek (with reasons) and redrive, for
``SqsQueue.peek_dead_letters`` and ``SqsQueue.redrive``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from afpipe.aws import sqs_api
from afpipe.aws.sqs_api import SqsMessage
from afpipe.queue.base import DeadLetter, group_by_size

if TYPE_CHECKING:  # SqsQueue's peek and redrive call these
    from afpipe.queue.sqs import SqsQueue

logger = logging.getLogger("afpipe.sqs")


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
        for group in group_by_size(bodies, max_batch_bytes):
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
        receive_count=int(count) if count.isdigit() else 0,
        dead_lettered_at_s=message.sent_at_s,
        source_message_id=message.attribute(sqs_api.SOURCE_ID_ATTRIBUTE),
    )
