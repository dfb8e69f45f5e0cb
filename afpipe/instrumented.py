"""Queue and warehouse calls counted at the seams, so each backend is measured the
same way and no component counts by hand what a seam can see."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

from afpipe import metrics
from afpipe.errors import AfpipeError
from afpipe.event import Event, parse_event_time
from afpipe.queue.base import DeadLetter, Queue, QueueSize, ReceivedMessage
from afpipe.warehouse.base import LoadResult, Rejected, Warehouse


class InstrumentedQueue:
    """A ``Queue`` whose every call is counted (and failures by operation). Its
    ``name`` is the label every queue metric carries ("main", "secondary_retry"),
    not the queue's URL: one queue, one label, whichever metric."""

    OPERATIONS = (
        "send",
        "receive",
        "delete",
        "change_visibility",
        "dead_letter",
        "redrive",
        "size",
    )

    def __init__(self, queue: Queue, label: str) -> None:
        self.queue = queue
        self.name = self.label = label
        for operation in self.OPERATIONS:  # exported at 0 from the start, for rates
            metrics.QUEUE_OPERATIONS.labels(label, operation)
            metrics.QUEUE_ERRORS.labels(label, operation)

    @contextmanager
    def _counted(self, operation: str) -> Iterator[None]:
        metrics.QUEUE_OPERATIONS.labels(self.label, operation).inc()
        try:
            yield
        except AfpipeError:
            metrics.QUEUE_ERRORS.labels(self.label, operation).inc()
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

    async def peek_dead_letters(self, limit: int) -> list[DeadLetter]:
        return await self.queue.peek_dead_letters(limit)

    async def redrive(self, limit: int) -> int:
        with self._counted("redrive"):
            return await self.queue.redrive(limit)

    async def size(self) -> QueueSize:
        with self._counted("size"):
            return await self.queue.size()

    async def ping(self) -> None:
        await self.queue.ping()

    async def aclose(self) -> None:
        await self.queue.aclose()


class InstrumentedWarehouse:
    """A ``Warehouse`` whose loads are timed and counted per target."""

    def __init__(self, warehouse: Warehouse) -> None:
        self.warehouse = warehouse
        self.name = warehouse.name
        self._newest_event = ""  # the newest event_time committed, as to_row writes it

    async def ensure_table(self) -> None:
        await self.warehouse.ensure_table()

    async def load(self, events: Sequence[Event]) -> LoadResult:
        started = time.perf_counter()
        try:
            result = await self.warehouse.load(events)
        except AfpipeError:
            metrics.LOAD_FAILURES.labels(self.name).inc()
            raise
        metrics.LOAD_SECONDS.labels(self.name).observe(time.perf_counter() - started)
        metrics.BATCHES.labels(self.name).inc()
        metrics.ROWS.labels(self.name).inc(result.loaded)
        metrics.LAST_LOAD.labels(self.name).set_to_current_time()
        self._note_newest(events, result.rejected)
        return result

    def _note_newest(self, events: Sequence[Event], rejected: Sequence[Rejected]) -> None:
        """The freshness of the warehouse: the newest event_time it was given."""
        refused = {item.event.id for item in rejected}
        times = (parse_event_time(e.payload.get("event_time")) for e in events)
        committed = [t for e, t in zip(events, times, strict=True) if t and e.id not in refused]
        newest = max(committed, default="")
        if newest > self._newest_event:  # fixed-width text: compared as times
            self._newest_event = newest
            moment = datetime.fromisoformat(newest).replace(tzinfo=UTC)
            metrics.NEWEST_LOADED_EVENT.labels(self.name).set(moment.timestamp())

    async def ping(self) -> None:
        await self.warehouse.ping()

    async def aclose(self) -> None:
        await self.warehouse.aclose()
