"""afpipe.pipeline.consumer: queue -> warehouse, delete after commit, dead letters, drain.

The first tests run the real embedded queue and warehouse (files in tmp_path,
real clock, short waits). Where a fault must be injected or time matters, a
fake queue and warehouse on the trio clock run under ``autojump_clock``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing
from prometheus_client import REGISTRY

from afpipe.codec import decode_body, encode_body, encode_event
from afpipe.errors import TransientError
from afpipe.health import Health
from afpipe.pipeline.config import ConsumerConfig
from afpipe.pipeline.consumer import serve_consumer
from afpipe.queue.base import Queue
from afpipe.warehouse.base import Warehouse
from afpipe.warehouse.embedded import EmbeddedWarehouse
from tests.events import from_payload
from tests.fakes import FakeQueue, FakeWarehouse, WatchedEmbeddedQueue, depth

TIMEOUT_S = 10  # real clock
VIRTUAL_TIMEOUT_S = 3600  # autojump clock

REAL = ConsumerConfig(
    pollers=2, writers=2, batch_linger_s=0.01, visibility_s=30, empty_receive_pause_s=0.01
)
FAKE = ConsumerConfig(pollers=2, writers=2, batch_linger_s=0.5, visibility_s=30)


def payload(n: int, **extra: Any) -> dict[str, Any]:
    return {"event_name": "install", "app_id": "com.example", "n": n, **extra}


def body(*payloads: dict[str, Any]) -> str:
    return encode_body([encode_event(p) for p in payloads])


def with_(config: ConsumerConfig, **changes: Any) -> ConsumerConfig:
    return msgspec.structs.replace(config, **changes)


def deleted_count(queue: WatchedEmbeddedQueue, count: int) -> Callable[[], bool]:
    return lambda: len(queue.deleted_handles) == count


@asynccontextmanager
async def consumer(
    queue: Queue,
    warehouse: Warehouse,
    config: ConsumerConfig,
    health: Health | None = None,
) -> AsyncIterator[trio.Event]:
    """Run serve_consumer; on exit set ``stop`` and wait for the drain to finish."""
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(
            serve_consumer, queue, warehouse, config, stop, health or Health(fail_after_s=60)
        )
        yield stop
        stop.set()


@pytest.fixture
async def watched_queue(tmp_path: Path) -> AsyncIterator[WatchedEmbeddedQueue]:
    queue = WatchedEmbeddedQueue(tmp_path / "queue.db")
    try:
        yield queue
    finally:
        await queue.aclose()


# --- real embedded queue and warehouse ------------------------------------------------


async def test_queued_events_become_rows_and_messages_are_deleted(
    watched_queue: WatchedEmbeddedQueue, embedded_warehouse: EmbeddedWarehouse
) -> None:
    bodies = [
        body(payload(1), payload(2)),
        body(payload(3)),
        body(payload(2), payload(4)),  # a repeated event: still one row
    ]
    with trio.fail_after(TIMEOUT_S):
        await watched_queue.send_batch(bodies)
        async with consumer(watched_queue, embedded_warehouse, REAL):
            await watched_queue.activity.wait_for(lambda: len(watched_queue.deleted_handles) == 3)
        assert await embedded_warehouse.count() == 4
        assert await depth(watched_queue) == (0, 0)
        assert await watched_queue.peek_dead_letters(10) == []


async def test_events_sent_while_running_are_loaded(
    watched_queue: WatchedEmbeddedQueue, embedded_warehouse: EmbeddedWarehouse
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with consumer(watched_queue, embedded_warehouse, REAL):
            for n in range(3):
                await watched_queue.send_batch([body(payload(n))])
                await watched_queue.activity.wait_for(deleted_count(watched_queue, n + 1))
                assert await embedded_warehouse.count() == n + 1  # deleted only after commit
        assert await depth(watched_queue) == (0, 0)


async def test_poison_message_is_dead_lettered_and_the_others_load(
    watched_queue: WatchedEmbeddedQueue, embedded_warehouse: EmbeddedWarehouse
) -> None:
    old_service = {"event_name": "af_purchase", "app_id": "id1", "appsflyer_id": "a-1"}
    with trio.fail_after(TIMEOUT_S):
        await watched_queue.send_batch(
            [body(payload(1)), "{this is not json", body(payload(2)), json.dumps(old_service)]
        )
        async with consumer(watched_queue, embedded_warehouse, REAL):
            await watched_queue.activity.wait_for(lambda: len(watched_queue.deleted_handles) == 4)
        (letter,) = await watched_queue.peek_dead_letters(10)
        assert letter.body == "{this is not json"
        assert letter.reason.startswith("undecodable: body is not valid JSON")
        assert await embedded_warehouse.count() == 3  # two events and the bare old-service one
        assert (await embedded_warehouse.load([from_payload(old_service)])).loaded == 0
        assert await depth(watched_queue) == (0, 0)


async def test_message_received_more_than_twice_max_receives_is_dead_lettered(
    watched_queue: WatchedEmbeddedQueue, embedded_warehouse: EmbeddedWarehouse
) -> None:
    # Past max_receives a message is loaded alone (tests/test_receive_limit.py);
    # past twice that it is taken for what kills the process.
    worn = body(payload(1))
    with trio.fail_after(TIMEOUT_S):
        await watched_queue.send_batch([worn])
        for _ in range(6):  # six earlier receives that never finished
            await watched_queue.receive(max_messages=1, wait_s=0, visibility_s=0)
        async with consumer(watched_queue, embedded_warehouse, with_(REAL, max_receives=3)):
            await watched_queue.activity.wait_for(lambda: len(watched_queue.deleted_handles) == 1)
        (letter,) = await watched_queue.peek_dead_letters(10)
        assert (letter.body, letter.receive_count) == (worn, 7)
        assert letter.reason == (
            "received 7 times, more than twice AFPIPE_MAX_RECEIVES (3):"
            " tried alone since receive 4, never committed"
        )
        assert await embedded_warehouse.count() == 0
        assert await depth(watched_queue) == (0, 0)


# --- fakes, for injected faults and time ----------------------------------------------


async def test_rejected_events_are_dead_lettered_and_the_rest_commit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bad = payload(2, note="x" * 70_000)
    bad_id = from_payload(bad).id
    queue = FakeQueue()
    warehouse = FakeWarehouse(reject={bad_id: "value too long for type varchar(65535)"})
    mixed = queue.put(body(payload(1), bad, payload(3)))
    clean = queue.put(body(payload(4)))
    with trio.fail_after(VIRTUAL_TIMEOUT_S):
        async with consumer(queue, warehouse, FAKE):
            await queue.activity.wait_for(lambda: len(queue.deleted) == 2)
    assert sorted(queue.deleted) == sorted([mixed, clean])
    assert set(warehouse.rows) == {from_payload(payload(n)).id for n in (1, 3, 4)}
    (letter,) = queue.dead_letters
    assert letter.message_id == mixed
    assert letter.reason == "rejected by warehouse: value too long for type varchar(65535)"
    assert [e.payload for e in decode_body(letter.body)] == [bad]  # only the rejected event
    # dead-lettered before its message was deleted
    assert queue.journal.index(f"dead-letter {mixed}") < queue.journal.index(f"delete {mixed}")


async def test_rejects_with_no_dead_letter_home_leave_the_message_to_the_queue(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bad = payload(2)
    queue = FakeQueue()
    queue.name = "kept-back"  # its own accounting (the counters are process-wide)
    queue.keeps_dead_letters = False  # SQS without a DLQ
    warehouse = FakeWarehouse(reject={from_payload(bad).id: "refused"})
    mixed = queue.put(body(payload(1), bad))
    clean = queue.put(body(payload(3)))
    config = with_(FAKE, visibility_s=10)
    with trio.fail_after(VIRTUAL_TIMEOUT_S):
        async with consumer(queue, warehouse, config):
            await queue.activity.wait_for(lambda: clean in queue.deleted)
            # not deleted and no longer heartbeated: it comes back for the redrive policy
            await queue.activity.wait_for(
                lambda: [m for m, _ in queue.received_at].count(mixed) >= 3
            )
    assert mixed not in queue.deleted
    assert set(warehouse.rows) == {from_payload(payload(n)).id for n in (1, 3)}
    # Nothing of it left the queue, not even the event that loaded: not settled.
    settled = "afpipe_events_settled_total"
    for outcome, count in (("loaded", 1), ("dead_lettered", 0)):  # clean's event only
        labels = {"queue": queue.name, "target": "primary", "outcome": outcome}
        assert REGISTRY.get_sample_value(settled, labels) == count
    again = REGISTRY.get_sample_value("afpipe_messages_received_again_total", {"queue": queue.name})
    assert again is not None and again >= 2


@pytest.mark.parametrize(
    "fault", ["nowhere", "error"], ids=["no-dead-letter-home", "dead-letter-fails"]
)
async def test_poison_that_cannot_be_dead_lettered_is_not_held_forever(
    autojump_clock: trio.testing.MockClock, fault: str
) -> None:
    queue = FakeQueue()
    if fault == "nowhere":
        queue.keeps_dead_letters = False
    else:
        queue.dead_letter_error = TransientError("dlq unavailable")
    warehouse = FakeWarehouse()
    poison = queue.put("\x00garbage")
    good = queue.put(body(payload(1)))
    with trio.fail_after(VIRTUAL_TIMEOUT_S):
        async with consumer(queue, warehouse, with_(FAKE, visibility_s=10)):
            await queue.activity.wait_for(lambda: good in queue.deleted)
            await queue.activity.wait_for(
                lambda: [m for m, _ in queue.received_at].count(poison) >= 3
            )
    assert poison not in queue.deleted
    assert queue.dead_letters == []
    assert list(warehouse.rows) == [from_payload(payload(1)).id]


async def test_transient_load_failures_are_retried_and_nothing_is_deleted_before_commit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal: list[str] = []
    queue = FakeQueue(journal=journal)
    warehouse = FakeWarehouse(transient_failures=10**6, journal=journal)
    health = Health(fail_after_s=10)
    health.serving = True
    first, second = queue.put(body(payload(1))), queue.put(body(payload(2), payload(3)))
    with trio.fail_after(VIRTUAL_TIMEOUT_S):
        async with consumer(queue, warehouse, with_(FAKE, visibility_s=20), health):
            await warehouse.activity.wait_for(lambda: warehouse.load_calls >= 4)
            await trio.sleep(60)
            assert health.failing() == ["primary"]
            assert health.ready() == (True, "ready")  # ingest needs only the queue
            assert queue.deleted == []
            assert queue.expired_while_held == []  # still held while retrying
            warehouse.transient_failures = 0
            await queue.activity.wait_for(lambda: len(queue.deleted) == 2)
            assert health.failing() == []
    assert sorted(queue.deleted) == sorted([first, second])
    assert len(warehouse.rows) == 3
    first_delete = next(i for i, entry in enumerate(journal) if entry.startswith("delete"))
    first_commit = next(i for i, entry in enumerate(journal) if entry.startswith("load "))
    assert first_commit < first_delete
    assert journal.count("load failed") >= 4
    assert all(not e.startswith("delete") for e in journal[:first_commit])
    assert all(count == 1 for _, count in _receive_counts(queue).items())


def _receive_counts(queue: FakeQueue) -> dict[str, int]:
    counts: dict[str, int] = {}
    for message_id, _ in queue.received_at:
        counts[message_id] = counts.get(message_id, 0) + 1
    return counts


async def test_heartbeat_keeps_a_slow_load_invisible(
    autojump_clock: trio.testing.MockClock,
) -> None:
    visibility_s = 10
    queue = FakeQueue()
    warehouse = FakeWarehouse(load_s=95)  # far past the visibility timeout
    message_id = queue.put(body(payload(1)))
    with trio.fail_after(VIRTUAL_TIMEOUT_S):
        async with consumer(queue, warehouse, with_(FAKE, visibility_s=visibility_s)):
            await queue.activity.wait_for(lambda: queue.deleted == [message_id])
    ((_, received_at),) = queue.received_at  # received once: never visible again
    handle = f"{message_id}#1"
    extended_at = [c.at_s for c in queue.visibility_calls if handle in c.handles]
    assert all(c.timeout_s == visibility_s for c in queue.visibility_calls)
    timeline = [received_at, *extended_at, queue.deleted_at[message_id]]
    assert timeline[-1] - timeline[0] >= 95
    # every extension (and the delete) came before the visibility then in force ran out
    assert all(later - earlier < visibility_s for earlier, later in itertools.pairwise(timeline))
    assert queue.expired_while_held == []


async def test_writers_flush_at_linger_or_rows(autojump_clock: trio.testing.MockClock) -> None:
    queue = FakeQueue()
    warehouse = FakeWarehouse()
    config = ConsumerConfig(pollers=1, writers=1, batch_linger_s=5, batch_max_rows=4)
    start = trio.current_time()
    for n in range(3):
        queue.put(body(payload(n), payload(100 + n)))  # 2 events each
    with trio.fail_after(VIRTUAL_TIMEOUT_S):
        async with consumer(queue, warehouse, config):
            await queue.activity.wait_for(lambda: len(queue.deleted) == 3)
    (full_at, full), (lingered_at, lingered) = warehouse.batches
    assert (full, lingered) == (4, 2)
    assert full_at - start < 1  # full: at once
    assert lingered_at - start == pytest.approx(5)  # the rest after the linger


async def test_drain_writes_what_was_received_and_deletes_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    queue = FakeQueue()
    warehouse = FakeWarehouse()
    config = with_(FAKE, batch_linger_s=300)  # only the drain flushes these batches
    early = [queue.put(body(payload(n))) for n in range(3)]
    with trio.fail_after(VIRTUAL_TIMEOUT_S):
        async with consumer(queue, warehouse, config) as stop:
            await queue.activity.wait_for(lambda: len(queue.received_at) == 3)
            await trio.testing.wait_all_tasks_blocked()
            assert warehouse.load_calls == 0  # batches are lingering
            # the producer's last flush, from another process: no wake-up for the pollers
            late = queue.put(body(payload(9)), wake=False)
            stopped_at = trio.current_time()
            stop.set()
        drained_s = trio.current_time() - stopped_at
    assert drained_s < 1  # not waiting for the linger
    assert sorted(queue.deleted) == sorted([*early, late])
    assert set(warehouse.rows) == {from_payload(payload(n)).id for n in (0, 1, 2, 9)}
    assert queue.remaining() == []
    assert all(c.timeout_s != 0 for c in queue.visibility_calls)  # nothing left to release


async def test_drain_deadline_releases_what_is_still_held(
    autojump_clock: trio.testing.MockClock,
) -> None:
    queue = FakeQueue()
    warehouse = FakeWarehouse()
    warehouse.gate = trio.Event()  # the warehouse never answers
    held = [queue.put(body(payload(n))) for n in range(3)]
    stop = trio.Event()
    with trio.fail_after(VIRTUAL_TIMEOUT_S):
        with trio.CancelScope() as deadline:  # the app's drain deadline
            async with trio.open_nursery() as nursery:
                await nursery.start(serve_consumer, queue, warehouse, FAKE, stop, Health(60))
                await queue.activity.wait_for(lambda: len(queue.received_at) == 3)
                stop.set()
                deadline.deadline = trio.current_time() + 5
        assert deadline.cancelled_caught
        (released,) = [c for c in queue.visibility_calls if c.timeout_s == 0]
        assert sorted(released.handles) == sorted(f"{m}#1" for m in held)
        assert queue.deleted == []
        assert warehouse.rows == {}
        again = await queue.receive(max_messages=10, wait_s=0, visibility_s=30)
    assert sorted(m.message_id for m in again) == sorted(held)  # visible at once


async def test_queue_failures_are_reported_to_health_and_retried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    queue = FakeQueue()
    queue.receive_errors = 10**6
    warehouse = FakeWarehouse()
    health = Health(fail_after_s=5)
    health.serving = True  # as the app sets it once started
    with trio.fail_after(VIRTUAL_TIMEOUT_S):
        async with consumer(queue, warehouse, FAKE, health):
            await trio.sleep(30)
            assert health.failing() == ["queue"]
            assert health.ready() == (False, "failing: queue")
            queue.receive_errors = 0
            message_id = queue.put(body(payload(1)))
            await queue.activity.wait_for(lambda: queue.deleted == [message_id])
            assert health.ready() == (True, "ready")


async def test_stop_ends_an_idle_consumer_promptly(autojump_clock: trio.testing.MockClock) -> None:
    queue = FakeQueue()
    with trio.fail_after(VIRTUAL_TIMEOUT_S):
        async with consumer(queue, FakeWarehouse(), FAKE) as stop:
            await trio.sleep(7)  # pollers are in a long poll
            stopped_at = trio.current_time()
            stop.set()
    assert trio.current_time() - stopped_at < 1


async def test_a_crashing_warehouse_is_not_swallowed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Broken(FakeWarehouse):
        async def load(self, events: Any) -> Any:
            raise RuntimeError("bug")

    queue = FakeQueue()
    queue.put(body(payload(1)))
    with (
        trio.fail_after(VIRTUAL_TIMEOUT_S),
        pytest.RaisesGroup(pytest.RaisesExc(RuntimeError, match="bug"), flatten_subgroups=True),
    ):
        async with consumer(queue, Broken(), FAKE):
            await trio.sleep_forever()
    assert queue.deleted == []
    assert [c.timeout_s for c in queue.visibility_calls] == [0]  # released on the way out


class _DeleteOnly:
    """Just enough of a queue for the writers' delete step."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls = 0

    async def delete(self, receipt_handles: Sequence[str]) -> None:
        self.calls += 1
        await trio.lowlevel.checkpoint()
        raise self.error


async def test_delete_retries_transient_failures_but_not_permanent_ones(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from afpipe.errors import PermanentError
    from afpipe.pipeline import writing

    refused = _DeleteOnly(PermanentError("ReceiptHandleIsInvalid"))
    start = trio.current_time()
    await writing._delete(refused, ["h1"])  # type: ignore[arg-type]
    assert refused.calls == 1 and trio.current_time() == start

    flaky = _DeleteOnly(TransientError("throttled"))
    await writing._delete(flaky, ["h1"])  # type: ignore[arg-type]
    assert flaky.calls == 3  # bounded: the messages come back and dedupe
