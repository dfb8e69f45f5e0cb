"""AFPIPE_RECEIVE_PAUSE_MS: after a receive of 1 to 9 messages a poller pauses before
the next, so at light load a ReceiveMessage gathers several messages instead of one.

A long poll returns as soon as one message is there: without the pause, messages
arriving 50 ms apart cost one receive each. The pause comes after the messages are
handed to the writers, a full receive (a backlog) is followed by the next at once,
and ``stop`` (the drain) ends the pause. All on trio's autojump clock: the times
asserted are the clock's, not the machine's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import msgspec
import pytest
import trio
import trio.testing

from afpipe import config
from afpipe.assembly import consumer_config
from afpipe.errors import ConfigError
from afpipe.health import Health
from afpipe.pipeline.batching import Held
from afpipe.pipeline.config import RECEIVE_MAX_MESSAGES, ConsumerConfig
from afpipe.pipeline.inflight import InFlight
from afpipe.pipeline.polling import pause_after_s, poller
from afpipe.queue.base import ReceivedMessage
from tests.fakes import FakeQueue, FakeWarehouse
from tests.test_consumer import FAKE, VIRTUAL_TIMEOUT_S, body, consumer, payload, with_

PAUSE_S = 0.5
ONE_POLLER = with_(FAKE, pollers=1, writers=1, short_receive_pause_s=PAUSE_S)
ARRIVAL_GAP_S = 0.05  # ~20 messages/s: 200 events/s with the producer's linger
FEED_S = 10.0


class Receive(msgspec.Struct, frozen=True):
    started_at: float  # trio clock
    returned_at: float
    count: int


class TimedQueue(FakeQueue):
    """A FakeQueue that notes when each receive started, returned, and what it got."""

    def __init__(self) -> None:
        super().__init__()
        self.started_at: list[float] = []  # every receive, also those cut short by stop
        self.receives: list[Receive] = []  # the receives that returned

    async def receive(
        self, *, max_messages: int, wait_s: float, visibility_s: int | None
    ) -> list[ReceivedMessage]:
        started_at = trio.current_time()
        self.started_at.append(started_at)
        messages = await super().receive(
            max_messages=max_messages, wait_s=wait_s, visibility_s=visibility_s
        )
        self.receives.append(Receive(started_at, trio.current_time(), len(messages)))
        self.activity.notify()  # the base notifies before this record exists
        return messages


class PollerRun:
    def __init__(self) -> None:
        self.stop = trio.Event()
        self.forwarded_at: list[float] = []  # trio clock, one per message handed on
        self.ended_at: float | None = None


@asynccontextmanager
async def one_poller(queue: TimedQueue, config: ConsumerConfig) -> AsyncIterator[PollerRun]:
    """Run ``poller`` alone, its messages taken off the channel as a writer would;
    on exit set ``stop`` and wait for the poller to end."""
    run = PollerRun()
    send, receive = trio.open_memory_channel[Held](0)

    async def take() -> None:
        async with receive:
            async for _ in receive:
                run.forwarded_at.append(trio.current_time())

    async def poll() -> None:
        await poller(queue, config, InFlight(), Health(fail_after_s=60), run.stop, send)
        run.ended_at = trio.current_time()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(take)
        nursery.start_soon(poll)
        yield run
        run.stop.set()


async def feed(queue: FakeQueue, duration_s: float) -> dict[str, float]:
    """One message every ARRIVAL_GAP_S for ``duration_s``; each one's id and send time."""
    sent: dict[str, float] = {}
    for n in range(round(duration_s / ARRIVAL_GAP_S)):
        sent[queue.put(body(payload(n)))] = trio.current_time()
        await trio.sleep(ARRIVAL_GAP_S)
    return sent


# --- the pause, receive by receive -----------------------------------------------------


def test_pause_follows_the_size_of_the_receive() -> None:
    config = ConsumerConfig(empty_receive_pause_s=1.0, short_receive_pause_s=PAUSE_S)
    assert pause_after_s(0, config) == 1.0  # empty: SQS_POLLING_INTERVAL, as before
    assert [pause_after_s(n, config) for n in range(1, RECEIVE_MAX_MESSAGES)] == [PAUSE_S] * 9
    assert pause_after_s(RECEIVE_MAX_MESSAGES, config) == 0.0  # full: a backlog


async def test_after_a_short_receive_the_next_waits_the_pause(
    autojump_clock: trio.testing.MockClock,
) -> None:
    queue = TimedQueue()
    queue.put(body(payload(1)))
    with trio.fail_after(VIRTUAL_TIMEOUT_S):
        async with one_poller(queue, ONE_POLLER) as run:
            await queue.activity.wait_for(lambda: len(queue.started_at) == 2)
    first = queue.receives[0]
    assert first.count == 1
    assert run.forwarded_at == [first.returned_at]  # handed on before the pause
    assert queue.started_at[1] - first.returned_at == pytest.approx(PAUSE_S)


async def test_a_full_receive_is_followed_by_the_next_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    queue = TimedQueue()
    for n in range(2 * RECEIVE_MAX_MESSAGES + 5):
        queue.put(body(payload(n)))
    start = trio.current_time()
    with trio.fail_after(VIRTUAL_TIMEOUT_S):
        async with one_poller(queue, ONE_POLLER):
            await queue.activity.wait_for(lambda: len(queue.started_at) == 4)
    assert [r.count for r in queue.receives[:3]] == [10, 10, 5]
    assert queue.started_at[:3] == [start] * 3  # no pause after a full receive
    assert queue.started_at[3] == pytest.approx(start + PAUSE_S)  # a pause after 5


async def test_stop_ends_the_pause_at_once(autojump_clock: trio.testing.MockClock) -> None:
    queue = TimedQueue()
    queue.put(body(payload(1)))
    config = with_(ONE_POLLER, short_receive_pause_s=5.0)
    with trio.fail_after(VIRTUAL_TIMEOUT_S):
        async with one_poller(queue, config) as run:
            await queue.activity.wait_for(lambda: len(queue.receives) == 1)
            await trio.sleep(1)  # well into the pause
            stopped_at = trio.current_time()
            run.stop.set()
    assert run.ended_at == stopped_at
    assert len(queue.started_at) == 1  # no receive after stop
    assert len(run.forwarded_at) == 1


async def test_no_pause_when_disabled(autojump_clock: trio.testing.MockClock) -> None:
    queue = TimedQueue()
    queue.put(body(payload(1)))
    with trio.fail_after(VIRTUAL_TIMEOUT_S):
        async with one_poller(queue, with_(ONE_POLLER, short_receive_pause_s=0)):
            await queue.activity.wait_for(lambda: len(queue.started_at) == 2)
    assert queue.receives[0].count == 1
    assert queue.started_at[1] == queue.receives[0].returned_at


# --- the whole consumer under a steady trickle -----------------------------------------


async def test_a_trickle_takes_a_few_messages_a_receive(
    autojump_clock: trio.testing.MockClock,
) -> None:
    queue = TimedQueue()
    config = with_(FAKE, short_receive_pause_s=PAUSE_S)
    with trio.fail_after(VIRTUAL_TIMEOUT_S):
        async with consumer(queue, FakeWarehouse(), config):
            sent = await feed(queue, FEED_S)
            await queue.activity.wait_for(lambda: len(queue.deleted) == len(sent))
    fetching = [r for r in queue.receives if r.count > 0]
    # Each poller's receives that got messages are at least PAUSE_S apart; without the
    # pause every message is a receive of its own (200 here).
    assert len(fetching) <= config.pollers * (FEED_S / PAUSE_S + 1)
    assert sorted(m for m, _ in queue.received_at) == sorted(sent)  # each received once
    # what the pause costs: a message waits at most one pause to be received
    assert max(at - sent[m] for m, at in queue.received_at) <= PAUSE_S + 1e-9


async def test_without_the_pause_a_trickle_takes_one_message_a_receive(
    autojump_clock: trio.testing.MockClock,
) -> None:
    queue = TimedQueue()
    config = with_(FAKE, short_receive_pause_s=0)
    with trio.fail_after(VIRTUAL_TIMEOUT_S):
        async with consumer(queue, FakeWarehouse(), config):
            sent = await feed(queue, FEED_S)
            await queue.activity.wait_for(lambda: len(queue.deleted) == len(sent))
    assert [r.count for r in queue.receives if r.count > 0] == [1] * len(sent)  # as before
    assert all(at == sent[m] for m, at in queue.received_at)  # each received as it came


# --- the setting -------------------------------------------------------------------------


def test_the_setting_reaches_the_consumer(tmp_path: Path) -> None:
    no_dotenv = tmp_path / "none"
    assert consumer_config(config.load({}, no_dotenv)).short_receive_pause_s == PAUSE_S
    off = config.load({"AFPIPE_RECEIVE_PAUSE_MS": "0"}, no_dotenv)
    assert consumer_config(off).short_receive_pause_s == 0
    most = config.load({"AFPIPE_RECEIVE_PAUSE_MS": "5000"}, no_dotenv)
    assert consumer_config(most).short_receive_pause_s == 5.0


@pytest.mark.parametrize(("value", "problem"), [("-1", ">= 0"), ("5001", "<= 5000")])
def test_the_setting_is_bounded(tmp_path: Path, value: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=f"^AFPIPE_RECEIVE_PAUSE_MS='{value}': .*{problem}"):
        config.load({"AFPIPE_RECEIVE_PAUSE_MS": value}, tmp_path / "none")
