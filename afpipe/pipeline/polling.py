"""Poll loops: receive, decode, dead-letter poison, forward to the writers.

The receive count alone cannot tell a message that crashes the process from a
daemon that was restarted (or killed) while holding it: every release or crash
counts one more receive. So, with ``n = max_receives`` (AFPIPE_MAX_RECEIVES)
and ``k`` the message's receive count (1 on its first receive):

- ``k <= n``: batched with other messages, as usual;
- ``n < k <= 2n``: loaded alone, in a batch of its own (``Held.alone``); if that
  load commits, the message is deleted like any other, its rejected events
  dead-lettered per event with the warehouse's reason;
- ``k > 2n``: dead-lettered whole, unloaded, with a reason naming
  AFPIPE_MAX_RECEIVES: its receives n+1 to 2n were each to load it alone and
  none committed, so it is taken to be what kills the process (the cap ends
  the crash loop).

So with the default n = 5, receives 6 to 10 are loaded alone and receive 11 is
dead-lettered. A crash still counts a receive for every message held at that
moment, so a good message held over and over beside a real killer can reach the
cap too; loading alone narrows that, it does not close it. An undecodable
message is dead-lettered at once, whatever its count.
"""

from __future__ import annotations

import logging

import trio

from afpipe import metrics
from afpipe.codec import DecodeError, decode_body
from afpipe.errors import AfpipeError, ConfigError
from afpipe.event import Event
from afpipe.health import Health
from afpipe.pipeline.batching import Held
from afpipe.pipeline.config import RECEIVE_MAX_MESSAGES, ConsumerConfig, backoff_s
from afpipe.pipeline.inflight import InFlight
from afpipe.queue.base import Queue, ReceivedMessage

log = logging.getLogger("afpipe.pipeline")


async def _receive_until(
    queue: Queue, config: ConsumerConfig, stop: trio.Event, wait_s: float
) -> list[ReceivedMessage] | None:
    """One receive, abandoned (None) if ``stop`` is set while it waits.

    Only the wait is cancelled: messages already returned are always forwarded.
    """
    messages: list[ReceivedMessage] | None = None  # stays None if cancelled by stop
    failure: AfpipeError | None = None
    async with trio.open_nursery() as nursery:

        async def cancel_on_stop() -> None:
            await stop.wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(cancel_on_stop)
        try:
            messages = await queue.receive(
                max_messages=RECEIVE_MAX_MESSAGES, wait_s=wait_s, visibility_s=config.visibility_s
            )
        except AfpipeError as exc:
            # Raised out of the nursery it would arrive wrapped in an ExceptionGroup,
            # which the poller's ``except AfpipeError`` would not catch.
            failure = exc
        nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return messages


async def poller(
    queue: Queue,
    config: ConsumerConfig,
    inflight: InFlight,
    health: Health,
    stop: trio.Event,
    send: trio.MemorySendChannel[Held],
) -> None:
    failures = 0
    async with send:
        while not stop.is_set():
            try:
                messages = await _receive_until(queue, config, stop, config.receive_wait_s)
            except ConfigError:
                raise  # an operator must act: the process exits 2 (cli)
            except AfpipeError as exc:
                health.failed("queue")
                metrics.RETRIES.labels("receive").inc()
                failures += 1
                log.warning("receive failed", extra={"error": str(exc), "failures": failures})
                with trio.move_on_after(backoff_s(failures)):
                    await stop.wait()
                continue
            if messages is None:
                return
            failures = 0
            health.ok("queue")
            if messages:  # forwarded before any pause: the pause delays no message held
                await _forward(queue, config, inflight, send, messages)
            pause_s = pause_after_s(len(messages), config)
            if pause_s > 0:
                with trio.move_on_after(pause_s):
                    await stop.wait()


def pause_after_s(received: int, config: ConsumerConfig) -> float:
    """The poller's pause before its next receive, after one that returned ``received``."""
    if received == 0:
        return config.empty_receive_pause_s
    if received < RECEIVE_MAX_MESSAGES:
        # A long poll returns as soon as one message is there: at light load a receive
        # right after the last gets one or two. The writers linger anyway, so a short
        # pause lets a few gather per call (AFPIPE_RECEIVE_PAUSE_MS).
        return config.short_receive_pause_s
    return 0.0  # a full receive: a backlog, receive again at once


async def final_sweep(
    queue: Queue,
    config: ConsumerConfig,
    inflight: InFlight,
    send: trio.MemorySendChannel[Held],
) -> None:
    for _ in range(config.pollers):
        try:
            messages = await queue.receive(
                max_messages=RECEIVE_MAX_MESSAGES, wait_s=0, visibility_s=config.visibility_s
            )
        except AfpipeError as exc:
            log.warning("final receive failed", extra={"error": str(exc)})
            return
        if not messages:
            return
        await _forward(queue, config, inflight, send, messages)


async def _forward(
    queue: Queue,
    config: ConsumerConfig,
    inflight: InFlight,
    send: trio.MemorySendChannel[Held],
    messages: list[ReceivedMessage],
) -> None:
    for message in messages:
        inflight.add(message)
        if message.receive_count > 1:
            metrics.RECEIVED_AGAIN.labels(queue.name).inc()
    for message in messages:
        held = await _admit(queue, config, inflight, message)
        if held is not None:
            inflight.hold(message.receipt_handle, len(held.events))
            await send.send(held)


async def _admit(
    queue: Queue, config: ConsumerConfig, inflight: InFlight, message: ReceivedMessage
) -> Held | None:
    """Decode ``message``; dead-letter poison, mark a much-received one to load alone."""
    try:
        events = decode_body(message.body)
    except DecodeError as exc:
        await _dead_letter_message(queue, inflight, message, f"undecodable: {exc}")
        return None
    count, limit = message.receive_count, config.max_receives
    if count > 2 * limit:
        reason = (
            f"received {count} times, more than twice AFPIPE_MAX_RECEIVES ({limit}):"
            f" tried alone since receive {limit + 1}, never committed"
        )
        await _dead_letter_message(queue, inflight, message, reason, events)
        return None
    alone = count > limit
    if alone:
        log.warning(
            "loading message alone: received more than AFPIPE_MAX_RECEIVES times",
            extra={"message_id": message.message_id, "receive_count": count, "max_receives": limit},
        )
    return Held(message=message, events=events, alone=alone)


async def _dead_letter_message(
    queue: Queue,
    inflight: InFlight,
    message: ReceivedMessage,
    reason: str,
    events: list[Event] | None = None,
) -> None:
    """Dead-letter ``message`` whole; ``events``: what it holds, when it decoded."""
    log.error("dead-lettering message", extra={"message_id": message.message_id, "reason": reason})
    metrics.DEAD_LETTERED.labels("message").inc()
    try:
        if await queue.dead_letter(message, reason, message.body):
            inflight.ledger.dead_lettered_whole(events or [])
            await queue.delete([message.receipt_handle])
    except AfpipeError as exc:
        log.warning("dead-letter failed", extra={"error": str(exc)})
    # Stop the heartbeat either way: if not deleted, it comes back after its
    # visibility timeout (or meets the queue's own redrive policy).
    inflight.remove([message.receipt_handle])
