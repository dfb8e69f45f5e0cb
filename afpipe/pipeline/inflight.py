"""Messages we hold: visibility heartbeats while held, release on drain."""

from __future__ import annotations

import logging
import time

import trio

from afpipe.errors import AfpipeError
from afpipe.queue.base import Queue, ReceivedMessage

log = logging.getLogger("afpipe.pipeline")


class InFlight:
    """Receipt handle -> when its visibility was last set (trio clock)."""

    def __init__(self) -> None:
        self._since: dict[str, float] = {}
        self._sent_at_s: dict[str, float] = {}  # wall clock, for the lag metric

    def add(self, message: ReceivedMessage) -> None:
        self._since[message.receipt_handle] = trio.current_time()
        self._sent_at_s[message.receipt_handle] = message.sent_at_s

    def remove(self, handles: list[str]) -> None:
        for handle in handles:
            self._since.pop(handle, None)
            self._sent_at_s.pop(handle, None)

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


async def heartbeat(queue: Queue, inflight: InFlight, visibility_s: int) -> None:
    """Extend every message held for half its visibility timeout, until cancelled."""
    half_s = visibility_s / 2
    while True:
        await trio.sleep(half_s / 2)
        now = trio.current_time()
        due = inflight.due(now, half_s)
        if not due:
            continue
        try:
            await queue.change_visibility(due, visibility_s)
        except AfpipeError as exc:
            log.warning("visibility heartbeat failed", extra={"error": str(exc)})
            continue
        inflight.touch(due, now)


async def release(queue: Queue, inflight: InFlight, timeout_s: float) -> None:
    """Make every message still held visible again at once (drain)."""
    handles = inflight.handles()
    if not handles:
        return
    with trio.CancelScope(shield=True), trio.move_on_after(timeout_s):
        try:
            await queue.change_visibility(handles, 0)
            inflight.remove(handles)
            log.info("released messages", extra={"messages": len(handles)})
        except AfpipeError as exc:
            log.warning("release failed", extra={"error": str(exc)})
