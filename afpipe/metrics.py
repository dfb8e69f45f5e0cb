"""Prometheus metrics (prometheus-client), process-wide as Prometheus expects.

Queue and warehouse calls are counted by wrappers at the seams
(``InstrumentedQueue``, ``InstrumentedWarehouse``), so each backend is measured
the same way and no component counts by hand what a seam can see.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from afpipe.errors import AfpipeError
from afpipe.event import Event
from afpipe.queue.base import Queue, ReceivedMessage
from afpipe.warehouse.base import LoadResult, Warehouse

HTTP_REQUESTS = Counter("afpipe_http_requests", "HTTP requests answered", ["route", "status"])
EVENTS_ACCEPTED = Counter("afpipe_events_accepted", "Events acknowledged to the sender (durable)")
EVENTS_REJECTED = Counter("afpipe_events_rejected", "Webhook requests not accepted", ["reason"])
QUEUE_OPERATIONS = Counter("afpipe_queue_operations", "Queue calls", ["queue", "operation"])
QUEUE_ERRORS = Counter("afpipe_queue_errors", "Failed queue calls", ["queue", "operation"])
MESSAGES_IN_FLIGHT = Gauge("afpipe_messages_in_flight", "Queue messages held", ["queue"])
CHANNEL_OCCUPANCY = Gauge(
    "afpipe_channel_messages", "Messages between pollers and writers", ["queue"]
)
PRODUCER_PENDING = Gauge("afpipe_producer_pending_events", "Events waiting for the queue")
BATCHES = Counter("afpipe_batches_loaded", "Batches committed", ["target"])
ROWS = Counter("afpipe_rows_loaded", "Rows newly inserted", ["target"])
STAGED_LOADS = Counter(
    "afpipe_staged_loads", "Load transactions sent through S3 staging and COPY", ["target"]
)
LOAD_FAILURES = Counter("afpipe_load_failures", "Failed load attempts", ["target"])
LOAD_SECONDS = Histogram(
    "afpipe_load_seconds",
    "Time to commit one batch",
    ["target"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
RETRIES = Counter("afpipe_retries", "Retries by cause", ["cause"])
DEAD_LETTERED = Counter("afpipe_dead_lettered", "Dead-lettered messages or events", ["kind"])
SECONDARY_HANDED_OFF = Counter(
    "afpipe_secondary_handed_off_events", "Events sent to the secondary retry queue"
)
SECONDARY_DROPPED = Counter(
    "afpipe_secondary_dropped_events", "Events the secondary missed with no retry queue"
)
SECONDARY_BACKLOG = Gauge(
    "afpipe_secondary_backlog_events", "Events handed off and not yet loaded by this process"
)
LAG_SECONDS = Gauge(
    "afpipe_lag_seconds", "Age of the oldest message received and not yet loaded", ["queue"]
)


def exposition() -> tuple[bytes, str]:
    return generate_latest(), CONTENT_TYPE_LATEST


class InstrumentedQueue:
    """A ``Queue`` whose every call is counted (and failures by operation)."""

    def __init__(self, queue: Queue, label: str) -> None:
        self.queue = queue
        self.name = queue.name
        self.label = label

    @contextmanager
    def _counted(self, operation: str) -> Iterator[None]:
        QUEUE_OPERATIONS.labels(self.label, operation).inc()
        try:
            yield
        except AfpipeError:
            QUEUE_ERRORS.labels(self.label, operation).inc()
            raise

    async def send_batch(self, bodies: Sequence[str]) -> list[str]:
        with self._counted("send"):
            return await self.queue.send_batch(bodies)

    async def receive(
        self, *, max_messages: int, wait_s: float, visibility_s: int | None
    ) -> list[ReceivedMessage]:
        with self._counted("receive"):
            return await self.queue.receive(
                max_messages=max_messages, wait_s=wait_s, visibility_s=visibility_s
            )

    async def visibility_timeout_s(self) -> int:
        return await self.queue.visibility_timeout_s()

    async def delete(self, receipt_handles: Sequence[str]) -> None:
        with self._counted("delete"):
            await self.queue.delete(receipt_handles)

    async def change_visibility(self, receipt_handles: Sequence[str], timeout_s: int) -> None:
        with self._counted("change_visibility"):
            await self.queue.change_visibility(receipt_handles, timeout_s)

    async def dead_letter(self, message: ReceivedMessage, reason: str, body: str) -> bool:
        with self._counted("dead_letter"):
            return await self.queue.dead_letter(message, reason, body)

    async def ping(self) -> None:
        await self.queue.ping()

    async def aclose(self) -> None:
        await self.queue.aclose()


class InstrumentedWarehouse:
    """A ``Warehouse`` whose loads are timed and counted per target."""

    def __init__(self, warehouse: Warehouse) -> None:
        self.warehouse = warehouse
        self.name = warehouse.name

    async def ensure_table(self) -> None:
        await self.warehouse.ensure_table()

    async def load(self, events: Sequence[Event]) -> LoadResult:
        started = time.perf_counter()
        try:
            result = await self.warehouse.load(events)
        except AfpipeError:
            LOAD_FAILURES.labels(self.name).inc()
            raise
        LOAD_SECONDS.labels(self.name).observe(time.perf_counter() - started)
        BATCHES.labels(self.name).inc()
        ROWS.labels(self.name).inc(result.loaded)
        return result

    async def ping(self) -> None:
        await self.warehouse.ping()

    async def aclose(self) -> None:
        await self.warehouse.aclose()


def _total(name: str) -> float:
    return sum(
        sample.value
        for family in REGISTRY.collect()
        for sample in family.samples
        if sample.name == name
    )


def summary() -> str:
    """One line for systemd's STATUS=: what came in, what landed, what is held."""
    accepted = _total("afpipe_events_accepted_total")
    loaded = _total("afpipe_rows_loaded_total")
    held = _total("afpipe_messages_in_flight")
    return f"accepted {accepted:.0f} events, loaded {loaded:.0f} rows, holding {held:.0f} messages"
