"""Reading a webhook request's body from ASGI, bounded three ways.

Per request: at most ``max_body_bytes`` (413 past it), within ``timeout_s`` (408).
All requests together: the bytes held in bodies being read or parsed stay under
one budget (``BodyBudget``), counted chunk by chunk as they arrive; a request
that would pass it is shed (503). What ingest holds in request bodies is thus a
setting, whatever the clients do.

Answers to requests whose body is not read to its end go out with
``respond_then_close``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import trio

# How much of a too-large body is still read (and dropped) so the client sees the 413.
DISCARD_MIN_BYTES = 8 * 1024 * 1024
RETRY_AFTER_OVERLOADED_S = 1
# Longest a refused request's connection stays open, after its answer, for the
# client to finish sending (respond_then_close); it holds no slot and no bytes.
LINGER_S = 1.0
CLOSE = (b"connection", b"close")
_JSON_TYPE = (b"content-type", b"application/json; charset=utf-8")
_encoder = msgspec.json.Encoder()

Scope = dict[str, Any]
Headers = list[tuple[bytes, bytes]]


class Gone(Exception):
    """The client disconnected: there is no one left to answer."""


class Refused(Exception):
    """An answer other than 200; ``reason`` labels afpipe_events_rejected_total."""

    def __init__(
        self, status: int, message: str, headers: Headers | None = None, reason: str = ""
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or []
        self.reason = reason


def overloaded(message: str) -> Refused:
    """503 at once; the connection is closed: the rest of its body stays unread."""
    retry = (b"retry-after", b"%d" % RETRY_AFTER_OVERLOADED_S)
    return Refused(503, f"overloaded: {message}", [retry, CLOSE], "overloaded")


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


async def respond(
    send: Any, status: int, body: dict[str, Any], headers: Headers | None = None
) -> None:
    """Answer a request whose body was read to its end (or that had none)."""
    content = _encoder.encode(body)
    await send(
        {"type": "http.response.start", "status": status, "headers": _head(content, headers)}
    )
    await send({"type": "http.response.body", "body": content})


def _head(content: bytes, headers: Headers | None) -> Headers:
    return [_JSON_TYPE, (b"content-length", b"%d" % len(content)), *(headers or [])]


async def respond_then_close(
    send: Any,
    receive: Any,
    status: int,
    body: dict[str, Any],
    headers: Headers | None = None,
) -> None:
    """Answer a request whose body is not (all) read yet, then close its connection.

    The answer goes out at once and whole (Content-Length), but its end, which
    closes the connection, waits until the client has sent the rest of its body or
    hung up, at most ``LINGER_S`` (what comes is dropped, not kept):
    - when a client hangs up mid-body before an answer has begun, hypercorn sends
      its own 400 from its reading task, and the close that our answer's end makes
      does not wait for that send: the two collide (trio.BusyResourceError) and
      take the whole server down;
    - a close with unread bytes makes the kernel reset the connection, which can
      destroy the answer before the client has read it.
    All along, what the client still sends is read: hypercorn hands the body over
    through a channel of ten chunks and, when the answer ends, queues the
    disconnect notice on it; full, with nobody reading, that send would wait for ever.
    """
    headers = headers or []
    content = _encoder.encode(body)
    head = _head(content, headers if CLOSE in headers else [*headers, CLOSE])
    body_done, hung_up = trio.Event(), trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_drop, receive, body_done, hung_up)
        try:
            await send({"type": "http.response.start", "status": status, "headers": head})
            await send({"type": "http.response.body", "body": content, "more_body": True})
            with trio.move_on_after(LINGER_S):
                await body_done.wait()
            await send({"type": "http.response.body", "body": b""})
        except trio.BusyResourceError:
            # The client hung up as we answered: hypercorn's reading task is closing
            # the connection (without the lock our sends take). Let it finish.
            with trio.move_on_after(LINGER_S):
                await hung_up.wait()
        nursery.cancel_scope.cancel()


async def _drop(receive: Any, body_done: trio.Event, hung_up: trio.Event) -> None:
    """Read and drop the rest of the body; say when it has ended, and when the client left."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            body_done.set()
            hung_up.set()
            return
        if not message.get("more_body", False):
            body_done.set()
