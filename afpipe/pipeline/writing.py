"""Writers: batch, load into the primary (and secondary), dead-letter rejects, delete.

A message the poll loop marked ``alone`` (received more than AFPIPE_MAX_RECEIVES
times) is committed in a load of its own: the batch lingering in the writer is
committed first, without it, then the message alone, through the same ``_commit``
as any batch (its rejected events are dead-lettered with the warehouse's reason,
the rest commit, then it is deleted).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence

import trio

from afpipe import metrics
from afpipe.codec import encode_body, encode_event
from afpipe.errors import AfpipeError, ConfigError, PermanentError
from afpipe.event import Event
from afpipe.health import Health
from afpipe.pipeline.accounting import Ledger
from afpipe.pipeline.batching import Batch, Held, events_of
from afpipe.pipeline.config import ConsumerConfig, backoff_s
from afpipe.pipeline.inflight import InFlight
from afpipe.pipeline.secondary import Delivery, Secondary
from afpipe.queue.base import Queue, ReceivedMessage
from afpipe.warehouse.base import LoadResult, Rejected, Warehouse

log = logging.getLogger("afpipe.pipeline")


async def writer(
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

    async def flush() -> None:
        await _commit(queue, warehouse, secondary, inflight, health, batch.take())

    async with receive:
        while True:
            held: Held | None = None  # stays None when the linger ran out
            with trio.move_on_at(batch.deadline):
                try:
                    held = await receive.receive()
                except trio.EndOfChannel:
                    break
            if held is not None:
                if not batch.fits(held):
                    # Commit what came before first: if the message loaded alone
                    # crashes the process, those are already deleted.
                    await flush()
                batch.add(held, trio.current_time())
            if held is None or batch.full:
                await flush()
    if batch:
        await flush()


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
    delivered: list[Delivery] = []
    async with trio.open_nursery() as nursery:
        if secondary is not None:

            async def to_secondary() -> None:
                delivered.append(await secondary.deliver(events))

            nursery.start_soon(to_secondary)
        result = await _load_until_committed(warehouse, health, events)
    rejected = list(result.rejected)
    delivery = delivered[0] if delivered else None
    if delivery is not None:
        rejected += [Rejected(r.event, f"secondary: {r.reason}") for r in delivery.rejected]
    safe = delivery is None or delivery.safe
    deletable = await _dead_letter_rejected(queue, items, rejected) if safe else set()
    settled = [h for h in items if h.message.message_id in deletable]
    _settle(inflight.ledger, warehouse.name, result, secondary, delivery, settled)
    done = [h.message.receipt_handle for h in settled]
    log.debug("batch committed", extra={"events": len(events), "loaded": result.loaded})
    if len(items) == 1 and items[0].alone:
        log.info(
            "message loaded alone committed",
            extra={"message_id": items[0].message.message_id, "deleted": bool(done)},
        )
    await _delete(queue, done)
    # Messages kept back (their rejects found no dead-letter home) must not be
    # heartbeated forever: let them come back after their visibility timeout.
    inflight.remove([h.message.receipt_handle for h in items])


def _settle(
    ledger: Ledger,
    target: str,
    result: LoadResult,
    secondary: Secondary | None,
    delivery: Delivery | None,
    settled: list[Held],
) -> None:
    """Count the events of the messages leaving the queue, once per target."""
    primary_refused = {r.event.id for r in result.rejected}
    for held in settled:
        ledger.settle_load(target, held.events, primary_refused)
        if secondary is None or delivery is None:
            continue
        if delivery.outcome == "loaded":
            refused = {r.event.id for r in delivery.rejected}
            ledger.settle_load(secondary.name, held.events, refused)
        else:
            ledger.settle(secondary.name, held.events, delivery.outcome)


async def _load_until_committed(
    warehouse: Warehouse, health: Health, events: list[Event]
) -> LoadResult:
    attempt = 0
    while True:
        try:
            result = await warehouse.load(events)
            health.ok(warehouse.name)
            return result
        except ConfigError:
            raise  # an operator must act: the process exits 2 (cli)
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


async def _delete(queue: Queue, handles: list[str]) -> None:
    """Delete committed messages; a failure is not fatal: they come back and their
    events are deduplicated."""
    if not handles:
        return
    for attempt in range(1, 4):
        try:
            await queue.delete(handles)
            return
        except PermanentError as exc:  # e.g. a stale receipt handle: retrying cannot help
            log.warning("delete refused", extra={"error": str(exc)})
            return
        except AfpipeError as exc:
            log.warning("delete failed", extra={"error": str(exc), "attempt": attempt})
            metrics.RETRIES.labels("delete").inc()
            await trio.sleep(backoff_s(attempt))
