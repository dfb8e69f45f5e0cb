"""Poll loops: receive, decode, dead-letter poison, forward to the writers."""

from __future__ import annotations

import logging

import trio

from afpipe import metrics
from afpipe.codec import DecodeError, decode_body
from afpipe.errors import AfpipeError
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
            if not messages:
                with trio.move_on_after(config.empty_receive_pause_s):
                    await stop.wait()
                continue
            await _forward(queue, config, inflight, send, messages)


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
    for message in messages:
        held = await _admit(queue, config, inflight, message)
        if held is not None:
            await send.send(held)


async def _admit(
    queue: Queue, config: ConsumerConfig, inflight: InFlight, message: ReceivedMessage
) -> Held | None:
    """Decode ``message``; a poison or worn-out one goes to the dead letters."""
    try:
        events = decode_body(message.body)
    except DecodeError as exc:
        await _dead_letter_message(queue, inflight, message, f"undecodable: {exc}")
        return None
    if message.receive_count > config.max_receives:
        reason = f"received {message.receive_count} times (AFPIPE_MAX_RECEIVES)"
        await _dead_letter_message(queue, inflight, message, reason)
        return None
    return Held(message=message, events=events)


async def _dead_letter_message(
    queue: Queue, inflight: InFlight, message: ReceivedMessage, reason: str
) -> None:
    log.error("dead-lettering message", extra={"message_id": message.message_id, "reason": reason})
    metrics.DEAD_LETTERED.labels("message").inc()
    try:
        if await queue.dead_letter(message, reason, message.body):
            await queue.delete([message.receipt_handle])
    except AfpipeError as exc:
        log.warning("dead-letter failed", extra={"error": str(exc)})
    # Stop the heartbeat either way: if not deleted, it comes back after its
    # visibility timeout (or meets the queue's own redrive policy).
    inflight.remove([message.receipt_handle])
