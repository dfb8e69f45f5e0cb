"""From the settings to the parts the supervisor runs: backends, consumer, ingest.

Everything here builds; nothing runs. ``open_backends`` opens what the process
keeps for its whole life (the AWS client, the queue, the warehouses), each
behind the counting seams of ``afpipe.instrumented``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import msgspec

from afpipe import backends
from afpipe.aws import AwsClient
from afpipe.config import Settings
from afpipe.config.sections import Sections, sections
from afpipe.health import Health
from afpipe.http.config import IngestConfig
from afpipe.instrumented import InstrumentedQueue, InstrumentedWarehouse
from afpipe.pipeline.config import ConsumerConfig
from afpipe.pipeline.secondary import Secondary, TableCreatingWarehouse
from afpipe.producer import Producer
from afpipe.queue.base import Queue
from afpipe.warehouse.base import Warehouse

log = logging.getLogger("afpipe")


class Backends(msgspec.Struct, kw_only=True):
    """What a process holds open for its whole life."""

    queue: Queue
    warehouse: Warehouse | None = None  # None: this process does not consume
    secondary: Secondary | None = None  # dual write, with its retry queue if any
    # The secondary's own backlog: its retry queue and the warehouse it drains into.
    secondary_backlog: tuple[Queue, Warehouse] | None = None

    def queues(self) -> list[Queue]:
        """Every queue the process holds, for sampling."""
        backlog = [] if self.secondary_backlog is None else [self.secondary_backlog[0]]
        return [self.queue, *backlog]


@asynccontextmanager
async def open_backends(settings: Settings, *, consume: bool) -> AsyncIterator[Backends]:
    """The queue (answering, or this raises), and with ``consume`` the warehouses.
    Tables are created at the first load, not here: a warehouse that is down at
    start must not stop ingest (the writers wait and retry)."""
    parts = sections(settings)
    async with AsyncExitStack() as stack:
        aws = await stack.enter_async_context(backends.open_aws(parts))
        queue = await stack.enter_async_context(backends.open_queue(parts.queue, aws))
        opened = Backends(queue=InstrumentedQueue(queue, "main"))
        await opened.queue.ping()
        if consume:
            primary = await stack.enter_async_context(
                backends.open_warehouse(parts.primary, aws, parts.staging)
            )
            opened.warehouse = InstrumentedWarehouse(TableCreatingWarehouse(primary))
            if parts.secondary is not None:
                await _open_secondary(stack, settings, parts, aws, opened)
        yield opened


async def _open_secondary(
    stack: AsyncExitStack,
    settings: Settings,
    parts: Sections,
    aws: AwsClient | None,
    opened: Backends,
) -> None:
    assert parts.secondary is not None
    opening = backends.open_warehouse(parts.secondary, aws, parts.staging)
    warehouse = InstrumentedWarehouse(await stack.enter_async_context(opening))
    creating = TableCreatingWarehouse(warehouse)  # one creation for both paths
    retry_queue: Queue | None = None
    if url := parts.queue.secondary_retry_url:
        retry_queue = InstrumentedQueue(
            backends.sqs_queue(parts.queue, aws, url), "secondary_retry"
        )
        drained = TableCreatingWarehouse(creating, drains_backlog=True)
        opened.secondary_backlog = (retry_queue, drained)
    else:
        log.warning(
            "SECONDARY_REDSHIFT_ENABLED without AFPIPE_SECONDARY_RETRY_QUEUE_URL: batches the"
            " secondary fails to load are dropped for the secondary (logged and counted)"
        )
    opened.secondary = Secondary(
        creating,
        retry_queue,
        timeout_s=settings.secondary_timeout_s,
        body_limit_bytes=backends.body_limit_bytes(settings),
    )


def consumer_config(settings: Settings) -> ConsumerConfig:
    return ConsumerConfig(
        pollers=settings.pollers,
        writers=settings.writers,
        channel_messages=settings.channel_messages,
        batch_max_rows=settings.batch_max_rows,
        batch_max_bytes=settings.batch_max_bytes,
        batch_linger_s=settings.batch_linger_ms / 1000,
        visibility_s=settings.visibility_timeout_s or None,
        max_receives=settings.max_receives,
        empty_receive_pause_s=settings.sqs_polling_interval_ms / 1000,
        short_receive_pause_s=settings.receive_pause_ms / 1000,
        receive_wait_s=settings.receive_wait_s,
    )


def producer(settings: Settings, queue: Queue, health: Health) -> Producer:
    return Producer(
        queue,
        max_message_bytes=backends.body_limit_bytes(settings),
        max_pending_events=settings.producer_max_pending_events,
        senders=settings.producer_senders,
        health=health,
        max_pending_bytes=settings.producer_max_pending_bytes,
        linger_s=settings.producer_linger_ms / 1000,
    )


def ingest_config(settings: Settings) -> IngestConfig:
    parts = sections(settings)
    return IngestConfig(
        max_body_bytes=settings.max_body_bytes,
        max_message_bytes=backends.body_limit_bytes(settings),
        enqueue_timeout_s=settings.enqueue_timeout_s,
        token=settings.webhook_token,
        token_header=settings.webhook_token_header,
        consumer_enabled=settings.enable_sqs_consumer,
        allowed_networks=parts.allowed_networks,
        trusted_proxies=parts.trusted_proxies,
        cors_origins=parts.cors_origins,
        metrics_route=not settings.metrics_port,
        max_inflight_requests=settings.max_inflight_requests,
        max_body_buffer_bytes=settings.max_body_buffer_bytes,
    )
