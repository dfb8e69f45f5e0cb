"""Reading a webhook request's body from ASGI, bounded three ways.

Per request: at most ``max_body_bytes`` (413 past it), within ``timeout_s`` (408).
All requests together: the bytes held in bodies being read or parsed stay under
one budget (``BodyBudget``), counted chunk by chunk as they arrive; a request
that would pass it is shed (503). What ingest holds in request bodies is thus a
setting, whatever the clients do.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import trio

from afpipe.http.responses import CLOSE, Refused, overloaded

# How much of a too-large body is still read (and dropped) so the client sees the 413.
DISCARD_MIN_BYTES = 8 * 1024 * 1024

Scope = dict[str, Any]


class Gone(Exception):
    """The client disconnected: there is no one left to answer."""


def header(scope: Scope, name: bytes) -> str | None:
    """A request header (``name`` in lower case); repeated fields are comma-joined."""
    values = [value for key, value in scope["headers"] if key == name]
    if not values:
        return None
    return b", ".join(values).decode("latin-1")


class Claim:
    """The bytes one request holds in the budget."""

    def __init__(self, budget: BodyBudget) -> None:
        self.budget = budget
        self.held_bytes = 0

    def take(self, size_bytes: int) -> bool:
        budget = self.budget
        if budget.held_bytes + size_bytes > budget.limit_bytes:
            return False
        budget.held_bytes += size_bytes
        self.held_bytes += size_bytes
        return True


class BodyBudget:
    """Bytes of request bodies held right now, by all requests together, and their bound."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.held_bytes = 0

    @contextmanager
    def claim(self) -> Iterator[Claim]:
        """What the block takes is given back when it ends."""
        claim = Claim(self)
        try:
            yield claim
        finally:
            self.held_bytes -= claim.held_bytes


async def read_body(
    scope: Scope, receive: Any, claim: Claim, *, max_body_bytes: int, timeout_s: float
) -> bytes:
    """The whole body, at most ``max_body_bytes``, within ``timeout_s``, within the budget.

    Past the limit the rest is read and dropped, up to four times the limit or
    ``DISCARD_MIN_BYTES``, so that an ordinary client sees the 413 rather than a
    reset; beyond that the answer goes out at once and the connection is closed.
    """
    length = header(scope, b"content-length")
    declared = int(length) if length is not None and length.isdigit() else None
    discard_limit = max(max_body_bytes * 4, DISCARD_MIN_BYTES)
    if declared is not None and declared > discard_limit:
        raise too_large(max_body_bytes)
    chunks: list[bytes] = []
    size = 0
    with trio.move_on_after(timeout_s) as timer:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Gone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size <= max_body_bytes:
                if not claim.take(len(chunk)):
                    raise overloaded("too many request bodies being read")
                chunks.append(chunk)
            elif size > discard_limit:
                break
            if not message.get("more_body", False):
                break
    if timer.cancelled_caught:
        raise Refused(408, f"request body not received within {timeout_s:g} s", [CLOSE])
    if size > max_body_bytes:
        raise too_large(max_body_bytes)
    return b"".join(chunks)


def too_large(max_body_bytes: int) -> Refused:
    return Refused(413, f"request body exceeds {max_body_bytes} bytes", [CLOSE], "too_large")


class BodyProgress:
    """Whether a request's body has been read to its end (a request without one: yes)."""

    __slots__ = ("complete",)

    def __init__(self, scope: Scope) -> None:
        length = header(scope, b"content-length")
        chunked = header(scope, b"transfer-encoding") is not None
        self.complete = not chunked and (length is None or length.strip() in ("", "0"))
