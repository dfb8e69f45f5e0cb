"""The consumer: N poll loops -> one bounded channel -> M writers.

Shutdown is structured: ``stop`` cancels the poll loops, which closes their
send channels; writers drain what was received, commit and delete it, and end
on EndOfChannel; whatever is still held is then released (visibility 0).
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import msgspec
import trio

from afpipe import metrics
from afpipe.codec import DecodeError, decode_body, encode_body, encode_event
from afpipe.errors import AfpipeError
from afpipe.event import Event
from afpipe.health import Health
from afpipe.pipeline.batching import Batch, Held, events_of
from afpipe.pipeline.inflight import InFlight, heartbeat, release
from afpipe.pipeline.secondary import Secondary
from afpipe.queue.base import Queue, ReceivedMessage
from afpipe.warehouse.base import LoadResult, Rejected, Warehouse

log = logging.getLogger("afpipe.pipeline")

RECEIVE_MAX_MESSAGES = 10
RELEASE_TIMEOUT_S = 1.0
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0


class ConsumerConfig(msgspec.Struct, frozen=True, kw_only=True):
    pollers: int = 2
    writers: int = 2
    channel_messages: int = 20
    batch_max_rows: int = 1000
    batch_max_bytes: int = 4 * 1024 * 1024
    batch_linger_s: float = 1.0
    visibility_s: int = 120
    max_receives: int = 10
    empty_receive_pause_s: float = 1.0
    # A long poll cut short at shutdown may still claim a message on the server
    # side, hiding it for visibility_s: shorter waits narrow that window.
    receive_wait_s: float = 20


def backoff_s(attempt: int) -> float:
    """Capped exponential backoff with full jitter."""
    return random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt))


async def serve_consumer(
    queue: Queue,
    warehouse: Warehouse,
    config: ConsumerConfig,
    stop: trio.Event,
    health: Health,
    secondary: Secondary | None = None,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    inflight = InFlight()
    send, receive = trio.open_memory_channel[Held](config.channel_messages)
    metrics.MESSAGES_IN_FLIGHT.labels(queue.name).set_function(lambda: len(inflight))
    metrics.LAG_SECONDS.labels(queue.name).set_function(inflight.lag_s)
    metrics.CHANNEL_OCCUPANCY.labels(queue.name).set_function(
        lambda: send.statistics().current_buffer_used
    )
    async with _releasing(queue, inflight), trio.open_nursery() as outer:
        outer.start_soon(heartbeat, queue, inflight, config.visibility_s)
        async with trio.open_nursery() as work:
            async with receive:
                for _ in range(config.writers):
                    work.start_soon(
                        _writer,
                        queue,
                        warehouse,
                        secondary,
                        config,
                        inflight,
                        health,
                        receive.clone(),
                    )
            async with send:
                async with trio.open_nursery() as polling:
                    for _ in range(config.pollers):
                        polling.start_soon(
                            _poller, queue, config, inflight, health, stop, send.clone()
                        )
                    task_status.started()
                # Pick up what the producer flushed while draining (bounded: one
                # receive per poller), then close the channel: writers end.
                log.info("consumer draining", extra={"held": len(inflight)})
                await _final_sweep(queue, config, inflight, health, send)
        outer.cancel_scope.cancel()


@asynccontextmanager
async def _releasing(queue: Queue, inflight: InFlight) -> AsyncIterator[None]:
    """On the way out, release what is still held, also when cancelled (drain deadline)."""
    try:
        yield
    finally:
        await release(queue, inflight, RELEASE_TIMEOUT_S)  # shielded, bounded


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


async def _poller(
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


async def _final_sweep(
    queue: Queue,
    config: ConsumerConfig,
    inflight: InFlight,
    health: Health,
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


async def _writer(
    queue: Queue,
    warehouse: Warehouse,
    secondary: Secondary | None,
    config: ConsumerConfig,
    inflight: InFlight,
    health: Health,
    receive: trio.MemoryReceiveChannel[Held],
) -> None:
    batch = Batch(
        max_rows=config.batch_max_rows,
        max_bytes=config.batch_max_bytes,
        linger_s=config.batch_linger_s,
    )
    async with receive:
        while True:
            with trio.move_on_at(batch.deadline):
                try:
                    held = await receive.receive()
                except trio.EndOfChannel:
                    break
                batch.add(held, trio.current_time())
                if not batch.full:
                    continue
            await _commit(queue, warehouse, secondary, inflight, health, batch.take())
    if batch:
        await _commit(queue, warehouse, secondary, inflight, health, batch.take())


async def _commit(
    queue: Queue,
    warehouse: Warehouse,
    secondary: Secondary | None,
    inflight: InFlight,
    health: Health,
    items: list[Held],
) -> None:
    """Load a batch into the primary (retrying transient failures) and the secondary
    (if any, concurrently), dead-letter rejects, then delete what is safe to delete."""
    events = events_of(items)
    secondary_done: list[tuple[bool, list[Rejected]]] = []
    async with trio.open_nursery() as nursery:
        if secondary is not None:

            async def to_secondary() -> None:
                secondary_done.append(await secondary.deliver(events))

            nursery.start_soon(to_secondary)
        result = await _load_until_committed(warehouse, health, events)
    rejected = list(result.rejected)
    secondary_safe = True
    if secondary_done:
        secondary_safe, secondary_rejected = secondary_done[0]
        rejected += [Rejected(r.event, f"secondary: {r.reason}") for r in secondary_rejected]
    kept = await _dead_letter_rejected(queue, items, rejected) if secondary_safe else set()
    done = [h.message.receipt_handle for h in items if h.message.message_id in kept]
    log.debug("batch committed", extra={"events": len(events), "loaded": result.loaded})
    await _delete(queue, inflight, done)
    # Messages kept back (their rejects found no dead-letter home) must not be
    # heartbeated forever: let them come back after their visibility timeout.
    inflight.remove([h.message.receipt_handle for h in items])


async def _load_until_committed(
    warehouse: Warehouse, health: Health, events: list[Event]
) -> LoadResult:
    attempt = 0
    while True:
        try:
            result = await warehouse.load(events)
            health.ok(warehouse.name)
            return result
        except AfpipeError as exc:
            health.failed(warehouse.name)
            metrics.RETRIES.labels("load").inc()
            attempt += 1
            log.warning(
                "load failed; retrying",
                extra={"warehouse": warehouse.name, "error": str(exc), "attempt": attempt},
            )
            await trio.sleep(backoff_s(attempt))


async def _dead_letter_rejected(
    queue: Queue, items: list[Held], rejected: Sequence[Rejected]
) -> set[str]:
    """Dead-letter rejected events per source message; ids of messages safe to delete."""
    by_id = {r.event.id: r for r in rejected}
    deletable = set()
    for held in items:
        mine = [by_id[e.id] for e in held.events if e.id in by_id]
        if mine and not await _keep_rejected(queue, held.message, mine):
            continue
        deletable.add(held.message.message_id)
    return deletable


async def _keep_rejected(queue: Queue, message: ReceivedMessage, mine: list[Rejected]) -> bool:
    reasons: dict[str, list[Rejected]] = defaultdict(list)
    for item in mine:
        reasons[item.reason].append(item)
    for reason, group in reasons.items():
        body = encode_body([encode_event(r.event.payload) for r in group])
        metrics.DEAD_LETTERED.labels("event").inc(len(group))
        log.error(
            "warehouse rejected events",
            extra={"events": [r.event.id for r in group], "reason": reason},
        )
        try:
            if not await queue.dead_letter(message, f"rejected by warehouse: {reason}", body):
                return False
        except AfpipeError as exc:
            log.warning("dead-letter failed", extra={"error": str(exc)})
            return False
    return True


async def _delete(queue: Queue, inflight: InFlight, handles: list[str]) -> None:
    if not handles:
        return
    for attempt in range(1, 4):
        try:
            await queue.delete(handles)
            break
        except AfpipeError as exc:
            # Not fatal: the messages come back and their events are deduplicated.
            log.warning("delete failed", extra={"error": str(exc), "attempt": attempt})
            metrics.RETRIES.labels("delete").inc()
            await trio.sleep(backoff_s(attempt))
    inflight.remove(handles)
