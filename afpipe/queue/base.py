"""What the pipeline needs of a queue: SQS semantics, one small Protocol."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol

import msgspec

from afpipe.errors import AfpipeError

MAX_BATCH_ENTRIES = 10  # SQS: entries per SendMessageBatch / DeleteMessageBatch


class EntriesFailed(AfpipeError):
    """Some entries of a batch call failed, each for its own reason; the others succeeded.

    ``failed`` maps an entry's index in the call's input to its error;
    ``message_ids`` (sends only) maps the others' indexes to their message ids.
    """

    def __init__(
        self,
        operation: str,
        failed: Mapping[int, AfpipeError],
        message_ids: Mapping[int, str] | None = None,
    ) -> None:
        detail = "; ".join(f"entry {i}: {error}" for i, error in sorted(failed.items()))
        super().__init__(f"{operation}: {len(failed)} entries failed: {detail}"[:2000])
        self.failed = dict(failed)
        self.message_ids = dict(message_ids or {})


class ReceivedMessage(msgspec.Struct, frozen=True):
    message_id: str
    receipt_handle: str
    body: str
    receive_count: int
    sent_at_s: float  # wall-clock (epoch) seconds when the message was first sent


class DeadLetter(msgspec.Struct, frozen=True):
    """A dead letter, as ``afpipe dlq peek`` shows it, whichever the backend."""

    message_id: str
    body: str
    reason: str  # empty when something other than afpipe put it there (a redrive policy)
    receive_count: int  # the source message's receives when it was dead-lettered
    dead_lettered_at_s: float  # wall-clock (epoch) seconds
    source_message_id: str = ""  # SQS: the message it came from, on the main queue


class QueueSize(msgspec.Struct, frozen=True, kw_only=True):
    """How much a queue holds, as ``afpipe_queue_messages`` shows it (SQS: approximate)."""

    visible: int
    in_flight: int
    dead_letters: int | None = None  # None: no dead-letter queue to count (SQS without one)
    # None: not known (SQS tells CloudWatch: read only with AFPIPE_SQS_AGE_FROM_CLOUDWATCH);
    # 0 when the queue is empty
    oldest_age_s: float | None = None


class Queue(Protocol):
    """At-least-once queue with visibility timeouts, like SQS.

    Every method raises ``TransientError`` when the backend may recover and
    ``PermanentError`` when the request itself is wrong; partial batch
    failures are retried inside, so success means every entry succeeded. Entries
    still failing are reported each on its own (``EntriesFailed``), the others
    done: one entry (a refused body, a handle already deleted) never fails another.
    """

    name: str  # for logs and metrics: "embedded" or the queue URL

    async def send_batch(self, bodies: Sequence[str]) -> list[str]:
        """Durably enqueue up to 10 bodies; return their message ids in order."""
        ...

    async def receive(
        self, *, max_messages: int, wait_s: float, visibility_s: int | None
    ) -> list[ReceivedMessage]:
        """Long-poll for up to ``max_messages``; may return early and empty.

        ``visibility_s`` None: the queue's own visibility timeout (the operator's
        choice of crash-recovery time), not an override."""
        ...

    async def visibility_timeout_s(self) -> int:
        """The queue's own visibility timeout: what a receive without one gets."""
        ...

    async def delete(self, receipt_handles: Sequence[str]) -> None: ...

    async def change_visibility(self, receipt_handles: Sequence[str], timeout_s: int) -> None:
        """Extend (heartbeat) or release (0) messages we hold."""
        ...

    async def dead_letter(self, message: ReceivedMessage, reason: str, body: str) -> bool:
        """Keep ``body`` (all or part of ``message``) durably with ``reason``.

        Returns False when there is nowhere to keep it (SQS with no DLQ
        configured): the caller must then leave ``message`` to the queue's own
        redrive policy instead of deleting it. Never deletes ``message``.
        """
        ...

    async def peek_dead_letters(self, limit: int) -> list[DeadLetter]:
        """Up to ``limit`` dead letters, oldest first where the backend knows; none is
        removed. ``ConfigError`` when dead letters are not afpipe's to keep (SQS
        without a DLQ: the queue's own redrive policy holds them)."""
        ...

    async def redrive(self, limit: int) -> int:
        """Move up to ``limit`` dead letters back onto this queue; how many moved. One
        leaves the dead letters only once the queue has it (at worst it is there twice,
        which loads deduplicate)."""
        ...

    async def size(self) -> QueueSize:
        """What the queue holds now: one cheap call (GetQueueAttributes on SQS)."""
        ...

    async def ping(self) -> None:
        """Raise unless the backend answers (for /ready and `afpipe check`)."""
        ...

    async def aclose(self) -> None: ...


def group_by_size(bodies: Sequence[str], max_batch_bytes: int) -> Iterator[list[int]]:
    """Indexes of ``bodies`` in batches of ≤10 entries and ≤ ``max_batch_bytes`` in all.

    SQS bounds a SendMessageBatch's bodies together like one message
    (BatchRequestTooLong); a body alone over the bound still gets a batch of its own.
    """
    group: list[int] = []
    size_bytes = 0
    for index, body in enumerate(bodies):
        body_bytes = len(body.encode())
        if group and (len(group) == MAX_BATCH_ENTRIES or size_bytes + body_bytes > max_batch_bytes):
            yield group
            group, size_bytes = [], 0
        group.append(index)
        size_bytes += body_bytes
    if group:
        yield group
