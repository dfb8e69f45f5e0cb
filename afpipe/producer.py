"""Group commit: concurrent requests' events packed into few queue sends.

Requests hand their encoded events to a bounded channel and wait on a
``Ticket``. Each sender task takes everything waiting, up to one batch's
worth of bytes, and sends it with one SendMessageBatch; while a send is in
flight, new events accumulate for the next one, so the batch size follows the
load with no added latency. SQS bounds a whole batch by the same size as one
message, so a batch is in practice one message holding many events: the
fewest calls per event.

AppsFlyer posts one event per request, so a send in flight rarely finds
company: nearly every event became its own message. So the sender *lingers*
(Kafka's ``linger.ms``): after the first event of a message it waits up to
``linger_s`` for more, or until ``LINGER_ENOUGH_BYTES`` wait (Kafka's
``batch.size``: SQS bills each 64 KiB of a payload as one request, so waiting
for more saves no billed request and costs every waiting client its latency;
a burst, such as clients answered together coming back together, goes at
once). Only when
company is likely: when the latest event arrived within ``linger_s`` of the one
before it. An idle service (events further apart) sends at once, adding no
latency. One sender collects at a time, so concurrent senders do not split
what waits between them; the others send what they collected meanwhile.
A ticket completes only when every one of its events is on the queue.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import trio

from afpipe.codec import BODY_OVERHEAD_BYTES, EncodedEvent, encode_body
from afpipe.errors import AfpipeError, ConfigError, Overloaded, RefusedContent, TransientError
from afpipe.health import Health
from afpipe.queue.base import EntriesFailed, Queue, group_by_size

log = logging.getLogger("afpipe.producer")

# The longest AFPIPE_PRODUCER_LINGER_MS allows: every acknowledgement may wait it.
MAX_LINGER_S = 1.0
# A lingering sender sends once this much waits (or a message's worth, if less):
# SQS bills each 64 KiB chunk of a payload as one request.
LINGER_ENOUGH_BYTES = 64 * 1024

# What an event costs in memory beyond its item bytes (the EncodedEvent, its id
# string, the bytes object's header, its slot in the lists: about 200 B measured).
EVENT_OVERHEAD_BYTES = 256


def pending_cost_bytes(events: Sequence[EncodedEvent]) -> int:
    """What ``events`` count against ``max_pending_bytes``."""
    return sum(len(event.item) for event in events) + EVENT_OVERHEAD_BYTES * len(events)


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


# The events of one queue message, each with the request (ticket) it came in.
Part = list[tuple[EncodedEvent, Ticket]]


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
        max_pending_bytes: int = 32 * 1024 * 1024,
        linger_s: float = 0.0,
    ) -> None:
        if not 0 <= linger_s <= MAX_LINGER_S:
            raise ValueError(f"linger_s must be within 0..{MAX_LINGER_S}")
        self.queue = queue
        self.health = health or Health(fail_after_s=math.inf)
        self.max_message_bytes = max_message_bytes
        self.max_pending_events = max_pending_events
        # Events are bounded in bytes too: 20,000 events of up to a message each
        # would be gigabytes. With it, what waits has a ceiling the settings state.
        self.max_pending_bytes = max_pending_bytes
        self.senders = senders
        self.linger_s = linger_s
        self._pending_events = 0
        self._pending_bytes = 0
        self._last_arrival = -math.inf  # trio clock, of the latest submit
        self._latest_gap_s = math.inf  # between the latest submit and the one before
        # What ends a linger: enough bytes wait to send (or closed).
        self._linger_enough_bytes = min(max_message_bytes, LINGER_ENOUGH_BYTES)
        self._enough_waits = trio.Event()
        self._closed = False
        self._collecting = trio.Lock()  # one sender collects (and lingers) at a time
        # Requests are bounded by the event count below; a request holds >= 1 event.
        self._send, self._receive = trio.open_memory_channel[_Pending](max_pending_events)

    def pending(self) -> int:
        """Events accepted but not yet handed to the queue."""
        return self._pending_events

    def pending_bytes(self) -> int:
        """What the events accepted but not yet handed to the queue count, in bytes."""
        return self._pending_bytes

    def submit(self, events: Sequence[EncodedEvent]) -> Ticket:
        """Queue ``events`` for sending; raises Overloaded when they do not fit."""
        if self._pending_events + len(events) > self.max_pending_events:
            raise Overloaded("too many events waiting for the queue")
        cost_bytes = pending_cost_bytes(events)
        if self._pending_bytes + cost_bytes > self.max_pending_bytes:
            raise Overloaded("too many bytes of events waiting for the queue")
        ticket = Ticket(len(events))
        if not events:  # nothing to wait for; an empty send would crash the sender
            ticket.done.set()
            return ticket
        try:
            self._send.send_nowait(_Pending(events, ticket))
        except (trio.ClosedResourceError, trio.WouldBlock) as exc:
            raise Overloaded("not accepting events (shutting down)") from exc
        self._pending_events += len(events)
        self._pending_bytes += cost_bytes
        now = trio.current_time()
        self._latest_gap_s, self._last_arrival = now - self._last_arrival, now
        if self._pending_bytes >= self._linger_enough_bytes:
            self._enough_waits.set()
        return ticket

    def close(self) -> None:
        """Accept nothing more; ``run`` returns once everything queued was sent."""
        self._send.close()
        self._closed = True
        self._enough_waits.set()  # a lingering sender sends at once

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery, self._receive:
            for _ in range(self.senders):
                nursery.start_soon(self._sender, self._receive.clone())
            task_status.started()

    async def _sender(self, receive: trio.MemoryReceiveChannel[_Pending]) -> None:
        async with receive:
            carry: _Pending | None = None
            while True:
                async with self._collecting:
                    if carry is None:
                        try:
                            carry = await receive.receive()
                        except trio.EndOfChannel:
                            return
                        await self._linger()
                    group, carry = self._take(carry, receive)
                    self._pending_events -= len(group)
                    self._pending_bytes -= pending_cost_bytes([event for event, _ in group])
                    if self._pending_bytes < self._linger_enough_bytes and not self._closed:
                        self._enough_waits = trio.Event()
                await self._send_group(group)

    async def _linger(self) -> None:
        """Wait up to ``linger_s`` for company, if company is likely (see above)."""
        if self.linger_s <= 0 or self._latest_gap_s > self.linger_s:
            return
        with trio.move_on_after(self.linger_s):
            await self._enough_waits.wait()

    def _take(
        self, first: _Pending, receive: trio.MemoryReceiveChannel[_Pending]
    ) -> tuple[Part, _Pending | None]:
        """Events from ``first`` and whatever else waits, within one batch's bytes.

        Returns the group and what did not fit (sent next, by this sender).
        """
        group: Part = []
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

    async def _send_group(self, group: Part) -> None:
        # _take keeps a group within one message's bytes: it is one message.
        refused = await self._send_parts([group])
        if refused:  # one request's content never fails the requests packed with it
            log.warning("queue refused a message's characters: sending its requests alone")
            await self._send_parts([p for part in refused for p in _per_request(part)])

    async def _send_parts(self, parts: list[Part]) -> list[Part]:
        """Each part as one message, in batches within SQS's count and total bytes;
        settles every part's tickets but those of a part holding several requests
        that was refused for its characters: those parts are returned."""
        bodies = [encode_body(event for event, _ in part) for part in parts]
        refused: list[Part] = []
        fatal: ConfigError | None = None
        for batch in group_by_size(bodies, self.max_message_bytes):
            outcomes = await self._send_batch([bodies[i] for i in batch])
            for index, outcome in zip(batch, outcomes, strict=True):
                part = parts[index]
                if isinstance(outcome, RefusedContent) and len(_per_request(part)) > 1:
                    refused.append(part)
                    continue
                self._settle(part, outcome)
                fatal = outcome if isinstance(outcome, ConfigError) else fatal
        if fatal is not None:
            raise fatal  # answered 503 above; an operator must act: the process exits 2
        return refused

    async def _send_batch(self, bodies: list[str]) -> list[str | AfpipeError]:
        """Each body's message id, or its error."""
        try:
            return list(await self.queue.send_batch(bodies))
        except EntriesFailed as exc:
            return [exc.failed.get(i) or exc.message_ids.get(i) or exc for i in range(len(bodies))]
        except AfpipeError as exc:
            return [exc] * len(bodies)

    def _settle(self, part: Part, outcome: str | AfpipeError) -> None:
        if isinstance(outcome, str):
            self.health.ok("queue")
            for _, ticket in part:
                ticket.ack(outcome)
            return
        if not isinstance(outcome, RefusedContent):  # that is the request's fault
            self.health.failed("queue")
        log.warning("queue send failed", extra={"events": len(part), "error": str(outcome)})
        for _, ticket in part:
            ticket.fail(outcome)


def _per_request(part: Part) -> list[Part]:
    """The events of ``part`` by request, each request's as one part."""
    by_ticket: dict[Ticket, Part] = {}
    for event, ticket in part:
        by_ticket.setdefault(ticket, []).append((event, ticket))
    return list(by_ticket.values())


async def wait_ticket(ticket: Ticket, timeout_s: float) -> list[str]:
    """Wait until ``ticket`` is acknowledged; the message ids, or raise TransientError."""
    with trio.move_on_after(timeout_s):
        await ticket.done.wait()
    if ticket.error is not None:
        raise ticket.error
    if not ticket.done.is_set():
        raise TransientError("timed out waiting for the queue")
    return ticket.message_ids
