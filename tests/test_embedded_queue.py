"""afpipe.queue.embedded: SQS semantics on an SQLite file.

Visibility runs on wall-clock ``time.time()``; the ``wall_clock`` fixture
freezes it so that expiry is stepped by hand, never waited for.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from afpipe import admin, config
from afpipe.queue import embedded
from afpipe.queue.base import ReceivedMessage
from afpipe.queue.embedded import EmbeddedQueue
from tests.fakes import depth
from tests.fixtures.common import WallClock

TIMEOUT_S = 10


async def receive_now(queue: EmbeddedQueue, visibility_s: int = 30) -> list[ReceivedMessage]:
    return await queue.receive(max_messages=10, wait_s=0, visibility_s=visibility_s)


async def test_send_then_receive(embedded_queue: EmbeddedQueue, wall_clock: WallClock) -> None:
    with trio.fail_after(TIMEOUT_S):
        ids = await embedded_queue.send_batch(["a", "b", "c"])
        assert len(set(ids)) == 3
        messages = await receive_now(embedded_queue)
    assert [m.body for m in messages] == ["a", "b", "c"]
    assert [m.message_id for m in messages] == ids
    assert all(m.receive_count == 1 for m in messages)
    assert all(m.sent_at_s == wall_clock.now for m in messages)
    assert len({m.receipt_handle for m in messages}) == 3


async def test_receive_respects_max_messages(
    embedded_queue: EmbeddedQueue, wall_clock: WallClock
) -> None:
    with trio.fail_after(TIMEOUT_S):
        await embedded_queue.send_batch([str(i) for i in range(10)])
        await embedded_queue.send_batch(["10", "11"])
        first = await embedded_queue.receive(max_messages=4, wait_s=0, visibility_s=30)
        rest = await receive_now(embedded_queue)
        none = await receive_now(embedded_queue)
    assert [m.body for m in first] == ["0", "1", "2", "3"]
    assert [m.body for m in rest] == [str(i) for i in range(4, 12)]
    assert none == []


async def test_visibility_timeout_then_redelivery(
    embedded_queue: EmbeddedQueue, wall_clock: WallClock
) -> None:
    with trio.fail_after(TIMEOUT_S):
        await embedded_queue.send_batch(["x"])
        (first,) = await receive_now(embedded_queue, visibility_s=30)
        wall_clock.advance(29.9)
        assert await receive_now(embedded_queue) == []
        assert await depth(embedded_queue) == (0, 1)
        wall_clock.advance(0.1)
        (second,) = await receive_now(embedded_queue)
    assert second.message_id == first.message_id
    assert second.receive_count == 2
    assert second.receipt_handle != first.receipt_handle


async def test_delete_by_handle(embedded_queue: EmbeddedQueue, wall_clock: WallClock) -> None:
    with trio.fail_after(TIMEOUT_S):
        await embedded_queue.send_batch(["keep", "drop"])
        _, drop = await receive_now(embedded_queue, visibility_s=5)
        await embedded_queue.delete([drop.receipt_handle])
        wall_clock.advance(5)
        again = await receive_now(embedded_queue)
    assert [m.body for m in again] == ["keep"]


async def test_stale_handle_neither_deletes_nor_changes_visibility(
    embedded_queue: EmbeddedQueue, wall_clock: WallClock
) -> None:
    with trio.fail_after(TIMEOUT_S):
        await embedded_queue.send_batch(["x"])
        (old,) = await receive_now(embedded_queue, visibility_s=5)
        wall_clock.advance(5)
        (new,) = await receive_now(embedded_queue, visibility_s=5)
        await embedded_queue.delete([old.receipt_handle])  # someone else holds it now
        await embedded_queue.change_visibility([old.receipt_handle], 0)
        assert await receive_now(embedded_queue) == []  # still invisible: new holder's timeout
        wall_clock.advance(5)
        (third,) = await receive_now(embedded_queue, visibility_s=5)
        assert third.receive_count == 3
        await embedded_queue.delete([third.receipt_handle])
        wall_clock.advance(60)
        assert await receive_now(embedded_queue) == []
    assert new.message_id == old.message_id == third.message_id


async def test_change_visibility_extends_and_releases(
    embedded_queue: EmbeddedQueue, wall_clock: WallClock
) -> None:
    with trio.fail_after(TIMEOUT_S):
        await embedded_queue.send_batch(["a", "b"])
        a, _ = await receive_now(embedded_queue, visibility_s=10)
        wall_clock.advance(8)
        await embedded_queue.change_visibility([a.receipt_handle], 30)  # heartbeat
        wall_clock.advance(4)  # b's timeout has passed, a's extended one has not
        assert [m.body for m in await receive_now(embedded_queue, visibility_s=600)] == ["b"]
        wall_clock.advance(25)
        assert await receive_now(embedded_queue) == []  # a: 8 + 30 > 37
        wall_clock.advance(1)
        (a2,) = await receive_now(embedded_queue, visibility_s=100)
        await embedded_queue.change_visibility([a2.receipt_handle], 0)  # release
        (a3,) = await receive_now(embedded_queue)
    assert a2.body == a3.body == "a"
    assert a3.receive_count == 3


async def test_dead_letters_peek_and_redrive(
    embedded_queue: EmbeddedQueue, wall_clock: WallClock
) -> None:
    with trio.fail_after(TIMEOUT_S):
        await embedded_queue.send_batch(["poison-1", "poison-2", "fine"])
        p1, p2, fine = await receive_now(embedded_queue)
        assert await embedded_queue.dead_letter(p1, "undecodable: bad", p1.body) is True
        assert await embedded_queue.dead_letter(p2, "rejected: too long", "part of p2") is True
        # dead_letter never deletes: the caller does, by handle
        await embedded_queue.delete([p1.receipt_handle, p2.receipt_handle, fine.receipt_handle])
        letters = await embedded_queue.peek_dead_letters(10)
        assert [(d.message_id, d.reason, d.body, d.receive_count) for d in letters] == [
            (p1.message_id, "undecodable: bad", "poison-1", 1),
            (p2.message_id, "rejected: too long", "part of p2", 1),
        ]
        assert [d.body for d in await embedded_queue.peek_dead_letters(1)] == ["poison-1"]
        assert await embedded_queue.redrive(1) == 1
        (back,) = await receive_now(embedded_queue)
        assert back.body == "poison-1"
        assert back.receive_count == 1
        assert back.message_id != p1.message_id
        assert [d.body for d in await embedded_queue.peek_dead_letters(10)] == ["part of p2"]
        assert await embedded_queue.redrive(10) == 1
        assert await embedded_queue.peek_dead_letters(10) == []
        assert [m.body for m in await receive_now(embedded_queue)] == ["part of p2"]


async def test_dead_letter_leaves_the_message_on_the_queue(
    embedded_queue: EmbeddedQueue, wall_clock: WallClock
) -> None:
    with trio.fail_after(TIMEOUT_S):
        await embedded_queue.send_batch(["x"])
        (message,) = await receive_now(embedded_queue, visibility_s=1)
        await embedded_queue.dead_letter(message, "why", message.body)
        wall_clock.advance(1)
        assert [m.body for m in await receive_now(embedded_queue)] == ["x"]


async def test_long_poll_wakes_on_an_in_process_send(
    embedded_queue: EmbeddedQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without the in-process wake-up this receive would only see the send after
    # the (now huge) cross-process poll interval, beyond the time limit.
    monkeypatch.setattr(embedded, "CROSS_PROCESS_POLL_S", 3600)
    received: list[ReceivedMessage] = []

    async def poll() -> None:
        received.extend(await embedded_queue.receive(max_messages=10, wait_s=600, visibility_s=30))

    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poll)
            await trio.testing.wait_all_tasks_blocked()
            assert received == []
            await embedded_queue.send_batch(["hello"])
    assert [m.body for m in received] == ["hello"]


async def test_long_poll_wakes_on_a_release(
    embedded_queue: EmbeddedQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedded, "CROSS_PROCESS_POLL_S", 3600)
    with trio.fail_after(TIMEOUT_S):
        await embedded_queue.send_batch(["x"])
        (held,) = await receive_now(embedded_queue, visibility_s=600)
        received: list[ReceivedMessage] = []

        async def poll() -> None:
            received.extend(
                await embedded_queue.receive(max_messages=10, wait_s=600, visibility_s=30)
            )

        async with trio.open_nursery() as nursery:
            nursery.start_soon(poll)
            await trio.testing.wait_all_tasks_blocked()
            await embedded_queue.change_visibility([held.receipt_handle], 0)
    assert [(m.body, m.receive_count) for m in received] == [("x", 2)]


async def test_long_poll_returns_empty_after_wait(
    embedded_queue: EmbeddedQueue, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(60):
        start = trio.current_time()
        messages = await embedded_queue.receive(max_messages=10, wait_s=20, visibility_s=30)
    assert messages == []
    assert trio.current_time() - start >= 20


async def test_two_queue_objects_on_one_file_see_each_other(tmp_path: Path) -> None:
    path = tmp_path / "shared" / "queue.db"
    ingest, consumer = EmbeddedQueue(path), EmbeddedQueue(path)
    try:
        with trio.fail_after(TIMEOUT_S):
            received: list[ReceivedMessage] = []

            async def poll() -> None:
                received.extend(await consumer.receive(max_messages=10, wait_s=5, visibility_s=30))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(poll)
                await trio.testing.wait_all_tasks_blocked()
                (sent_id,) = await ingest.send_batch(["cross"])
            (message,) = received
            assert (message.message_id, message.body) == (sent_id, "cross")
            assert await depth(ingest) == (0, 1)  # the other object sees it in flight
            assert await receive_now(ingest) == []
            await consumer.delete([message.receipt_handle])
            assert await depth(ingest) == (0, 0)
    finally:
        await ingest.aclose()
        await consumer.aclose()


async def test_send_is_durable_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    with trio.fail_after(TIMEOUT_S):
        first = EmbeddedQueue(path)
        await first.send_batch(["kept"])
        await first.aclose()
        second = EmbeddedQueue(path)
        try:
            await second.ping()
            assert [m.body for m in await receive_now(second)] == ["kept"]
        finally:
            await second.aclose()


async def test_afpipe_dlq_peeks_and_redrives_the_embedded_dead_letters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = config.load({"AFPIPE_DATA_DIR": str(tmp_path)}, tmp_path / "none")
    queue = EmbeddedQueue(tmp_path / "queue.db")
    try:
        [message_id] = await queue.send_batch(["poison"])
        [held] = await queue.receive(max_messages=1, wait_s=0, visibility_s=30)
        assert await queue.dead_letter(held, "undecodable: test", held.body)
        await queue.delete([held.receipt_handle])
    finally:
        await queue.aclose()
    assert await admin.dlq_peek(settings, 10) == 0
    shown = capsys.readouterr().out
    assert f"{message_id}  receives=1  reason: undecodable: test" in shown
    assert "1 dead letter(s) shown" in shown
    assert await admin.dlq_redrive(settings, 10) == 0
    assert "redrove 1 message(s)" in capsys.readouterr().out
    queue = EmbeddedQueue(tmp_path / "queue.db")
    try:
        assert await queue.peek_dead_letters(10) == []
        [again] = await queue.receive(max_messages=1, wait_s=0, visibility_s=30)
    finally:
        await queue.aclose()
    assert again.body == "poison"
