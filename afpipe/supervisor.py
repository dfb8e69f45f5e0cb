"""The process's lifetime, on one screen: its nesting is the order of shutdown.

    backends (the queue, the warehouses)           closed last
      edge: signals, sd_notify, the AFPIPE_WORKERS hand-shake
        work, under the drain's deadline
          consuming: pollers and writers          stop after ingest
            ingesting: producer and HTTP          stop first
              serving until the drain starts

The first SIGTERM/SIGINT (or ``drain``) starts the drain: HTTP stops accepting
and finishes what it has, the producer flushes, then the consumer stops
polling, writes and deletes what it received and releases the rest, all within
``AFPIPE_DRAIN_TIMEOUT_S``. A second signal cancels everything at once.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from afpipe import assembly, metrics
from afpipe import drain as drain_plan
from afpipe.assembly import Backends
from afpipe.config import Settings, redacted
from afpipe.config.sections import sections
from afpipe.health import Health
from afpipe.http.app import create_app
from afpipe.http.operations import OperationsApp
from afpipe.http.server import hypercorn_config, serve_ingest
from afpipe.notify import Notifier
from afpipe.pipeline.config import RELEASE_TIMEOUT_S
from afpipe.pipeline.consumer import serve_consumer
from afpipe.pipeline.sampling import sample_queues
from afpipe.queue.base import Queue

log = logging.getLogger("afpipe")

# Share of the drain budget the HTTP server may spend finishing requests; the
# rest is for flushing the producer and the consumer's last batches.
HTTP_DRAIN_SHARE = 0.5


class Exit:
    """How the run ended: 0 after a drain, 128+signal after a forced stop."""

    def __init__(self) -> None:
        self.code = 0


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
    exit_, health, notifier = Exit(), Health(settings.ready_fail_after_s), Notifier()
    # Entered top to bottom, left bottom to top: the order of shutdown.
    async with (
        assembly.open_backends(settings, consume=consume) as opened,
        trio.open_nursery() as edge,
    ):
        edge.start_soon(_watch_signals, drain, edge.cancel_scope, exit_)
        if metrics.GROUP:  # a worker: its gauges read from functions are written
            edge.start_soon(metrics.OBSERVED.refresh_every)
        with trio.CancelScope() as work:
            async with (
                _operating(settings, health, reuse_port) as operations,
                _consuming(opened, settings, health),
                _ingesting(opened.queue, settings, health, ingest, reuse_port) as binds,
            ):
                health.serving = True
                _log_serving(settings, binds, operations, ingest=ingest, consume=consume)
                task_status.started(binds)
                await _tell_ready(notifier, ready_fd, edge)
                edge.start_soon(sample_queues, opened.queues())
                await drain.wait()
                health.draining = True
                await notifier.send("STOPPING=1")
                # The work, then shielded cleanups (statement cancels, staged deletes),
                # then the release (visibility 0): all within the drain timeout.
                work.deadline = deadline.start(
                    trio.current_time(), settings.drain_timeout_s, RELEASE_TIMEOUT_S
                )
        if work.cancelled_caught:
            log.warning("drain timeout reached; unfinished work stays on the queue")
        edge.cancel_scope.cancel()
    notifier.close()
    log.info("afpipe stopped", extra={"exit_code": exit_.code})
    return exit_.code


@asynccontextmanager
async def _consuming(opened: Backends, settings: Settings, health: Health) -> AsyncIterator[None]:
    """The consumer, and the secondary's backlog consumer, while the body runs; on
    leaving, they stop polling and finish what they hold."""
    stop = trio.Event()
    config = assembly.consumer_config(settings)
    async with trio.open_nursery() as nursery:
        if opened.warehouse is not None:
            await nursery.start(
                serve_consumer,
                opened.queue,
                opened.warehouse,
                config,
                stop,
                health,
                opened.secondary,
            )
        if opened.secondary_backlog is not None:
            # Loads missed events into the secondary only; its health is not the
            # daemon's readiness.
            retry_queue, warehouse = opened.secondary_backlog
            own_health = Health(settings.ready_fail_after_s)
            await nursery.start(serve_consumer, retry_queue, warehouse, config, stop, own_health)
        try:
            yield
        finally:
            stop.set()


@asynccontextmanager
async def _operating(
    settings: Settings, health: Health, reuse_port: bool
) -> AsyncIterator[list[str]]:
    """AFPIPE_METRICS_PORT's listener (/metrics, /health, /ready; its binds) while the
    body runs, so a consumer-only process is scraped too; it stops last."""
    if not settings.metrics_port:
        yield []
        return
    stop = trio.Event()
    app = OperationsApp(health, consumer_enabled=settings.enable_sqs_consumer)
    config = hypercorn_config(
        settings.host,
        settings.metrics_port,
        RELEASE_TIMEOUT_S,
        keep_alive_timeout_s=settings.keep_alive_timeout_s,
        reuse_port=reuse_port,
    )
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            serve_ingest, app, config, stop, settings.access_log_ratio
        )
        try:
            yield binds
        finally:
            stop.set()


@asynccontextmanager
async def _ingesting(
    queue: Queue, settings: Settings, health: Health, enabled: bool, reuse_port: bool
) -> AsyncIterator[list[str]]:
    """The producer and the HTTP server while the body runs (their binds); on
    leaving, HTTP answers what it has, then the producer sends what they queued."""
    if not enabled:
        yield []
        return
    stop = trio.Event()
    producer = assembly.producer(settings, queue, health)
    app = create_app(producer, health, assembly.ingest_config(settings))
    config = hypercorn_config(
        settings.host,
        settings.port,
        settings.drain_timeout_s * HTTP_DRAIN_SHARE,
        settings.tls_cert_file,
        settings.tls_key_file,
        keep_alive_timeout_s=settings.keep_alive_timeout_s,
        reuse_port=reuse_port,
    )

    async def http_then_flush(*, task_status: trio.TaskStatus[list[str]]) -> None:
        try:
            await serve_ingest(
                app, config, stop, settings.access_log_ratio, task_status=task_status
            )
        finally:
            producer.close()  # requests are done: send what they queued, then end

    async with trio.open_nursery() as nursery:
        await nursery.start(producer.run)
        metrics.OBSERVED.observe(metrics.PRODUCER_PENDING, producer.pending)
        binds: list[str] = await nursery.start(http_then_flush)
        try:
            yield binds
        finally:
            stop.set()


def _log_serving(
    settings: Settings, binds: list[str], operations: list[str], *, ingest: bool, consume: bool
) -> None:
    log.info(
        "afpipe serving",
        extra={
            "binds": binds,
            "metrics_binds": operations,
            "roles": {"ingest": ingest, "consumer": consume},
            "backends": sections(settings).describe(),
            "settings": redacted(settings),
        },
    )


async def _tell_ready(notifier: Notifier, ready_fd: int | None, edge: trio.Nursery) -> None:
    """sd_notify READY=1 (then the watchdog and status), and the AFPIPE_WORKERS
    supervisor's hand-shake: one byte on ``ready_fd``."""
    await notifier.send("READY=1")
    if ready_fd is not None:
        os.write(ready_fd, b"R")
        os.close(ready_fd)
    edge.start_soon(notifier.watchdog)
    edge.start_soon(notifier.status_loop, metrics.summary)


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
