"""The webhook as a plain ASGI handler: the one hot route skips Quart.

Quart builds an app and a request context, werkzeug ``Headers`` and a
``Response`` object for every request, and routes it through werkzeug's map.
For ``/webhook/appsflyer``, which takes all of the traffic, that was most of
the gap between afpipe and the bare stack (docs/benchmarks.md), so the route
is served here straight from the ASGI scope. Everything else (``/health``,
``/ready``, ``/metrics``, ``/api/hello``, errors) stays on Quart (``app``).

The answers are the same as the Quart route gave: the old service's JSON
shapes, 503 + Retry-After when the queue cannot take the events, 413 past
``max_body_bytes``, 408 when the body does not arrive within the body timeout.

Refused requests never take capacity from good ones: a wrong method, a source
outside the allow-list, a missing token and a full house are all decided from
the request's head, answered at once without reading the body, and the
connection is closed; only admitted requests count against
``max_inflight_requests`` (``RequestsInFlight.admitted``) and read bodies
(``body``'s budget).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qsl

from afpipe import metrics
from afpipe.codec import EncodedEvent
from afpipe.errors import AfpipeError, Overloaded, RefusedContent
from afpipe.http.body import BodyBudget, BodyProgress, Gone, Scope, header, read_body
from afpipe.http.config import IngestConfig
from afpipe.http.inflight import RequestsInFlight
from afpipe.http.payloads import (
    BadRequest,
    encode_all,
    payload_from_query,
    payloads_from_json,
    token_matches,
)
from afpipe.http.responses import (
    CLOSE,
    Answer,
    Refused,
    error_answer,
    json_answer,
    now_iso,
    overloaded,
    respond,
    respond_then_close,
)
from afpipe.http.routes import ROUTES, WEBHOOK, allow
from afpipe.producer import Producer, pending_cost_bytes, wait_ticket
from afpipe.sources import allowed

log = logging.getLogger("afpipe.ingest")

RETRY_AFTER_UNAVAILABLE_S = 5
_METHODS = ROUTES[WEBHOOK]
_ALLOW = (b"allow", allow(WEBHOOK).encode("ascii"))


# What the webhook answers and why it refuses: every count exported at 0 from the
# start, or a rate would miss the first refusal after a (re)start (the series would
# appear at 1, with nothing before it to rise from).
ANSWERS = (200, 400, 401, 403, 405, 408, 413, 500, 503)
REASONS = (
    "bad_request",
    "forbidden",
    "overloaded",
    "queue_unavailable",
    "too_large",
    "unauthorized",
)


def _export_counts() -> None:
    for status in ANSWERS:
        metrics.HTTP_REQUESTS.labels(WEBHOOK, str(status))
    for reason in REASONS:
        metrics.EVENTS_REJECTED.labels(reason)


class Webhook:
    """``POST|GET /webhook/appsflyer`` as an ASGI app (``scope["type"] == "http"``)."""

    def __init__(
        self, producer: Producer, config: IngestConfig, in_flight: RequestsInFlight
    ) -> None:
        self.producer = producer
        self.config = config
        self.in_flight = in_flight
        self.bodies = BodyBudget(config.max_body_buffer_bytes)
        self._token_header = config.token_header.lower().encode("latin-1")
        _export_counts()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        body = BodyProgress(scope)
        try:
            answer = await self._answer(scope, receive, body)
        except Gone:
            return
        if body.complete:
            await respond(send, answer)
        else:
            await respond_then_close(send, receive, answer)

    async def _answer(self, scope: Scope, receive: Any, body: BodyProgress) -> Answer:
        in_flight = self.in_flight
        try:
            self._admit(scope)
            in_flight.admitted += 1
            try:
                result = await self._handle(scope, receive, body)
            finally:
                in_flight.admitted -= 1
        except Gone:
            raise
        except Refused as refused:
            if refused.reason:
                metrics.EVENTS_REJECTED.labels(refused.reason).inc()
            return refused.answer()
        except Exception:  # a bug: answer like a framework would, and say where
            log.exception("webhook failed")
            return error_answer(500, "internal error")
        return json_answer(200, result)

    def _admit(self, scope: Scope) -> None:
        """Refuse from the request's head alone, before any work or read."""
        if scope["method"] not in _METHODS:
            raise Refused(405, "method not allowed: use POST or GET", [_ALLOW, CLOSE])
        config = self.config
        if config.allowed_networks and not self._source_allowed(scope):
            raise Refused(403, "source address not allowed", [CLOSE], "forbidden")
        if config.token and not token_matches(config.token, header(scope, self._token_header)):
            raise Refused(401, "missing or invalid token", [CLOSE], "unauthorized")
        # Shed before any work: under CPU overload the producer's own bound is never
        # reached, requests would just queue up in memory and in the kernel.
        if self.in_flight.admitted >= config.max_inflight_requests:
            raise overloaded("too many requests in flight")

    async def _handle(self, scope: Scope, receive: Any, body: BodyProgress) -> dict[str, Any]:
        events, is_array = await self._events(scope, receive, body)
        try:
            ticket = self.producer.submit(events)
            message_ids = await wait_ticket(ticket, self.config.enqueue_timeout_s)
        except Overloaded as exc:
            raise overloaded(str(exc)) from None
        except RefusedContent as exc:  # its own message refused: it can never succeed
            raise Refused(400, f"the queue refuses this event: {exc}", [], "bad_request") from None
        except AfpipeError as exc:
            retry = [(b"retry-after", b"%d" % RETRY_AFTER_UNAVAILABLE_S)]
            raise Refused(503, f"queue unavailable: {exc}", retry, "queue_unavailable") from None
        metrics.EVENTS_ACCEPTED.inc(len(events))
        answer: dict[str, Any] = {"success": True, "messageId": message_ids[0]}
        if is_array:
            answer["eventIds"] = [e.id for e in events]
            answer["messageIds"] = message_ids
        else:
            answer["eventId"] = events[0].id
        answer["timestamp"] = now_iso()
        return answer

    async def _events(
        self, scope: Scope, receive: Any, progress: BodyProgress
    ) -> tuple[list[EncodedEvent], bool]:
        """The request's events, encoded. The body and the decoded payloads (many times
        the body's size) are gone when this returns: only the events wait for the queue."""
        config = self.config
        with self.bodies.claim() as claim:
            try:
                if scope["method"] == "GET":
                    query = scope["query_string"].decode("latin-1")
                    payloads = [payload_from_query(parse_qsl(query, keep_blank_values=True))]
                    is_array = False
                else:
                    body = await read_body(
                        scope,
                        receive,
                        claim,
                        max_body_bytes=config.max_body_bytes,
                        timeout_s=config.body_timeout_s,
                    )
                    progress.complete = True
                    payloads, is_array = payloads_from_json(body)
                    del body
                self._check_count(len(payloads))
                events = encode_all(payloads, config.max_message_bytes)
            except BadRequest as exc:
                reason = "too_large" if exc.status == 413 else "bad_request"
                raise Refused(exc.status, str(exc), reason=reason) from None
        self._check_cost(events)
        return events, is_array

    def _check_count(self, count: int) -> None:
        """A request with more events than the producer may ever hold can never succeed."""
        if count > self.producer.max_pending_events:
            limit = self.producer.max_pending_events
            raise BadRequest(413, f"request holds {count} events; at most {limit} are accepted")

    def _check_cost(self, events: list[EncodedEvent]) -> None:
        cost_bytes = pending_cost_bytes(events)
        if cost_bytes > self.producer.max_pending_bytes:
            limit = self.producer.max_pending_bytes
            message = f"request's events take {cost_bytes} bytes; at most {limit} are accepted"
            raise Refused(413, message, reason="too_large")

    def _source_allowed(self, scope: Scope) -> bool:
        peer = scope.get("client") or ("", 0)
        forwarded = header(scope, b"x-forwarded-for")
        config = self.config
        return allowed(str(peer[0]), forwarded, config.allowed_networks, config.trusted_proxies)
