"""afpipe.producer: group commit of concurrent requests into few queue sends."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from afpipe.codec import EncodedEvent, decode_body, encode_event
from afpipe.errors import Overloaded, TransientError
from afpipe.health import Health
from afpipe.producer import Producer, Ticket, wait_ticket
from tests.fakes import FakeQueue

TIMEOUT_S = 10
MAX_MESSAGE_BYTES = 1000


def request(tag: str, count: int = 1, pad: int = 0) -> list[EncodedEvent]:
    return [encode_event({"request": tag, "n": n, "pad": "x" * pad}) for n in range(count)]


def message_of(queue: FakeQueue) -> dict[str, str]:
    """Event id -> the id of the queue message holding it."""
    return {
        event.id: message_id
        for message_id in queue.remaining()
        for event in decode_body(queue.body_of(message_id))
    }


def assert_acked(ticket: Ticket, events: list[EncodedEvent], queue: FakeQueue) -> None:
    assert ticket.done.is_set()
    assert ticket.error is None
    assert ticket.remaining == 0
    where = message_of(queue)
    expected: list[str] = []
    for event in events:
        if where[event.id] not in expected:
            expected.append(where[event.id])
    assert ticket.message_ids == expected


@pytest.fixture
def held_queue() -> FakeQueue:
    """A queue whose sends block until ``send_gate`` is set."""
    queue = FakeQueue()
    queue.send_gate = trio.Event()
    return queue


def release(queue: FakeQueue) -> None:
    assert queue.send_gate is not None
    queue.send_gate.set()


async def start(nursery: trio.Nursery, producer: Producer) -> None:
    await nursery.start(producer.run)


async def test_concurrent_submits_are_grouped_into_few_sends(
    held_queue: FakeQueue, nursery: trio.Nursery
) -> None:
    producer = Producer(
        held_queue, max_message_bytes=256 * 1024, max_pending_events=1000, senders=1
    )
    with trio.fail_after(TIMEOUT_S):
        await start(nursery, producer)
        first = request("first")
        tickets = [(producer.submit(first), first)]
        await trio.testing.wait_all_tasks_blocked()
        assert len(held_queue.send_calls) == 1  # in flight, blocked
        for i in range(50):  # arrive while the first send is in flight
            events = request(f"r{i}", count=1 + i % 3)
            tickets.append((producer.submit(events), events))
        assert producer.pending() == sum(len(e) for _, e in tickets[1:])
        release(held_queue)
        for ticket, _ in tickets:
            await ticket.done.wait()
    assert len(held_queue.send_calls) == 2
    assert [len(call) for call in held_queue.send_calls] == [1, 1]
    for ticket, events in tickets:
        assert_acked(ticket, events, held_queue)
    assert producer.pending() == 0


async def test_bodies_never_exceed_the_message_limit(nursery: trio.Nursery) -> None:
    queue = FakeQueue()
    queue.send_gate = trio.Event()
    producer = Producer(
        queue, max_message_bytes=MAX_MESSAGE_BYTES, max_pending_events=1000, senders=2
    )
    with trio.fail_after(TIMEOUT_S):
        await start(nursery, producer)
        tickets = []
        for i in range(60):
            events = request(f"r{i}", count=1 + i % 4, pad=(i * 37) % 300)
            tickets.append((producer.submit(events), events))
        release(queue)
        for ticket, _ in tickets:
            await ticket.done.wait()
    for call in queue.send_calls:
        assert 1 <= len(call) <= 10
        for body in call:
            assert len(body.encode("utf-8")) <= MAX_MESSAGE_BYTES
        # SQS also limits the batch payload to the message size
        assert sum(len(body.encode("utf-8")) for body in call) <= MAX_MESSAGE_BYTES
    for ticket, events in tickets:
        assert_acked(ticket, events, queue)
    sent = [e.id for m in queue.remaining() for e in decode_body(queue.body_of(m))]
    assert sorted(sent) == sorted(e.id for _, events in tickets for e in events)  # once each


async def test_a_large_request_is_acked_once_all_its_sends_are_done(
    held_queue: FakeQueue, nursery: trio.Nursery
) -> None:
    producer = Producer(
        held_queue, max_message_bytes=MAX_MESSAGE_BYTES, max_pending_events=1000, senders=1
    )
    big = request("big", count=12, pad=150)  # ~2.5 messages' worth
    with trio.fail_after(TIMEOUT_S):
        await start(nursery, producer)
        ticket = producer.submit(big)
        sends = 0
        while not ticket.done.is_set():
            await trio.testing.wait_all_tasks_blocked()
            assert len(held_queue.send_calls) == sends + 1  # one send at a time
            sends += 1
            assert held_queue.send_gate is not None
            gate, held_queue.send_gate = held_queue.send_gate, trio.Event()
            assert not ticket.done.is_set()  # not before its last event is on the queue
            gate.set()
            await trio.testing.wait_all_tasks_blocked()
    assert sends >= 3
    assert_acked(ticket, big, held_queue)
    assert len(ticket.message_ids) == sends


async def test_overloaded_when_pending_events_would_exceed_the_bound(
    nursery: trio.Nursery,
) -> None:
    queue = FakeQueue()
    producer = Producer(queue, max_message_bytes=MAX_MESSAGE_BYTES, max_pending_events=5, senders=1)
    accepted, refused, later = request("a", 3), request("b", 3), request("c", 2)
    first = producer.submit(accepted)
    with pytest.raises(Overloaded):
        producer.submit(refused)
    assert producer.pending() == 3
    last = producer.submit(later)  # still fits
    assert producer.pending() == 5
    with pytest.raises(Overloaded):
        producer.submit(request("d", 1))
    with trio.fail_after(TIMEOUT_S):
        await start(nursery, producer)
        await first.done.wait()
        await last.done.wait()
    sent = {e.id for m in queue.remaining() for e in decode_body(queue.body_of(m))}
    assert sent == {e.id for e in accepted + later}  # the refused request was never sent


async def test_send_failure_fails_the_tickets_and_the_producer_goes_on(
    nursery: trio.Nursery,
) -> None:
    queue = FakeQueue()
    queue.send_error = TransientError("queue unavailable")
    health = Health(fail_after_s=0)
    producer = Producer(
        queue, max_message_bytes=MAX_MESSAGE_BYTES, max_pending_events=100, senders=1, health=health
    )
    with trio.fail_after(TIMEOUT_S):
        await start(nursery, producer)
        ticket = producer.submit(request("a", 2))
        with pytest.raises(TransientError, match="queue unavailable"):
            await wait_ticket(ticket, timeout_s=5)
        assert queue.remaining() == []
        assert health.failing() == ["queue"]
        queue.send_error = None
        events = request("b")
        ok = producer.submit(events)
        assert await wait_ticket(ok, timeout_s=5) == ok.message_ids
    assert_acked(ok, events, queue)
    assert health.failing() == []


async def test_close_sends_everything_queued_then_run_returns(held_queue: FakeQueue) -> None:
    producer = Producer(
        held_queue, max_message_bytes=MAX_MESSAGE_BYTES, max_pending_events=1000, senders=2
    )
    tickets = []
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            await start(nursery, producer)
            for i in range(40):
                events = request(f"r{i}", count=2, pad=50)
                tickets.append((producer.submit(events), events))
            await trio.testing.wait_all_tasks_blocked()
            producer.close()
            with pytest.raises(Overloaded):
                producer.submit(request("late"))
            release(held_queue)
        # the nursery exited by itself: run() returned after the flush
    for ticket, events in tickets:
        assert_acked(ticket, events, held_queue)
    assert producer.pending() == 0


async def test_wait_ticket_times_out(
    held_queue: FakeQueue, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    producer = Producer(
        held_queue, max_message_bytes=MAX_MESSAGE_BYTES, max_pending_events=10, senders=1
    )
    with trio.fail_after(60):
        await start(nursery, producer)
        ticket = producer.submit(request("a"))
        start_s = trio.current_time()
        with pytest.raises(TransientError, match="timed out"):
            await wait_ticket(ticket, timeout_s=7)
    assert trio.current_time() - start_s == pytest.approx(7)


async def test_an_empty_submit_is_done_at_once_and_sends_nothing(nursery: trio.Nursery) -> None:
    queue = FakeQueue()
    producer = Producer(queue, max_message_bytes=MAX_MESSAGE_BYTES, max_pending_events=5, senders=1)
    with trio.fail_after(TIMEOUT_S):
        await start(nursery, producer)
        empty = producer.submit([])
        assert await wait_ticket(empty, timeout_s=1) == []
        events = request("after")
        ticket = producer.submit(events)
        await wait_ticket(ticket, timeout_s=5)  # the sender is still alive
    assert_acked(ticket, events, queue)
    assert len(queue.send_calls) == 1
