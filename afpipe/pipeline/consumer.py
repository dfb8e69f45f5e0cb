"""The consumer: N poll loops -> one bounded channel -> M writers.

Shutdown is structured: ``stop`` cancels the poll loops, which closes their
send channels; writers drain what was received, commit and delete it, and end
on EndOfChannel; whatever is still held is then released (visibility 0).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from afpipe import metrics
from afpipe.health import Health
from afpipe.pipeline.accounting import Ledger
from afpipe.pipeline.batching import Held
from afpipe.pipeline.config import RELEASE_TIMEOUT_S, ConsumerConfig
from afpipe.pipeline.inflight import InFlight, heartbeat, release
from afpipe.pipeline.polling import final_sweep, poller
from afpipe.pipeline.secondary import Secondary
from afpipe.pipeline.writing import writer
from afpipe.queue.base import Queue
from afpipe.warehouse.base import Warehouse

log = logging.getLogger("afpipe.pipeline")


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
    targets = [warehouse.name] + ([secondary.name] if secondary is not None else [])
    ledger = Ledger(queue.name, targets)
    if secondary is None:
        ledger.open()
    else:
        ledger.open(secondary.name, retry_queue=secondary.retry_queue is not None)
    inflight = InFlight(ledger)
    send, receive = trio.open_memory_channel[Held](config.channel_messages)
    _observe(queue.name, inflight, send)
    async with _releasing(queue, inflight), trio.open_nursery() as outer:
        outer.start_soon(heartbeat, queue, inflight, config.visibility_s)
        async with trio.open_nursery() as work:
            async with receive:
                for _ in range(config.writers):
                    work.start_soon(
                        writer,
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
                            poller, queue, config, inflight, health, stop, send.clone()
                        )
                    task_status.started()
                # Pick up what the producer flushed while draining (bounded: one
                # receive per poller), then close the channel: writers end.
                log.info("consumer draining", extra={"held": len(inflight)})
                await final_sweep(queue, config, inflight, send)
        outer.cancel_scope.cancel()


def _observe(queue: str, inflight: InFlight, send: trio.MemorySendChannel[Held]) -> None:
    """The gauges of what this consumer holds, read from it (``afpipe.observed``)."""
    observe = metrics.OBSERVED.observe
    observe(metrics.MESSAGES_IN_FLIGHT.labels(queue), lambda: len(inflight))
    observe(metrics.EVENTS_HELD.labels(queue), inflight.events_held)
    observe(metrics.LAG_SECONDS.labels(queue), inflight.lag_s)
    observe(metrics.CHANNEL_OCCUPANCY.labels(queue), lambda: send.statistics().current_buffer_used)


@asynccontextmanager
async def _releasing(queue: Queue, inflight: InFlight) -> AsyncIterator[None]:
    """On the way out, release what is still held, also when cancelled (drain deadline)."""
    try:
        yield
    finally:
        await release(queue, inflight, RELEASE_TIMEOUT_S)  # shielded, bounded
