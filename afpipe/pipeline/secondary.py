"""The secondary warehouse: loaded beside the primary, never holding it back.

Each batch is offered to the secondary with a time budget while the primary
loads. When the secondary fails (or failed within the last ``cooldown_s``, so an
outage costs nothing per batch), its events are handed durably to the
secondary retry queue, from which a separate consumer loads them into the
secondary only. With no retry queue, the events are dropped for the secondary,
logged and counted: the Node.js service's behaviour, warned about at start.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import msgspec
import trio

from afpipe import metrics
from afpipe.codec import encode_body, encode_event, pack
from afpipe.errors import AfpipeError, ConfigError
from afpipe.event import Event
from afpipe.pipeline.accounting import Outcome
from afpipe.queue.base import Queue, group_by_size
from afpipe.warehouse.base import LoadResult, Rejected, Warehouse

log = logging.getLogger("afpipe.secondary")


class Delivery(msgspec.Struct, frozen=True):
    """What became of a batch offered to the secondary. ``safe``: the source
    messages may be deleted; ``outcome``: where their events went (meaningful
    when safe); ``rejected``: events the secondary loaded none of."""

    safe: bool
    outcome: Outcome
    rejected: list[Rejected] = []


class Secondary:
    def __init__(
        self,
        warehouse: Warehouse,
        retry_queue: Queue | None,
        *,
        timeout_s: float,
        body_limit_bytes: int,
        cooldown_s: float = 30.0,
    ) -> None:
        self.warehouse = warehouse
        self.name = warehouse.name
        self.retry_queue = retry_queue
        self.timeout_s = timeout_s
        self.body_limit_bytes = body_limit_bytes
        self.cooldown_s = cooldown_s
        self._down_until = -math.inf
        self.handed_off_events = 0
        self.dropped_events = 0

    async def deliver(self, events: Sequence[Event]) -> Delivery:
        if trio.current_time() >= self._down_until:
            with trio.move_on_after(self.timeout_s):
                try:
                    result = await self.warehouse.load(events)
                except ConfigError:
                    raise  # an operator must act: the process exits 2 (cli)
                except AfpipeError as exc:
                    log.warning("secondary load failed", extra={"error": str(exc)})
                else:
                    return Delivery(True, "loaded", list(result.rejected))
            self._down_until = trio.current_time() + self.cooldown_s
        return await self._hand_off(events)

    async def _hand_off(self, events: Sequence[Event]) -> Delivery:
        if self.retry_queue is None:
            self.dropped_events += len(events)
            metrics.SECONDARY_DROPPED.inc(len(events))
            log.error(
                "secondary unavailable and no AFPIPE_SECONDARY_RETRY_QUEUE_URL: events dropped"
                " for the secondary",
                extra={"events": len(events), "dropped_total": self.dropped_events},
            )
            return Delivery(True, "dropped")
        items = [encode_event(e.payload) for e in events]
        bodies = [encode_body(group) for group in pack(items, self.body_limit_bytes)]
        try:
            # SQS bounds a batch's bodies together like one message: ten full
            # bodies in one call would fail every time (BatchRequestTooLong).
            for batch in group_by_size(bodies, self.body_limit_bytes):
                await self.retry_queue.send_batch([bodies[i] for i in batch])
        except AfpipeError as exc:
            # Not durable anywhere: keep the source messages so they come back.
            log.error("secondary hand-off failed", extra={"error": str(exc)})
            return Delivery(False, "handed_off")
        self.handed_off_events += len(events)
        metrics.SECONDARY_HANDED_OFF.inc(len(events))
        metrics.SECONDARY_BACKLOG.inc(len(events))
        log.info("secondary events handed to the retry queue", extra={"events": len(events)})
        return Delivery(True, "handed_off")


class TableCreatingWarehouse:
    """A warehouse that creates its table at its first load, not at start, so a
    warehouse that is down at start-up does not stop the daemon from starting.

    One writer creates it while the others wait: every writer's first load used
    to run CREATE TABLE at once, and on Redshift all but one of concurrent creators
    fail (error 1023; the warehouse tries again, but each failure costs a backoff,
    which the secondary's time budget and cool-down pay for)."""

    def __init__(self, warehouse: Warehouse, *, drains_backlog: bool = False) -> None:
        self.warehouse = warehouse
        self.name = warehouse.name
        self.drains_backlog = drains_backlog  # loads come from the secondary retry queue
        self._ready = False
        self._creating = trio.Lock()

    async def ensure_table(self) -> None:
        if self._ready:
            return
        async with self._creating:
            if not self._ready:
                await self.warehouse.ensure_table()
                self._ready = True

    async def load(self, events: Sequence[Event]) -> LoadResult:
        await self.ensure_table()
        result = await self.warehouse.load(events)
        if self.drains_backlog:
            metrics.SECONDARY_BACKLOG.dec(len(events))
        return result

    async def ping(self) -> None:
        await self.warehouse.ping()

    async def aclose(self) -> None:
        await self.warehouse.aclose()
