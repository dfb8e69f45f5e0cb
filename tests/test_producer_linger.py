"""The producer's linger (AFPIPE_PRODUCER_LINGER_MS): single-event requests share a
message when they come close together, and an idle service waits for nothing.

All on trio's autojump clock: the times asserted are the clock's, not the machine's."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from afpipe import config
from afpipe.errors import ConfigError
from afpipe.producer import MAX_LINGER_S, Producer, Ticket
from tests.fakes import FakeQueue
from tests.test_producer import assert_acked, request, start

LINGER_S = 0.05


def producer_on(queue: FakeQueue, *, linger_s: float = LINGER_S, senders: int = 4) -> Producer:
    return Producer(
        queue,
        max_message_bytes=256 * 1024,
        max_pending_events=10_000,
        senders=senders,
        linger_s=linger_s,
    )


async def post_every(
    producer: Producer, count: int, gap_s: float
) -> list[tuple[Ticket, float, float]]:
    """``count`` single-event requests ``gap_s`` apart, as AppsFlyer sends them; each
    request's ticket, when it was submitted and when it was acknowledged."""
    answered: list[tuple[Ticket, float, float]] = []

    async def one(n: int) -> None:
        submitted = trio.current_time()
        ticket = producer.submit(request(f"r{n}"))
        await ticket.done.wait()
        answered.append((ticket, submitted, trio.current_time()))

    async with trio.open_nursery() as nursery:
        for n in range(count):
            nursery.start_soon(one, n)
            await trio.sleep(gap_s)
    return answered


async def test_close_arrivals_share_messages_and_wait_at_most_the_linger(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    queue = FakeQueue()
    producer = producer_on(queue)
    await start(nursery, producer)
    answered = await post_every(producer, 200, gap_s=0.005)  # 200 events/s
    events = len(answered)
    messages = sum(len(call) for call in queue.send_calls)
    # Without the linger each event is its own message (the fake answers at once).
    assert messages <= events / 8, [len(c) for c in queue.send_calls]
    waits = [done - submitted for _, submitted, done in answered]
    assert max(waits) <= LINGER_S + 1e-9
    for ticket, _, _ in answered:
        assert ticket.error is None and len(ticket.message_ids) == 1


async def test_an_idle_service_sends_at_once(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    queue = FakeQueue()
    producer = producer_on(queue)
    await start(nursery, producer)
    answered = await post_every(producer, 5, gap_s=1.0)  # further apart than the linger
    assert [done - submitted for _, submitted, done in answered] == [0.0] * 5
    assert len(queue.send_calls) == 5


async def test_without_linger_close_arrivals_are_each_their_own_message(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    """What the linger is for: the same traffic as above, one message per event."""
    queue = FakeQueue()
    producer = producer_on(queue, linger_s=0)
    await start(nursery, producer)
    answered = await post_every(producer, 50, gap_s=0.005)
    assert sum(len(call) for call in queue.send_calls) == 50
    assert {done - submitted for _, submitted, done in answered} == {0.0}


async def test_a_full_message_ends_the_linger(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    queue = FakeQueue()
    producer = Producer(
        queue, max_message_bytes=4000, max_pending_events=1000, senders=1, linger_s=MAX_LINGER_S
    )
    await start(nursery, producer)
    producer.submit(request("warm"))  # sent at once; the next arrival is close to it
    await trio.sleep(0.001)
    start_s = trio.current_time()
    tickets = []
    for n in range(12):  # ~500 bytes each: more than a message's worth
        events = request(f"big{n}", pad=400)
        tickets.append((producer.submit(events), events))
        await trio.sleep(0.001)
    await tickets[0][0].done.wait()
    # The first message went as soon as a message's worth waited, not after the linger;
    # the rest (less than a message) lingers for company, at most the linger.
    assert trio.current_time() - start_s < 0.1
    for ticket, _ in tickets:
        await ticket.done.wait()
    assert trio.current_time() - start_s <= 0.012 + MAX_LINGER_S
    for ticket, events in tickets:
        assert_acked(ticket, events, queue)


async def test_close_sends_what_lingers_at_once(autojump_clock: trio.testing.MockClock) -> None:
    queue = FakeQueue()
    producer = producer_on(queue, linger_s=MAX_LINGER_S, senders=2)
    async with trio.open_nursery() as nursery:
        await start(nursery, producer)
        first = producer.submit(request("a"))
        second = producer.submit(request("b"))  # close behind: the sender lingers
        await trio.sleep(0.01)
        assert not queue.send_calls
        closed_at = trio.current_time()
        producer.close()
    assert trio.current_time() - closed_at < 0.001  # run returned without the linger
    assert first.done.is_set() and second.done.is_set()
    assert first.message_ids == second.message_ids  # one message


def test_the_linger_is_bounded(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="linger_s"):
        producer_on(FakeQueue(), linger_s=MAX_LINGER_S + 0.001)
    with pytest.raises(ConfigError, match="AFPIPE_PRODUCER_LINGER_MS"):
        config.load({"AFPIPE_PRODUCER_LINGER_MS": "1001"}, tmp_path / "none")
    assert config.load({}, tmp_path / "none").producer_linger_ms == 50


async def test_64_kib_waiting_ends_the_linger(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    """SQS bills each 64 KiB of a payload as one request: once that much waits,
    lingering saves no billed request, only latency is left to lose. So a burst
    (64 clients answered at once come back at once) goes without the linger."""
    queue = FakeQueue()
    producer = producer_on(queue, linger_s=MAX_LINGER_S, senders=1)
    await start(nursery, producer)
    producer.submit(request("warm"))  # sent at once; the next arrivals are close to it
    await trio.sleep(0.001)
    start_s = trio.current_time()
    burst = [request(f"burst{n}", pad=1200) for n in range(60)]  # ~75 KiB in all
    tickets = [(producer.submit(events), events) for events in burst]
    for ticket, _ in tickets:
        await ticket.done.wait()
    assert trio.current_time() - start_s < 0.01  # not the 1 s linger
    for ticket, events in tickets:
        assert_acked(ticket, events, queue)


async def test_less_than_64_kib_lingers(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    queue = FakeQueue()
    producer = producer_on(queue, linger_s=MAX_LINGER_S, senders=1)
    await start(nursery, producer)
    producer.submit(request("warm"))
    await trio.sleep(0.001)
    start_s = trio.current_time()
    tickets = [producer.submit(request(f"small{n}", pad=1200)) for n in range(40)]  # ~50 KiB
    for ticket in tickets:
        await ticket.done.wait()
    assert trio.current_time() - start_s == pytest.approx(MAX_LINGER_S)
    assert len({ticket.message_ids[0] for ticket in tickets}) == 1  # one message
