"""How much the queues hold, sampled at a bounded rate for the operator's metrics."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import trio

from afpipe import metrics
from afpipe.errors import AfpipeError
from afpipe.queue.base import Queue, QueueSize

log = logging.getLogger("afpipe.pipeline")

# One GetQueueAttributes per queue (two with a DLQ) this often; SQS's age from
# CloudWatch at most once a minute (afpipe.queue.sqs_age).
SAMPLE_EVERY_S = 15.0


async def sample_queues(queues: Sequence[Queue], every_s: float = SAMPLE_EVERY_S) -> None:
    """Set ``afpipe_queue_messages`` and ``afpipe_queue_oldest_message_age_seconds``
    for each queue (labelled by its name) now, then every ``every_s``; a failed
    sample is logged and skipped, never retried sooner. An age that is not known
    leaves the gauge as it was (prometheus_client cannot remove a series in
    multiprocess mode, and afpipe status refuses NaN)."""
    while True:
        for queue in queues:
            try:
                size = await queue.size()
            except AfpipeError as exc:
                log.info("queue size not sampled", extra={"queue": queue.name, "error": str(exc)})
                continue
            _record(queue.name, size)
        await trio.sleep(every_s)


def _record(name: str, size: QueueSize) -> None:
    metrics.QUEUE_MESSAGES.labels(name, "visible").set(size.visible)
    metrics.QUEUE_MESSAGES.labels(name, "in_flight").set(size.in_flight)
    if size.dead_letters is not None:
        metrics.QUEUE_MESSAGES.labels(name, "dead_letters").set(size.dead_letters)
    if size.oldest_age_s is not None:
        metrics.QUEUE_OLDEST_AGE.labels(name).set(size.oldest_age_s)
