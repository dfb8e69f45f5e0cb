"""Pure batching: whole queue messages gathered until rows, bytes or linger.

A batch only ever holds whole messages, so "delete after commit" is simply
"delete every message of a batch once the batch is committed".

A message marked ``alone`` (received more than AFPIPE_MAX_RECEIVES times, see
``afpipe.pipeline.polling``) is a batch of its own: it joins only an empty batch,
nothing joins it, and it is full at once. If it is what keeps crashing the
process, its load no longer takes other messages' rows down with it.
"""

from __future__ import annotations

import math

import msgspec

from afpipe.event import Event
from afpipe.queue.base import ReceivedMessage


class Held(msgspec.Struct, frozen=True):
    """A received message and its decoded events; ``alone``: load it in a batch of its own."""

    message: ReceivedMessage
    events: list[Event]
    alone: bool = False

    @property
    def size_bytes(self) -> int:
        return len(self.message.body.encode("utf-8"))  # bytes, not characters


class Batch:
    def __init__(self, *, max_rows: int, max_bytes: int, linger_s: float) -> None:
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.linger_s = linger_s
        self.items: list[Held] = []
        self.rows = 0
        self.size_bytes = 0
        self.deadline = math.inf  # when the batch must be flushed (clock of the caller)

    def fits(self, held: Held) -> bool:
        """Whether ``held`` may join this batch (a message loaded alone shares with none)."""
        return not self.items or not (held.alone or self.items[0].alone)

    def add(self, held: Held, now: float) -> None:
        if not self.fits(held):
            raise ValueError("a message loaded alone shares its batch with no other")
        if not self.items:
            self.deadline = now + self.linger_s
        self.items.append(held)
        self.rows += len(held.events)
        self.size_bytes += held.size_bytes

    @property
    def full(self) -> bool:
        if self.items and self.items[0].alone:
            return True
        return self.rows >= self.max_rows or self.size_bytes >= self.max_bytes

    def take(self) -> list[Held]:
        items = self.items
        self.items, self.rows, self.size_bytes, self.deadline = [], 0, 0, math.inf
        return items

    def __bool__(self) -> bool:
        return bool(self.items)


def events_of(items: list[Held]) -> list[Event]:
    """All events of a batch, each id once (a batch may repeat an event)."""
    seen: set[str] = set()
    events = []
    for held in items:
        for event in held.events:
            if event.id not in seen:
                seen.add(event.id)
                events.append(event)
    return events
