"""Dual write: the secondary never holds the primary back and loses nothing it can keep."""

from __future__ import annotations

import trio
import trio.testing

from afpipe.codec import decode_body, encode_body, encode_event
from afpipe.errors import TransientError
from afpipe.health import Health
from afpipe.pipeline.config import ConsumerConfig
from afpipe.pipeline.consumer import serve_consumer
from afpipe.pipeline.secondary import Delivery, Secondary, TableCreatingWarehouse
from tests.events import from_payload
from tests.fakes import FakeQueue, FakeWarehouse

EVENTS = [from_payload({"event_name": "install", "n": n}) for n in range(5)]


def secondary(warehouse: FakeWarehouse, retry: FakeQueue | None) -> Secondary:
    return Secondary(warehouse, retry, timeout_s=5, body_limit_bytes=64 * 1024, cooldown_s=30)


async def test_healthy_secondary_loads_and_is_safe(autojump_clock: trio.testing.MockClock) -> None:
    warehouse = FakeWarehouse(name="secondary")
    delivery = await secondary(warehouse, FakeQueue()).deliver(EVENTS)
    assert delivery == Delivery(True, "loaded", [])
    assert set(warehouse.rows) == {e.id for e in EVENTS}


async def test_down_secondary_hands_events_to_the_retry_queue_then_skips_while_cooling(
    autojump_clock: trio.testing.MockClock,
) -> None:
    warehouse = FakeWarehouse(name="secondary", transient_failures=1)
    retry = FakeQueue()
    sink = secondary(warehouse, retry)
    assert await sink.deliver(EVENTS[:3]) == Delivery(True, "handed_off")
    handed = [e.id for body in retry.remaining() for e in decode_body(retry.body_of(body))]
    assert handed == [e.id for e in EVENTS[:3]]
    # Within the cool-down the secondary is not even tried: no time is spent on it.
    before = trio.current_time()
    calls = warehouse.load_calls
    assert await sink.deliver(EVENTS[3:]) == Delivery(True, "handed_off")
    assert warehouse.load_calls == calls and trio.current_time() == before
    assert sink.handed_off_events == 5


async def test_slow_secondary_is_cut_off_at_its_time_budget(
    autojump_clock: trio.testing.MockClock,
) -> None:
    warehouse = FakeWarehouse(name="secondary")
    warehouse.gate = trio.Event()  # never opens
    retry = FakeQueue()
    start = trio.current_time()
    assert (await secondary(warehouse, retry).deliver(EVENTS)).safe
    assert trio.current_time() - start == 5
    assert len(retry.remaining()) == 1


async def test_failed_hand_off_is_not_safe_to_delete(
    autojump_clock: trio.testing.MockClock,
) -> None:
    retry = FakeQueue()
    retry.send_error = TransientError("retry queue down")
    assert not (await secondary(FakeWarehouse(transient_failures=9), retry).deliver(EVENTS)).safe


async def test_without_retry_queue_events_are_dropped_and_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sink = secondary(FakeWarehouse(transient_failures=9), None)
    assert await sink.deliver(EVENTS) == Delivery(True, "dropped")
    assert sink.dropped_events == len(EVENTS)


async def test_consumer_with_secondary_down_commits_primary_then_retry_consumer_catches_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    queue, retry = FakeQueue(), FakeQueue()
    primary = FakeWarehouse(name="primary")
    down = FakeWarehouse(name="secondary", transient_failures=1000)
    for event in EVENTS:
        queue.put(encode_body([encode_event(event.payload)]))
    config = ConsumerConfig(batch_linger_s=0.1, empty_receive_pause_s=0.1)
    stop = trio.Event()
    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            sink = secondary(down, retry)
            await nursery.start(serve_consumer, queue, primary, config, stop, Health(30), sink)
            await primary.activity.wait_for(lambda: len(primary.rows) == len(EVENTS))
            await queue.activity.wait_for(lambda: not queue.remaining())
            assert down.rows == {} and retry.remaining()
            # The secondary comes back: the retry consumer loads what it missed.
            down.transient_failures = 0
            lazy = TableCreatingWarehouse(down)
            await nursery.start(serve_consumer, retry, lazy, config, stop, Health(30))
            await down.activity.wait_for(lambda: len(down.rows) == len(EVENTS))
            await retry.activity.wait_for(lambda: not retry.remaining())
            stop.set()
    assert set(down.rows) == set(primary.rows) == {e.id for e in EVENTS}


class SlowToCreate(FakeWarehouse):
    def __init__(self) -> None:
        super().__init__(name="secondary")
        self.creates = 0

    async def ensure_table(self) -> None:
        self.creates += 1
        await trio.sleep(1)


async def test_concurrent_first_loads_create_the_table_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Each writer's first load ran CREATE TABLE at once: on Redshift all but one of
    concurrent creators fail (error 1023), and the secondary, which does not retry,
    went down for its cool-down (seen in bench.e2e: 1,988 of 2,000 events handed off
    to the retry queue)."""
    warehouse = SlowToCreate()
    creating = TableCreatingWarehouse(warehouse)
    drained = TableCreatingWarehouse(creating, drains_backlog=True)
    async with trio.open_nursery() as nursery:
        for event in EVENTS:
            nursery.start_soon(creating.load, [event])
        nursery.start_soon(drained.load, EVENTS[:1])
    assert warehouse.creates == 1
    assert set(warehouse.rows) == {e.id for e in EVENTS}
