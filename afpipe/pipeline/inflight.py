"""Messages we hold: visibility heartbeats while held, release on drain."""

from __future__ import annotations

import logging
import time

import trio

from afpipe import drain
from afpipe.errors import AfpipeError
from afpipe.pipeline.accounting import Ledger
from afpipe.pipeline.config import backoff_s
from afpipe.queue.base import EntriesFailed, Queue, ReceivedMessage

log = logging.getLogger("afpipe.pipeline")

# A heartbeat every quarter of the timeout needs a timeout of a few seconds at least.
MIN_VISIBILITY_S = 2


class InFlight:
    """Receipt handle -> when its visibility was last set (trio clock); and the
    ``ledger`` in which the events of the messages held are settled."""

    def __init__(self, ledger: Ledger | None = None) -> None:
        self.ledger = ledger or Ledger()
        self._since: dict[str, float] = {}
        self._sent_at_s: dict[str, float] = {}  # wall clock, for the lag metric
        self._events: dict[str, int] = {}  # events of the messages decoded

    def add(self, message: ReceivedMessage) -> None:
        self._since[message.receipt_handle] = trio.current_time()
        self._sent_at_s[message.receipt_handle] = message.sent_at_s

    def hold(self, handle: str, events: int) -> None:
        """The message ``handle`` decoded to ``events`` events."""
        if handle in self._since:
            self._events[handle] = events

    def remove(self, handles: list[str]) -> None:
        for handle in handles:
            self._since.pop(handle, None)
            self._sent_at_s.pop(handle, None)
            self._events.pop(handle, None)

    def events_held(self) -> int:
        return sum(self._events.values())

    def lag_s(self) -> float:
        """Age of the oldest message held (sent, not yet loaded and deleted)."""
        if not self._sent_at_s:
            return 0.0
        return max(0.0, time.time() - min(self._sent_at_s.values()))

    def __len__(self) -> int:
        return len(self._since)

    def due(self, now: float, after_s: float) -> list[str]:
        return [h for h, since in self._since.items() if now - since >= after_s]

    def touch(self, handles: list[str], now: float) -> None:
        for handle in handles:
            if handle in self._since:
                self._since[handle] = now

    def handles(self) -> list[str]:
        return list(self._since)


async def heartbeat(queue: Queue, inflight: InFlight, visibility_s: int | None) -> None:
    """Extend every message held for half its visibility timeout, until cancelled.

    ``visibility_s`` None: the queue's own timeout, read from the queue (retried
    until it answers), so that after a crash what was held comes back as soon
    as the queue's own setting says, not after a longer timeout of afpipe's."""
    if visibility_s is None:
        visibility_s = await _queue_visibility_s(queue)
    half_s = visibility_s / 2
    while True:
        await trio.sleep(half_s / 2)
        now = trio.current_time()
        due = inflight.due(now, half_s)
        if not due:
            continue
        try:
            await queue.change_visibility(due, visibility_s)
        except EntriesFailed as exc:
            # The others were extended: only the failed ones are due again next beat.
            log.warning("visibility heartbeat failed for some messages", extra={"error": str(exc)})
            inflight.touch([h for i, h in enumerate(due) if i not in exc.failed], now)
            continue
        except AfpipeError as exc:
            log.warning("visibility heartbeat failed", extra={"error": str(exc)})
            continue
        inflight.touch(due, now)


async def _queue_visibility_s(queue: Queue) -> int:
    attempt = 0
    while True:
        try:
            return max(MIN_VISIBILITY_S, await queue.visibility_timeout_s())
        except AfpipeError as exc:
            attempt += 1
            log.warning("reading the queue's visibility timeout failed", extra={"error": str(exc)})
            await trio.sleep(backoff_s(attempt))


async def release(queue: Queue, inflight: InFlight, timeout_s: float) -> None:
    """Make every message still held visible again at once (drain)."""
    handles = inflight.handles()
    if not handles:
        return
    with drain.cleanup_scope(timeout_s, last=True):
        try:
            await queue.change_visibility(handles, 0)
            inflight.remove(handles)
            log.info("released messages", extra={"messages": len(handles)})
        except AfpipeError as exc:
            log.warning("release failed", extra={"error": str(exc)})
