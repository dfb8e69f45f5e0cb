"""JSON answers in the old service's shapes, and sending them over ASGI.

``error_answer`` is the one error writer: ``{"success": false, "error": ...}``
with its headers, for the webhook's ASGI handler and the Quart routes alike.
``json_answer`` encodes any JSON answer the same way. An ``Answer`` is the
status, the headers (content type and length first) and the body, ready to send.

Answers to requests whose body is not read to its end go out with
``respond_then_close``.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import msgspec
import trio

RETRY_AFTER_OVERLOADED_S = 1
# Longest a refused request's connection stays open, after its answer, for the
# client to finish sending (respond_then_close); it holds no slot and no bytes.
LINGER_S = 1.0
CLOSE = (b"connection", b"close")
JSON_TYPE = b"application/json; charset=utf-8"
_encoder = msgspec.json.Encoder()

Headers = list[tuple[bytes, bytes]]


class Answer(NamedTuple):
    status: int
    headers: Headers
    body: bytes


def json_answer(status: int, body: dict[str, Any], headers: Headers | None = None) -> Answer:
    content = _encoder.encode(body)
    head = [(b"content-type", JSON_TYPE), (b"content-length", b"%d" % len(content))]
    return Answer(status, [*head, *(headers or [])], content)


def error_answer(status: int, message: str, headers: Headers | None = None) -> Answer:
    return json_answer(status, {"success": False, "error": message}, headers)


class Refused(Exception):
    """An answer other than 200; ``reason`` labels afpipe_events_rejected_total."""

    def __init__(
        self, status: int, message: str, headers: Headers | None = None, reason: str = ""
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or []
        self.reason = reason

    def answer(self) -> Answer:
        return error_answer(self.status, str(self), self.headers)


def overloaded(message: str) -> Refused:
    """503 at once; the connection is closed: the rest of its body stays unread."""
    retry = (b"retry-after", b"%d" % RETRY_AFTER_OVERLOADED_S)
    return Refused(503, f"overloaded: {message}", [retry, CLOSE], "overloaded")


def now_iso() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


async def respond(send: Any, answer: Answer) -> None:
    """Answer a request whose body was read to its end (or that had none)."""
    start = {"type": "http.response.start", "status": answer.status, "headers": answer.headers}
    await send(start)
    await send({"type": "http.response.body", "body": answer.body})


async def respond_then_close(send: Any, receive: Any, answer: Answer) -> None:
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
    head = answer.headers if CLOSE in answer.headers else [*answer.headers, CLOSE]
    body_done, hung_up = trio.Event(), trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_drop, receive, body_done, hung_up)
        try:
            await send({"type": "http.response.start", "status": answer.status, "headers": head})
            await send({"type": "http.response.body", "body": answer.body, "more_body": True})
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
