"""In-memory fakes of the Queue and Warehouse protocols, for fault injection.

``FakeQueue`` keeps SQS semantics on the *trio* clock (so ``autojump_clock``
drives visibility timeouts), records every call, and notes any moment where a
message held by a consumer became visible again (``expired_while_held``). It is
as strict as SQS behind ``SqsQueue``: characters SQS refuses fail their entry
(the others are sent), a batch over 1 MiB in all fails the call.
``FakeWarehouse`` commits in memory, idempotently on id, through the real
``load_isolating`` so chosen ids are rejected exactly as a real warehouse would.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import msgspec
import trio

from afpipe.aws.sqs_api import REFUSED_CHARACTERS
from afpipe.errors import (
    AfpipeError,
    ConfigError,
    PermanentError,
    RefusedContent,
    TransientError,
)
from afpipe.event import Event
from afpipe.queue.base import (
    MAX_BATCH_ENTRIES,
    DeadLetter,
    EntriesFailed,
    QueueSize,
    ReceivedMessage,
)
from afpipe.queue.embedded import EmbeddedQueue
from afpipe.warehouse.base import LoadResult
from afpipe.warehouse.isolate import load_isolating


class Activity:
    """Lets a test wait for a condition that changes on recorded calls, without polling."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        while not condition():
            await self._event.wait()


class VisibilityCall(msgspec.Struct, frozen=True):
    at_s: float  # trio clock
    handles: list[str]
    timeout_s: int


class DeadLetterCall(msgspec.Struct, frozen=True):
    message_id: str
    reason: str
    body: str


class _Stored:
    def __init__(self, message_id: str, body: str, now: float) -> None:
        self.message_id = message_id
        self.body = body
        self.sent_at_s = now
        self.visible_at = now
        self.receive_count = 0
        self.receipt: str | None = None


class FakeQueue:
    """SQS-like queue in memory; faults are injected through its attributes."""

    name = "fake"

    def __init__(self, *, journal: list[str] | None = None) -> None:
        self.journal = journal if journal is not None else []
        self._messages: dict[str, _Stored] = {}
        self._next_id = 0
        self._changed = trio.Event()
        # recorded calls
        self.send_calls: list[list[str]] = []
        self.deleted: list[str] = []  # message ids
        self.deleted_at: dict[str, float] = {}  # message id -> trio clock
        self.received_at: list[tuple[str, float]] = []  # (message id, trio clock)
        self.visibility_calls: list[VisibilityCall] = []
        self.own_visibility_s = 30  # the queue's own visibility timeout
        self.max_batch_bytes = 1024 * 1024  # SQS: a SendMessageBatch's bodies together
        self.received_visibility: list[int | None] = []  # visibility_s of each receive
        self.dead_letters: list[DeadLetterCall] = []
        self._dead_receives: list[tuple[int, float]] = []  # beside each dead letter
        self.expired_while_held: list[str] = []  # message ids
        # injected faults
        self.send_gate: trio.Event | None = None  # send_batch waits for it when set
        self.send_error: AfpipeError | None = None
        self.receive_errors = 0  # the next N receives raise TransientError
        self.keeps_dead_letters = True
        self.dead_letter_error: AfpipeError | None = None
        self.activity = Activity()  # notified on every receive, delete, visibility change

    # --- test helpers -------------------------------------------------------
    def put(self, body: str, *, receive_count: int = 0, wake: bool = True) -> str:
        """Enqueue ``body`` directly; ``wake=False``: as if sent by another process."""
        self._next_id += 1
        message_id = f"m{self._next_id}"
        stored = _Stored(message_id, body, trio.current_time())
        stored.receive_count = receive_count
        self._messages[message_id] = stored
        if wake:
            self._wake()
        return message_id

    def remaining(self) -> list[str]:
        """Ids of messages still on the queue (visible or not)."""
        return list(self._messages)

    def body_of(self, message_id: str) -> str:
        return self._messages[message_id].body

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _held(self, handle: str) -> _Stored | None:
        for stored in self._messages.values():
            if stored.receipt == handle:
                if trio.current_time() > stored.visible_at:
                    self.expired_while_held.append(stored.message_id)
                return stored
        return None

    # --- Queue protocol -----------------------------------------------------
    async def send_batch(self, bodies: Sequence[str]) -> list[str]:
        assert 0 < len(bodies) <= MAX_BATCH_ENTRIES
        self.send_calls.append(list(bodies))
        if self.send_gate is not None:
            await self.send_gate.wait()
        if self.send_error is not None:
            raise self.send_error
        total_bytes = sum(len(body.encode()) for body in bodies)
        if total_bytes > self.max_batch_bytes:  # as SQS: the whole call fails
            raise PermanentError(
                f"SendMessageBatch: {total_bytes} bytes in all, over {self.max_batch_bytes}",
                code="AWS.SimpleQueueService.BatchRequestTooLong",
            )
        # SQS refuses the whole call for one entry's characters; SqsQueue then sends
        # the others alone and reports each entry's fate: so does this fake.
        refused: dict[int, AfpipeError] = {
            index: RefusedContent(f"entry {index}: InvalidMessageContents")
            for index, body in enumerate(bodies)
            if REFUSED_CHARACTERS.search(body)
        }
        ids = {i: self.put(body) for i, body in enumerate(bodies) if i not in refused}
        if refused:
            raise EntriesFailed("SendMessageBatch", refused, ids)
        return [ids[i] for i in range(len(bodies))]

    async def receive(
        self, *, max_messages: int, wait_s: float, visibility_s: int | None
    ) -> list[ReceivedMessage]:
        self.received_visibility.append(visibility_s)
        if visibility_s is None:
            visibility_s = self.own_visibility_s
        deadline = trio.current_time() + wait_s
        while True:
            if self.receive_errors > 0:
                self.receive_errors -= 1
                await trio.lowlevel.checkpoint()
                raise TransientError("injected receive failure")
            now = trio.current_time()
            visible = [m for m in self._messages.values() if m.visible_at <= now]
            claimed = []
            for stored in visible[:max_messages]:
                stored.receive_count += 1
                stored.receipt = f"{stored.message_id}#{stored.receive_count}"
                stored.visible_at = now + visibility_s
                self.received_at.append((stored.message_id, now))
                claimed.append(
                    ReceivedMessage(
                        stored.message_id,
                        stored.receipt,
                        stored.body,
                        stored.receive_count,
                        stored.sent_at_s,
                    )
                )
            if claimed:
                self.journal.append(f"receive {' '.join(m.message_id for m in claimed)}")
                self.activity.notify()
                await trio.lowlevel.checkpoint()
                return claimed
            if now >= deadline:
                await trio.lowlevel.checkpoint()
                return []
            # Wake on a send or when the next invisible message reappears.
            next_visible = min((m.visible_at for m in self._messages.values()), default=math.inf)
            with trio.move_on_at(min(deadline, next_visible)):
                await self._changed.wait()

    async def delete(self, receipt_handles: Sequence[str]) -> None:
        await trio.lowlevel.checkpoint()
        for handle in receipt_handles:
            stored = self._held(handle)
            if stored is not None:
                del self._messages[stored.message_id]
                self.deleted.append(stored.message_id)
                self.deleted_at[stored.message_id] = trio.current_time()
                self.journal.append(f"delete {stored.message_id}")
        self.activity.notify()

    async def change_visibility(self, receipt_handles: Sequence[str], timeout_s: int) -> None:
        await trio.lowlevel.checkpoint()
        now = trio.current_time()
        self.visibility_calls.append(VisibilityCall(now, list(receipt_handles), timeout_s))
        for handle in receipt_handles:
            stored = self._held(handle)
            if stored is not None:
                stored.visible_at = now + timeout_s
        if timeout_s == 0:
            self._wake()
        self.activity.notify()

    async def dead_letter(self, message: ReceivedMessage, reason: str, body: str) -> bool:
        await trio.lowlevel.checkpoint()
        if self.dead_letter_error is not None:
            raise self.dead_letter_error
        if not self.keeps_dead_letters:
            return False
        self.dead_letters.append(DeadLetterCall(message.message_id, reason, body))
        self._dead_receives.append((message.receive_count, time.time()))
        self.journal.append(f"dead-letter {message.message_id}")
        self.activity.notify()
        return True

    async def peek_dead_letters(self, limit: int) -> list[DeadLetter]:
        await trio.lowlevel.checkpoint()
        if not self.keeps_dead_letters:
            raise ConfigError("AFPIPE_DLQ_URL: not set (fake)")
        kept = zip(self.dead_letters, self._dead_receives, strict=True)
        return [
            DeadLetter(call.message_id, call.body, call.reason, count, at_s, call.message_id)
            for call, (count, at_s) in list(kept)[:limit]
        ]

    async def redrive(self, limit: int) -> int:
        await trio.lowlevel.checkpoint()
        if not self.keeps_dead_letters:
            raise ConfigError("AFPIPE_DLQ_URL: not set (fake)")
        moved, self.dead_letters = self.dead_letters[:limit], self.dead_letters[limit:]
        self._dead_receives = self._dead_receives[limit:]
        for call in moved:
            self.put(call.body)
        return len(moved)

    async def size(self) -> QueueSize:
        await trio.lowlevel.checkpoint()
        now = trio.current_time()
        held = sum(1 for m in self._messages.values() if m.visible_at > now)
        return QueueSize(
            visible=len(self._messages) - held,
            in_flight=held,
            dead_letters=len(self.dead_letters) if self.keeps_dead_letters else None,
        )

    async def ping(self) -> None:
        await trio.lowlevel.checkpoint()

    async def visibility_timeout_s(self) -> int:
        await trio.lowlevel.checkpoint()
        return self.own_visibility_s

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


class FakeWarehouse:
    """Idempotent in-memory warehouse; rejects chosen ids, fails or stalls on demand."""

    def __init__(
        self,
        *,
        reject: Mapping[str, str] | None = None,
        transient_failures: int = 0,
        load_s: float = 0.0,
        journal: list[str] | None = None,
        name: str = "primary",
    ) -> None:
        self.name = name
        self.reject = dict(reject or {})  # event id -> reason
        self.transient_failures = transient_failures
        self.load_s = load_s
        self.gate: trio.Event | None = None  # load waits for it when set
        self.journal = journal if journal is not None else []
        self.rows: dict[str, Event] = {}
        self.batches: list[tuple[float, int]] = []  # (trio clock, events) per load call
        self.load_calls = 0
        self.activity = Activity()  # notified after every load, failed or not

    async def ensure_table(self) -> None:
        await trio.lowlevel.checkpoint()

    async def load(self, events: Sequence[Event]) -> LoadResult:
        self.load_calls += 1
        self.batches.append((trio.current_time(), len(events)))
        if self.load_s:
            await trio.sleep(self.load_s)
        if self.gate is not None:
            await self.gate.wait()
        await trio.lowlevel.checkpoint()
        if self.transient_failures > 0:
            self.transient_failures -= 1
            self.journal.append("load failed")
            self.activity.notify()
            raise TransientError("injected load failure")
        result = await load_isolating(events, self._attempt)
        self.journal.append(f"load {result.loaded}")
        self.activity.notify()
        return result

    async def _attempt(self, events: Sequence[Event]) -> int:
        await trio.lowlevel.checkpoint()
        for event in events:
            if event.id in self.reject:
                raise PermanentError(self.reject[event.id])
        new = {e.id: e for e in events if e.id not in self.rows}
        self.rows.update(new)
        return len(new)

    async def ping(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


class WatchedEmbeddedQueue(EmbeddedQueue):
    """The real embedded queue, telling the test when messages are deleted."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.deleted_handles: list[str] = []
        self.activity = Activity()

    async def delete(self, receipt_handles: Sequence[str]) -> None:
        await super().delete(receipt_handles)
        self.deleted_handles.extend(receipt_handles)
        self.activity.notify()


async def depth(queue: EmbeddedQueue) -> tuple[int, int]:
    """(visible, in flight) messages of an embedded queue."""
    size = await queue.size()
    return size.visible, size.in_flight
