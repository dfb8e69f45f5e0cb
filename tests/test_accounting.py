"""The accounting: each event leaving a queue counted once per target, by outcome,
so that accepted = settled + held + still queued (afpipe.pipeline.accounting)."""

from __future__ import annotations

import itertools

import trio
import trio.testing
from prometheus_client import REGISTRY

from afpipe.health import Health
from afpipe.pipeline.config import ConsumerConfig
from afpipe.pipeline.consumer import serve_consumer
from afpipe.pipeline.secondary import Secondary, TableCreatingWarehouse
from tests.events import from_payload
from tests.fakes import FakeQueue, FakeWarehouse
from tests.test_consumer import FAKE, VIRTUAL_TIMEOUT_S, body, consumer, payload

_names = itertools.count()


def fresh_queue() -> FakeQueue:
    """A queue with a name of its own: the counters are process-wide."""
    queue = FakeQueue()
    queue.name = f"accounting-{next(_names)}"
    return queue


def settled(queue: str, target: str, outcome: str) -> float:
    labels = {"queue": queue, "target": target, "outcome": outcome}
    return REGISTRY.get_sample_value("afpipe_events_settled_total", labels) or 0.0


def held(queue: str) -> float | None:
    return REGISTRY.get_sample_value("afpipe_events_held", {"queue": queue})


def received_again(queue: str) -> float:
    labels = {"queue": queue}
    return REGISTRY.get_sample_value("afpipe_messages_received_again_total", labels) or 0.0


async def test_loaded_and_dead_lettered_events_settle_once_their_message_leaves(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bad = payload(2)
    queue = fresh_queue()
    warehouse = FakeWarehouse(reject={from_payload(bad).id: "refused"})
    warehouse.gate = trio.Event()  # hold the load: the events are held, not settled
    queue.put(body(payload(1), bad, payload(3)))
    queue.put(body(payload(4)))
    with trio.fail_after(VIRTUAL_TIMEOUT_S):
        async with consumer(queue, warehouse, FAKE):
            await trio.sleep(5)
            assert held(queue.name) == 4
            assert settled(queue.name, "primary", "loaded") == 0
            warehouse.gate.set()
            await queue.activity.wait_for(lambda: len(queue.deleted) == 2)
    assert settled(queue.name, "primary", "loaded") == 3
    assert settled(queue.name, "primary", "dead_lettered") == 1
    assert held(queue.name) == 0


async def test_a_message_dead_lettered_whole_settles_its_events_for_every_target(
    autojump_clock: trio.testing.MockClock,
) -> None:
    queue = fresh_queue()
    queue.put(body(payload(1), payload(2)), receive_count=20)  # past twice max_receives
    primary, other = FakeWarehouse(), FakeWarehouse(name="secondary")
    sink = Secondary(other, None, timeout_s=5, body_limit_bytes=256 * 1024)
    stop = trio.Event()
    with trio.fail_after(VIRTUAL_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_consumer, queue, primary, FAKE, stop, Health(30), sink)
            await queue.activity.wait_for(lambda: len(queue.deleted) == 1)
            stop.set()
    for target in ("primary", "secondary"):
        assert settled(queue.name, target, "dead_lettered") == 2
        assert settled(queue.name, target, "loaded") == 0
    assert received_again(queue.name) == 1
    assert primary.rows == {} == other.rows


async def test_the_secondary_settles_as_loaded_handed_off_or_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Down with a retry queue: handed off from the main queue, then loaded from the
    retry queue, which balances on its own; with no retry queue: dropped."""
    config = ConsumerConfig(batch_linger_s=0.1, empty_receive_pause_s=0.1)
    main, retry, alone = fresh_queue(), fresh_queue(), fresh_queue()
    down = FakeWarehouse(name="secondary", transient_failures=1000)
    for n in range(5):
        main.put(body(payload(n)))
        alone.put(body(payload(n)))
    stop = trio.Event()
    with trio.fail_after(VIRTUAL_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            for queue, retry_queue in ((main, retry), (alone, None)):
                sink = Secondary(down, retry_queue, timeout_s=5, body_limit_bytes=256 * 1024)
                primary = FakeWarehouse()
                await nursery.start(serve_consumer, queue, primary, config, stop, Health(30), sink)
                await queue.activity.wait_for(lambda q=queue: len(q.deleted) == 5)  # type: ignore[misc]
            down.transient_failures = 0
            drained = TableCreatingWarehouse(down, drains_backlog=True)
            await nursery.start(serve_consumer, retry, drained, config, stop, Health(30))
            await retry.activity.wait_for(lambda: not retry.remaining())
            stop.set()
    assert settled(main.name, "primary", "loaded") == 5
    assert settled(main.name, "secondary", "handed_off") == 5
    assert settled(retry.name, "secondary", "loaded") == 5
    assert settled(alone.name, "secondary", "dropped") == 5
    assert settled(alone.name, "primary", "loaded") == 5


async def test_every_count_a_consumer_can_move_is_exported_at_zero_from_its_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A labelled counter used to appear at its first increment only: after a restart
    that brought it back to the value it had before, increase() saw no change."""
    queue = fresh_queue()
    sink = Secondary(FakeWarehouse(name="secondary"), FakeQueue(), timeout_s=5,
                     body_limit_bytes=256 * 1024)  # fmt: skip
    stop = trio.Event()
    with trio.fail_after(VIRTUAL_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                serve_consumer, queue, FakeWarehouse(), FAKE, stop, Health(30), sink
            )
            stop.set()
    for target, outcome in [
        ("primary", "loaded"),
        ("primary", "dead_lettered"),
        ("secondary", "loaded"),
        ("secondary", "dead_lettered"),
        ("secondary", "handed_off"),
    ]:
        labels = {"queue": queue.name, "target": target, "outcome": outcome}
        assert REGISTRY.get_sample_value("afpipe_events_settled_total", labels) == 0
    again = {"queue": queue.name}
    assert REGISTRY.get_sample_value("afpipe_messages_received_again_total", again) == 0
    assert REGISTRY.get_sample_value("afpipe_dead_lettered_total", {"kind": "event"}) is not None
