"""What the pipeline needs of a queue: SQS semantics, one small Protocol."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec

MAX_BATCH_ENTRIES = 10  # SQS: entries per SendMessageBatch / DeleteMessageBatch


class ReceivedMessage(msgspec.Struct, frozen=True):
    message_id: str
    receipt_handle: str
    body: str
    receive_count: int
    sent_at_s: float  # wall-clock (epoch) seconds when the message was first sent


class Queue(Protocol):
    """At-least-once queue with visibility timeouts, like SQS.

    Every method raises ``TransientError`` when the backend may recover and
    ``PermanentError`` when the request itself is wrong; partial batch
    failures are retried inside, so success means every entry succeeded.
    """

    name: str  # for logs and metrics: "embedded" or the queue URL

    async def send_batch(self, bodies: Sequence[str]) -> list[str]:
        """Durably enqueue up to 10 bodies; return their message ids in order."""
        ...

    async def receive(
        self, *, max_messages: int, wait_s: float, visibility_s: int
    ) -> list[ReceivedMessage]:
        """Long-poll for up to ``max_messages``; may return early and empty."""
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

    async def ping(self) -> None:
        """Raise unless the backend answers (for /ready and `afpipe check`)."""
        ...

    async def aclose(self) -> None: ...
