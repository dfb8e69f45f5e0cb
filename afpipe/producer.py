"""Group commit: concurrent requests' events packed into few queue sends.

Requests hand their encoded events to a bounded channel and wait on a
``Ticket``. Each sender task takes everything waiting, up to one batch's
worth of bytes, and sends it with one SendMessageBatch; while a send is in
flight, new events accumulate for the next one, so the batch size follows the
load with no added latency. SQS bounds a whole batch by the same size as one
message, so a batch is in practice one message holding many events: the
fewest calls per event.
A ticket completes only when every one of its events is on the queue.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import trio

from afpipe.codec import BODY_OVERHEAD_BYTES, EncodedEvent, encode_body, pack
from afpipe.errors import AfpipeError, Overloaded, TransientError
from afpipe.health import Health
from afpipe.queue.base import MAX_BATCH_ENTRIES, Queue

log = logging.getLogger("afpipe.producer")


class Ticket:
    """One request's claim: done when all its events are acknowledged, or failed."""

    def __init__(self, count: int) -> None:
        self.remaining = count
        self.message_ids: list[str] = []
        self.error: AfpipeError | None = None
        self.done = trio.Event()

    def ack(self, message_id: str) -> None:
        if message_id not in self.message_ids:
            self.message_ids.append(message_id)
        self.remaining -= 1
        if self.remaining == 0:
            self.done.set()

    def fail(self, error: AfpipeError) -> None:
        if self.error is None:
            self.error = error
        self.done.set()


class _Pending:
    """Events of one request not yet sent (a large request may be split across sends)."""

    __slots__ = ("events", "ticket")

    def __init__(self, events: Sequence[EncodedEvent], ticket: Ticket) -> None:
        self.events = events
        self.ticket = ticket


class Producer:
    def __init__(
        self,
        queue: Queue,
        *,
        max_message_bytes: int,
        max_pending_events: int,
        senders: int,
        health: Health | None = None,
    ) -> None:
        self.queue = queue
        self.health = health or Health(fail_after_s=math.inf)
        self.max_message_bytes = max_message_bytes
        self.max_pending_events = max_pending_events
        self.senders = senders
        self._pending_events = 0
        # Requests are bounded by the event count below; a request holds >= 1 event.
        self._send, self._receive = trio.open_memory_channel[_Pending](max_pending_events)

    def pending(self) -> int:
        """Events accepted but not yet handed to the queue."""
        return self._pending_events

    def submit(self, events: Sequence[EncodedEvent]) -> Ticket:
        """Queue ``events`` for sending; raises Overloaded when they do not fit."""
        if self._pending_events + len(events) > self.max_pending_events:
            raise Overloaded("too many events waiting for the queue")
        ticket = Ticket(len(events))
        if not events:  # nothing to wait for; an empty send would crash the sender
            ticket.done.set()
            return ticket
        try:
            self._send.send_nowait(_Pending(events, ticket))
        except (trio.ClosedResourceError, trio.WouldBlock) as exc:
            raise Overloaded("not accepting events (shutting down)") from exc
        self._pending_events += len(events)
        return ticket

    def close(self) -> None:
        """Accept nothing more; ``run`` returns once everything queued was sent."""
        self._send.close()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery, self._receive:
            for _ in range(self.senders):
                nursery.start_soon(self._sender, self._receive.clone())
            task_status.started()

    async def _sender(self, receive: trio.MemoryReceiveChannel[_Pending]) -> None:
        async with receive:
            carry: _Pending | None = None
            while True:
                if carry is None:
                    try:
                        carry = await receive.receive()
                    except trio.EndOfChannel:
                        return
                group, carry = self._take(carry, receive)
                self._pending_events -= len(group)
                await self._send_group(group)

    def _take(
        self, first: _Pending, receive: trio.MemoryReceiveChannel[_Pending]
    ) -> tuple[list[tuple[EncodedEvent, Ticket]], _Pending | None]:
        """Events from ``first`` and whatever else waits, within one batch's bytes.

        Returns the group and what did not fit (sent next, by this sender).
        """
        group: list[tuple[EncodedEvent, Ticket]] = []
        size = BODY_OVERHEAD_BYTES - 1
        pending: _Pending | None = first
        while pending is not None:
            for index, event in enumerate(pending.events):
                size += len(event.item) + 1
                if size > self.max_message_bytes and group:
                    return group, _Pending(pending.events[index:], pending.ticket)
                group.append((event, pending.ticket))
            try:
                pending = receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                pending = None
        return group, None

    async def _send_group(self, group: list[tuple[EncodedEvent, Ticket]]) -> None:
        bodies = list(pack([event for event, _ in group], self.max_message_bytes))
        assert len(bodies) <= MAX_BATCH_ENTRIES  # the group is within one body's bytes
        try:
            ids = await self.queue.send_batch([encode_body(b) for b in bodies])
        except AfpipeError as exc:
            self.health.failed("queue")
            log.warning("queue send failed", extra={"events": len(group), "error": str(exc)})
            for _, ticket in group:
                ticket.fail(exc)
            return
        self.health.ok("queue")
        tickets = iter(ticket for _, ticket in group)
        for message_id, body in zip(ids, bodies, strict=True):
            for _ in body:
                next(tickets).ack(message_id)


async def wait_ticket(ticket: Ticket, timeout_s: float) -> list[str]:
    """Wait until ``ticket`` is acknowledged; the message ids, or raise TransientError."""
    with trio.move_on_after(timeout_s):
        await ticket.done.wait()
    if ticket.error is not None:
        raise ticket.error
    if not ticket.done.is_set():
        raise TransientError("timed out waiting for the queue")
    return ticket.message_ids
