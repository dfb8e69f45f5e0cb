"""AFPIPE_MAX_RECEIVES: a much-received message is loaded alone, then dead-lettered.

With ``n = max_receives`` and ``k`` a message's receive count: ``k <= n`` is batched as
usual, ``n < k <= 2n`` is loaded in a batch of its own, ``k > 2n`` is dead-lettered
unloaded (afpipe.pipeline.polling). Most tests run the real embedded queue and
warehouse; earlier receives "that never finished" (a daemon killed while holding the
message) are made with the queue's own ``receive``.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from afpipe.assembly import consumer_config
from afpipe.codec import decode_body
from afpipe.config import Settings, defaults
from afpipe.event import Event
from afpipe.pipeline.config import ConsumerConfig
from afpipe.queue.embedded import EmbeddedQueue
from afpipe.warehouse.base import LoadResult
from afpipe.warehouse.embedded import EmbeddedWarehouse
from tests.events import from_payload
from tests.fakes import Activity, FakeQueue, FakeWarehouse, WatchedEmbeddedQueue, depth
from tests.test_consumer import (
    FAKE,
    REAL,
    TIMEOUT_S,
    VIRTUAL_TIMEOUT_S,
    body,
    consumer,
    payload,
    with_,
)

MAX_RECEIVES = 3
# One poller and one writer, so what is in flight together is known; a long linger,
# so messages not loaded alone share one batch (flushed when full or by the drain).
ONE_BY_ONE = with_(REAL, pollers=1, writers=1, batch_linger_s=60, max_receives=MAX_RECEIVES)


class RecordingWarehouse:
    """A spy around the real embedded warehouse: the event ids of every load call."""

    def __init__(self, inner: EmbeddedWarehouse) -> None:
        self.inner = inner
        self.name = inner.name
        self.loads: list[list[str]] = []
        self.activity = Activity()

    async def ensure_table(self) -> None:
        await self.inner.ensure_table()

    async def load(self, events: Sequence[Event]) -> LoadResult:
        self.loads.append([e.id for e in events])
        try:
            return await self.inner.load(events)
        finally:
            self.activity.notify()

    async def ping(self) -> None:
        await self.inner.ping()

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture
async def queue(tmp_path: Path) -> AsyncIterator[WatchedEmbeddedQueue]:
    queue = WatchedEmbeddedQueue(tmp_path / "queue.db")
    try:
        yield queue
    finally:
        await queue.aclose()


@pytest.fixture
def spy(embedded_warehouse: EmbeddedWarehouse) -> RecordingWarehouse:
    return RecordingWarehouse(embedded_warehouse)


async def send_worn(queue: EmbeddedQueue, text: str, earlier_receives: int) -> None:
    """Send ``text`` and receive it that many times without finishing (visibility 0).

    Every other message on ``queue`` must be invisible at the time.
    """
    await queue.send_batch([text])
    for _ in range(earlier_receives):
        (message,) = await queue.receive(max_messages=10, wait_s=0, visibility_s=0)
        assert message.body == text


def ids(*payloads: dict[str, Any]) -> list[str]:
    return [from_payload(p).id for p in payloads]


def deleted(queue: WatchedEmbeddedQueue, count: int) -> Any:
    return lambda: len(queue.deleted_handles) == count


async def test_message_received_past_max_receives_with_good_events_is_loaded(
    queue: WatchedEmbeddedQueue,
    spy: RecordingWarehouse,
    embedded_warehouse: EmbeddedWarehouse,
    caplog: pytest.LogCaptureFixture,
) -> None:
    worn = (payload(1), payload(2))
    caplog.set_level(logging.WARNING, logger="afpipe.pipeline")
    with trio.fail_after(TIMEOUT_S):
        await send_worn(queue, body(*worn), earlier_receives=MAX_RECEIVES)  # next: n + 1
        async with consumer(queue, spy, ONE_BY_ONE):
            await queue.activity.wait_for(deleted(queue, 1))
        assert await embedded_warehouse.count() == 2
        assert await depth(queue) == (0, 0)
        assert await queue.peek_dead_letters(10) == []
    assert spy.loads == [ids(*worn)]
    (record,) = [r for r in caplog.records if "loading message alone" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert record.__dict__["receive_count"] == MAX_RECEIVES + 1
    assert record.__dict__["message_id"]


async def test_message_past_max_receives_is_loaded_in_a_batch_of_its_own(
    queue: WatchedEmbeddedQueue, spy: RecordingWarehouse, embedded_warehouse: EmbeddedWarehouse
) -> None:
    before, worn, after = (payload(1), payload(2)), (payload(3), payload(4)), (payload(5),)
    with trio.fail_after(TIMEOUT_S):
        # Queue order: before, worn, after; all received together by the one poller.
        await queue.send_batch([body(*before)])
        (held,) = await queue.receive(max_messages=10, wait_s=0, visibility_s=3600)
        await send_worn(queue, body(*worn), earlier_receives=MAX_RECEIVES)
        await queue.change_visibility([held.receipt_handle], 0)
        await queue.send_batch([body(*after)])
        # Full with all five events: mixed, they would be one load at once.
        async with consumer(queue, spy, with_(ONE_BY_ONE, batch_max_rows=5)):
            await spy.activity.wait_for(lambda: any(ids(*worn)[0] in load for load in spy.loads))
        # the drain has committed and deleted whatever was still lingering
        assert await embedded_warehouse.count() == 5
        assert await depth(queue) == (0, 0)
        assert await queue.peek_dead_letters(10) == []
    (alone,) = [load for load in spy.loads if set(load) & set(ids(*worn))]
    assert alone == ids(*worn)  # only its own events
    assert sorted(i for load in spy.loads for i in load) == sorted(ids(*before, *worn, *after))


async def test_message_at_max_receives_is_still_batched_with_others(
    queue: WatchedEmbeddedQueue, spy: RecordingWarehouse
) -> None:
    worn, fresh = payload(1), [payload(2), payload(3)]
    config = with_(ONE_BY_ONE, batch_max_rows=3)  # full only with all three messages
    with trio.fail_after(TIMEOUT_S):
        await send_worn(queue, body(worn), earlier_receives=MAX_RECEIVES - 1)  # next: n
        await queue.send_batch([body(p) for p in fresh])
        async with consumer(queue, spy, config):
            await queue.activity.wait_for(deleted(queue, 3))
    assert spy.loads == [ids(worn, *fresh)]


@pytest.mark.parametrize(
    ("earlier_receives", "dead_lettered"),
    [(2 * MAX_RECEIVES - 1, False), (2 * MAX_RECEIVES, True)],
    ids=["received-2n-loaded-alone", "received-2n+1-dead-lettered"],
)
async def test_the_hard_cap_is_twice_max_receives(
    queue: WatchedEmbeddedQueue,
    spy: RecordingWarehouse,
    embedded_warehouse: EmbeddedWarehouse,
    earlier_receives: int,
    dead_lettered: bool,
) -> None:
    worn = body(payload(1))
    with trio.fail_after(TIMEOUT_S):
        await send_worn(queue, worn, earlier_receives)
        async with consumer(queue, spy, ONE_BY_ONE):
            await queue.activity.wait_for(deleted(queue, 1))
        letters = await queue.peek_dead_letters(10)
        rows = await embedded_warehouse.count()
        assert await depth(queue) == (0, 0)
    if not dead_lettered:
        assert (rows, letters, spy.loads) == (1, [], [ids(payload(1))])
        return
    (letter,) = letters
    assert (letter.body, letter.receive_count) == (worn, 2 * MAX_RECEIVES + 1)
    assert letter.reason == (
        "received 7 times, more than twice AFPIPE_MAX_RECEIVES (3):"
        " tried alone since receive 4, never committed"
    )
    assert (rows, spy.loads) == (0, [])  # not loaded


async def test_solitary_message_with_a_rejected_event_loads_the_rest(
    queue: WatchedEmbeddedQueue,
    spy: RecordingWarehouse,
    embedded_warehouse: EmbeddedWarehouse,
    tmp_path: Path,
) -> None:
    # A trigger refusing some rows stands in for a data error of the warehouse.
    with closing(sqlite3.connect(tmp_path / "warehouse.db")) as conn:
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON appsflyer_events"
            " WHEN NEW.event_name = 'bad' BEGIN SELECT RAISE(ABORT, 'refused row'); END"
        )
    bad = {"event_name": "bad", "n": 2}
    worn = (payload(1), bad, payload(3))
    with trio.fail_after(TIMEOUT_S):
        await send_worn(queue, body(*worn), earlier_receives=MAX_RECEIVES)
        async with consumer(queue, spy, ONE_BY_ONE):
            await queue.activity.wait_for(deleted(queue, 1))
        assert await embedded_warehouse.count() == 2
        assert await depth(queue) == (0, 0)
        (letter,) = await queue.peek_dead_letters(10)
    assert spy.loads[0] == ids(*worn)  # loaded alone, then bisected by the warehouse
    assert letter.reason.startswith("rejected by warehouse: ")
    assert "refused row" in letter.reason
    assert [e.payload for e in decode_body(letter.body)] == [bad]  # only the rejected event


async def test_a_message_that_kills_the_process_every_time_stops_at_the_cap(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Each load of ``killer`` crashes the consumer (and so releases what it held), as a
    process dying and restarting would: the loop ends after 2n receives."""
    killer_id = from_payload(payload(666)).id

    class Killed(FakeWarehouse):
        async def load(self, events: Sequence[Event]) -> LoadResult:
            if any(e.id == killer_id for e in events):
                raise RuntimeError("the process died")
            return await super().load(events)

    queue, warehouse = FakeQueue(), Killed()
    # Ahead of the killer: once both are loaded alone, it commits before the killer runs.
    neighbour = queue.put(body(payload(1)))
    killer = queue.put(body(payload(666)))
    config = with_(FAKE, pollers=1, writers=1, max_receives=MAX_RECEIVES)
    crashes = 0
    with trio.fail_after(VIRTUAL_TIMEOUT_S):
        while not queue.dead_letters:
            try:
                async with consumer(queue, warehouse, config):
                    await queue.activity.wait_for(lambda: bool(queue.dead_letters))
            except ExceptionGroup as group:
                _, rest = group.split(RuntimeError)
                if rest is not None:
                    raise
                crashes += 1
    assert crashes == 2 * MAX_RECEIVES
    (letter,) = queue.dead_letters
    assert letter.message_id == killer
    assert "more than twice AFPIPE_MAX_RECEIVES (3)" in letter.reason
    assert sorted(queue.deleted) == sorted([neighbour, killer])
    assert list(warehouse.rows) == ids(payload(1))
    # the neighbour died with the killer while they shared batches, then loaded alone
    assert [m for m, _ in queue.received_at].count(neighbour) == MAX_RECEIVES + 1


def test_consumer_config_defaults_are_the_settings_defaults() -> None:
    assert ConsumerConfig().max_receives == Settings().max_receives
    assert ConsumerConfig().max_receives == defaults()["AFPIPE_MAX_RECEIVES"]
    assert consumer_config(Settings()) == ConsumerConfig()  # every shared knob agrees
