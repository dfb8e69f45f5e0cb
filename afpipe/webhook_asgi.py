"""The webhook as a plain ASGI handler: the one hot route skips Quart.

Quart builds an app and a request context, werkzeug ``Headers`` and a
``Response`` object for every request, and routes it through werkzeug's map.
For ``/webhook/appsflyer``, which takes all of the traffic, that was most of
the gap between afpipe and the bare stack (docs/benchmarks.md), so the route
is served here straight from the ASGI scope. Everything else (``/health``,
``/ready``, ``/metrics``, ``/api/hello``, errors) stays on Quart.

The answers are the same as the Quart route gave: the old service's JSON
shapes, 503 + Retry-After when the queue cannot take the events, 413 past
``max_body_bytes``, 408 when the body does not arrive within the body timeout.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import parse_qsl

import msgspec
import trio

from afpipe import metrics
from afpipe.errors import AfpipeError, Overloaded
from afpipe.producer import Producer, wait_ticket
from afpipe.sources import allowed, parse_networks
from afpipe.webhook import (
    BadRequest,
    encode_all,
    payload_from_query,
    payloads_from_json,
    token_matches,
)

log = logging.getLogger("afpipe.ingest")

WEBHOOK = "/webhook/appsflyer"
RETRY_AFTER_OVERLOADED_S = 1
RETRY_AFTER_UNAVAILABLE_S = 5

# How much of a too-large body is still read (and dropped) so the client sees the 413.
DISCARD_MIN_BYTES = 8 * 1024 * 1024
_JSON_TYPE = (b"content-type", b"application/json; charset=utf-8")
_CLOSE = [(b"connection", b"close")]
_encoder = msgspec.json.Encoder()

Scope = dict[str, Any]
Headers = list[tuple[bytes, bytes]]


class IngestConfig:
    def __init__(
        self,
        *,
        max_body_bytes: int,
        max_message_bytes: int,
        enqueue_timeout_s: float,
        token: str = "",
        token_header: str = "Authorization",
        consumer_enabled: bool = True,
        allowed_cidrs: str = "",
        trusted_proxies: str = "",
        max_inflight_requests: int = 128,
        body_timeout_s: float = 30.0,
    ) -> None:
        self.max_inflight_requests = max_inflight_requests
        self.body_timeout_s = body_timeout_s
        self.allowed_networks = parse_networks(allowed_cidrs)
        self.trusted_proxies = parse_networks(trusted_proxies)
        self.max_body_bytes = max_body_bytes
        self.max_message_bytes = max_message_bytes
        self.enqueue_timeout_s = enqueue_timeout_s
        self.token = token
        self.token_header = token_header
        self.consumer_enabled = consumer_enabled


def now_iso() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


class _Gone(Exception):
    """The client disconnected: there is no one left to answer."""


class _Refused(Exception):
    """An answer other than 200, raised out of the request's steps."""

    def __init__(self, status: int, message: str, headers: Headers | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or []


def _header(scope: Scope, name: bytes) -> str | None:
    """A request header (``name`` in lower case); repeated fields are comma-joined."""
    values = [value for key, value in scope["headers"] if key == name]
    if not values:
        return None
    return b", ".join(values).decode("latin-1")


class Webhook:
    """``POST|GET /webhook/appsflyer`` as an ASGI app (``scope["type"] == "http"``)."""

    def __init__(self, producer: Producer, config: IngestConfig) -> None:
        self.producer = producer
        self.config = config
        self.inflight = 0  # requests being handled
        self._token_header = config.token_header.lower().encode("latin-1")

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        try:
            if scope["method"] not in ("POST", "GET"):
                allow = [(b"allow", b"GET, POST")]
                raise _Refused(405, "method not allowed: use POST or GET", allow + _CLOSE)
            # Shed before any work: under CPU overload the producer's own bound is never
            # reached, requests would just queue up in memory and in the kernel.
            if self.inflight >= self.config.max_inflight_requests:
                headers = [(b"retry-after", b"%d" % RETRY_AFTER_OVERLOADED_S)]
                metrics.EVENTS_REJECTED.labels("overloaded").inc()
                if not await self._drain(scope, receive):
                    headers += _CLOSE
                raise _Refused(503, "overloaded: too many requests in flight", headers)
            self.inflight += 1
            try:
                answer = await self._handle(scope, receive)
            finally:
                self.inflight -= 1
        except _Gone:
            return
        except _Refused as refused:
            error = {"success": False, "error": str(refused)}
            await _respond(send, refused.status, error, refused.headers)
            return
        except Exception:  # a bug: answer like a framework would, and say where
            log.exception("webhook failed")
            await _respond(send, 500, {"success": False, "error": "internal error"})
            return
        await _respond(send, 200, answer)

    async def _handle(self, scope: Scope, receive: Any) -> dict[str, Any]:
        config = self.config
        if config.allowed_networks and not self._source_allowed(scope):
            await self._refuse(scope, receive, 403, "forbidden", "source address not allowed")
        if config.token and not token_matches(config.token, _header(scope, self._token_header)):
            await self._refuse(scope, receive, 401, "unauthorized", "missing or invalid token")
        try:
            if scope["method"] == "GET":
                query = scope["query_string"].decode("latin-1")
                pairs = parse_qsl(query, keep_blank_values=True)
                payloads, is_array = [payload_from_query(pairs)], False
            else:
                payloads, is_array = payloads_from_json(await self._body(scope, receive))
            events = encode_all(payloads, config.max_message_bytes)
        except BadRequest as exc:
            reason = "too_large" if exc.status == 413 else "bad_request"
            metrics.EVENTS_REJECTED.labels(reason).inc()
            raise _Refused(exc.status, str(exc)) from None
        try:
            ticket = self.producer.submit(events)
            message_ids = await wait_ticket(ticket, config.enqueue_timeout_s)
        except Overloaded as exc:
            metrics.EVENTS_REJECTED.labels("overloaded").inc()
            retry = [(b"retry-after", b"%d" % RETRY_AFTER_OVERLOADED_S)]
            raise _Refused(503, f"overloaded: {exc}", retry) from None
        except AfpipeError as exc:
            metrics.EVENTS_REJECTED.labels("queue_unavailable").inc()
            retry = [(b"retry-after", b"%d" % RETRY_AFTER_UNAVAILABLE_S)]
            raise _Refused(503, f"queue unavailable: {exc}", retry) from None
        metrics.EVENTS_ACCEPTED.inc(len(events))
        answer: dict[str, Any] = {"success": True, "messageId": message_ids[0]}
        if is_array:
            answer["eventIds"] = [e.id for e in events]
            answer["messageIds"] = message_ids
        else:
            answer["eventId"] = events[0].id
        answer["timestamp"] = now_iso()
        return answer

    def _source_allowed(self, scope: Scope) -> bool:
        peer = scope.get("client") or ("", 0)
        forwarded = _header(scope, b"x-forwarded-for")
        config = self.config
        return allowed(str(peer[0]), forwarded, config.allowed_networks, config.trusted_proxies)

    async def _refuse(
        self, scope: Scope, receive: Any, status: int, reason: str, message: str
    ) -> None:
        """Refuse before any work, counted by ``reason``; the connection is closed."""
        metrics.EVENTS_REJECTED.labels(reason).inc()
        await self._drain(scope, receive)
        raise _Refused(status, message, _CLOSE)

    async def _drain(self, scope: Scope, receive: Any) -> bool:
        """Read and drop the body: replying mid-upload would leave a keep-alive
        connection with unread bytes in front of the next request. False if the
        body was too large or too slow to read: then close the connection."""
        try:
            await self._body(scope, receive, count=False)
        except _Refused:
            return False
        return True

    async def _body(self, scope: Scope, receive: Any, *, count: bool = True) -> bytes:
        """The whole body, at most ``max_body_bytes``, within ``body_timeout_s``.

        Past the limit the rest is read and dropped, up to four times the limit or
        ``DISCARD_MIN_BYTES``, so that an ordinary client sees the 413 rather than a
        reset; beyond that the answer goes out at once and the connection is closed.
        """
        limit = self.config.max_body_bytes
        length = _header(scope, b"content-length")
        declared = int(length) if length is not None and length.isdigit() else None
        discard_limit = max(limit * 4, DISCARD_MIN_BYTES)
        if declared is not None and declared > discard_limit:
            raise self._too_large(count)
        chunks: list[bytes] = []
        size = 0
        timeout_s = self.config.body_timeout_s
        with trio.move_on_after(timeout_s) as timer:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _Gone
                chunk = message.get("body", b"")
                size += len(chunk)
                if size <= limit:
                    chunks.append(chunk)
                elif size > discard_limit:
                    break
                if not message.get("more_body", False):
                    break
        if timer.cancelled_caught:
            raise _Refused(408, f"request body not received within {timeout_s:g} s", _CLOSE)
        if size > limit:
            raise self._too_large(count)
        return b"".join(chunks)

    def _too_large(self, count: bool) -> _Refused:
        if count:
            metrics.EVENTS_REJECTED.labels("too_large").inc()
        limit = self.config.max_body_bytes
        return _Refused(413, f"request body exceeds {limit} bytes", list(_CLOSE))


async def _respond(
    send: Any, status: int, body: dict[str, Any], headers: Headers | None = None
) -> None:
    content = _encoder.encode(body)
    head = [_JSON_TYPE, (b"content-length", b"%d" % len(content)), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": content})
