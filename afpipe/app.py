"""The root nursery: ingest, producer and consumer under one structured scope.

Shutdown: the first SIGTERM/SIGINT (or ``drain``) stops accepting HTTP,
finishes in-flight requests, flushes the producer, stops polling, writes and
deletes what was received and releases the rest, all within
``AFPIPE_DRAIN_TIMEOUT_S``. A second signal cancels everything at once.
"""

from __future__ import annotations

import logging
import os
import signal
from contextlib import AsyncExitStack

import trio

from afpipe import backends, metrics
from afpipe import drain as drain_plan
from afpipe.aws import AwsClient
from afpipe.config import Settings, redacted
from afpipe.health import Health
from afpipe.http.app import create_app
from afpipe.http.config import IngestConfig
from afpipe.http.server import hypercorn_config, serve_ingest
from afpipe.instrumented import InstrumentedQueue, InstrumentedWarehouse
from afpipe.notify import Notifier
from afpipe.pipeline.config import RELEASE_TIMEOUT_S, ConsumerConfig
from afpipe.pipeline.consumer import serve_consumer
from afpipe.pipeline.secondary import Secondary, TableCreatingWarehouse
from afpipe.producer import Producer
from afpipe.queue.base import Queue
from afpipe.warehouse.base import Warehouse

log = logging.getLogger("afpipe")

# Share of the drain budget the HTTP server may spend finishing requests; the
# rest is for flushing the producer and the consumer's last batches.
HTTP_DRAIN_SHARE = 0.5


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


class Exit:
    """How the run ended: 0 after a drain, 128+signal after a forced stop."""

    def __init__(self) -> None:
        self.code = 0


async def _watch_signals(drain: trio.Event, root: trio.CancelScope, exit_: Exit) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            if not drain.is_set():
                log.info("signal received; draining", extra={"signal": signal.Signals(signum).name})
                drain.set()
            else:
                log.warning("second signal; exiting now")
                exit_.code = 128 + signum
                root.cancel()
                return


async def run(
    settings: Settings,
    *,
    ingest: bool = True,
    consume: bool = True,
    drain: trio.Event | None = None,
    reuse_port: bool = False,
    ready_fd: int | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> int:
    """Run afpipe until drained; returns the process exit status."""
    drain = drain or trio.Event()
    deadline = drain_plan.new_run()  # before any task starts: they all share it
    exit_ = Exit()
    health = Health(settings.ready_fail_after_s)
    notifier = Notifier()
    async with AsyncExitStack() as stack:
        aws = await stack.enter_async_context(backends.open_aws(settings))
        queue = InstrumentedQueue(
            await stack.enter_async_context(backends.open_queue(settings, aws)), "main"
        )
        await queue.ping()
        warehouse = None
        secondary = retry_queue = secondary_warehouse = None
        if consume:
            # The table is created at the first load, not here: a warehouse that is down
            # at start must not stop ingest (the writers wait and retry).
            warehouse = InstrumentedWarehouse(
                TableCreatingWarehouse(
                    await stack.enter_async_context(backends.open_warehouse(settings, aws))
                )
            )
            if settings.secondary_redshift_enabled:
                secondary, retry_queue, secondary_warehouse = await _open_secondary(
                    stack, settings, aws
                )
        async with trio.open_nursery() as outer:
            outer.start_soon(_watch_signals, drain, outer.cancel_scope, exit_)
            with trio.CancelScope() as work_scope:
                async with trio.open_nursery() as work:
                    stop_http, stop_consumer = trio.Event(), trio.Event()
                    binds: list[str] = []
                    if warehouse is not None:
                        await work.start(
                            serve_consumer,
                            queue,
                            warehouse,
                            consumer_config(settings),
                            stop_consumer,
                            health,
                            secondary,
                        )
                    if secondary_warehouse is not None and retry_queue is not None:
                        # Its own poller group loads missed events into the secondary
                        # only; its health is not the daemon's readiness.
                        await work.start(
                            serve_consumer,
                            retry_queue,
                            TableCreatingWarehouse(secondary_warehouse, drains_backlog=True),
                            consumer_config(settings),
                            stop_consumer,
                            Health(settings.ready_fail_after_s),
                        )
                    ingest_done = trio.Event()
                    if ingest:
                        binds = await _start_ingest(
                            work, settings, queue, health, stop_http, ingest_done, reuse_port
                        )
                    else:
                        ingest_done.set()
                    health.serving = True
                    log.info(
                        "afpipe serving",
                        extra={
                            "binds": binds,
                            "roles": {"ingest": ingest, "consumer": consume},
                            "backends": backends.describe(settings),
                            "settings": redacted(settings),
                        },
                    )
                    task_status.started(binds)
                    await notifier.send("READY=1")
                    if ready_fd is not None:  # tell the AFPIPE_WORKERS supervisor
                        os.write(ready_fd, b"R")
                        os.close(ready_fd)
                    outer.start_soon(notifier.watchdog)
                    outer.start_soon(notifier.status_loop, metrics.summary)
                    await drain.wait()
                    health.draining = True
                    await notifier.send("STOPPING=1")
                    # The work, then shielded cleanups (statement cancels, staged
                    # deletes), then the release (visibility 0): all within the timeout.
                    work_scope.deadline = deadline.start(
                        trio.current_time(), settings.drain_timeout_s, RELEASE_TIMEOUT_S
                    )
                    stop_http.set()
                    await ingest_done.wait()  # requests answered, producer flushed
                    stop_consumer.set()
            if work_scope.cancelled_caught:
                log.warning("drain timeout reached; unfinished work stays on the queue")
            outer.cancel_scope.cancel()
    notifier.close()
    log.info("afpipe stopped", extra={"exit_code": exit_.code})
    return exit_.code


async def _open_secondary(
    stack: AsyncExitStack, settings: Settings, aws: AwsClient | None
) -> tuple[Secondary, Queue | None, Warehouse]:
    """The secondary sink, its retry queue (if any) and the secondary warehouse itself."""
    warehouse = InstrumentedWarehouse(
        await stack.enter_async_context(backends.open_warehouse(settings, aws, "secondary"))
    )
    retry_queue: Queue | None = None
    if settings.secondary_retry_queue_url:
        url = settings.secondary_retry_queue_url
        retry_queue = InstrumentedQueue(backends.sqs_queue(settings, aws, url), "secondary_retry")
    else:
        log.warning(
            "SECONDARY_REDSHIFT_ENABLED without AFPIPE_SECONDARY_RETRY_QUEUE_URL: batches the"
            " secondary fails to load are dropped for the secondary (logged and counted)"
        )
    secondary = Secondary(
        TableCreatingWarehouse(warehouse),
        retry_queue,
        timeout_s=settings.secondary_timeout_s,
        body_limit_bytes=backends.body_limit_bytes(settings),
    )
    return secondary, retry_queue, warehouse


async def _start_ingest(
    nursery: trio.Nursery,
    settings: Settings,
    queue: Queue,
    health: Health,
    stop: trio.Event,
    done: trio.Event,
    reuse_port: bool = False,
) -> list[str]:
    """Start the producer and the HTTP server; ``done`` is set once both have ended."""
    producer = Producer(
        queue,
        max_message_bytes=backends.body_limit_bytes(settings),
        max_pending_events=settings.producer_max_pending_events,
        senders=settings.producer_senders,
        health=health,
        max_pending_bytes=settings.producer_max_pending_bytes,
        linger_s=settings.producer_linger_ms / 1000,
    )

    async def run_producer(*, task_status: trio.TaskStatus[None]) -> None:
        try:
            await producer.run(task_status=task_status)
        finally:
            done.set()

    await nursery.start(run_producer)
    metrics.PRODUCER_PENDING.set_function(producer.pending)
    app = create_app(
        producer,
        health,
        IngestConfig(
            max_body_bytes=settings.max_body_bytes,
            max_message_bytes=backends.body_limit_bytes(settings),
            enqueue_timeout_s=settings.enqueue_timeout_s,
            token=settings.webhook_token,
            token_header=settings.webhook_token_header,
            consumer_enabled=settings.enable_sqs_consumer,
            allowed_cidrs=settings.allowed_cidrs,
            trusted_proxies=settings.trusted_proxies,
            max_inflight_requests=settings.max_inflight_requests,
            max_body_buffer_bytes=settings.max_body_buffer_bytes,
        ),
    )
    config = hypercorn_config(
        settings.host,
        settings.port,
        settings.drain_timeout_s * HTTP_DRAIN_SHARE,
        settings.tls_cert_file,
        settings.tls_key_file,
        keep_alive_timeout_s=settings.keep_alive_timeout_s,
        reuse_port=reuse_port,
    )

    async def http_then_close(*, task_status: trio.TaskStatus[list[str]]) -> None:
        try:
            await serve_ingest(
                app, config, stop, settings.access_log_ratio, task_status=task_status
            )
        finally:
            producer.close()  # requests are done: flush what they queued, then end

    binds: list[str] = await nursery.start(http_then_close)
    return binds
