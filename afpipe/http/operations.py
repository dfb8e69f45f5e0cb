"""AFPIPE_METRICS_PORT: a listener of its own for /metrics, /health and /ready.

For a private port the scraper and the probes reach, away from the public webhook
port (which then no longer answers /metrics), and for ``serve --no-ingest``, whose
consumer has no other HTTP server. A bare ASGI handler: three GET routes, answered
in the same shapes as on PORT.
"""

from __future__ import annotations

from typing import Any

from afpipe import metrics
from afpipe.health import Health
from afpipe.http.inflight import RequestsInFlight
from afpipe.http.responses import Answer, error_answer, json_answer, now_iso, respond
from afpipe.http.routes import HEALTH, METRICS, READY

OPERATIONS = (METRICS, HEALTH, READY)


class OperationsApp:
    def __init__(self, health: Health, *, consumer_enabled: bool) -> None:
        self.health = health
        self.consumer_enabled = consumer_enabled
        self.in_flight = RequestsInFlight()  # for serve_ingest's drain and observer

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await respond(send, self.answer(scope["path"], scope["method"]))
        elif scope["type"] == "lifespan":  # nothing to start or stop: say so
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})

    def answer(self, path: str, method: str) -> Answer:
        if path not in OPERATIONS:
            return error_answer(404, f"{path} is not served on AFPIPE_METRICS_PORT")
        if method not in ("GET", "HEAD"):
            return error_answer(405, f"{method} not allowed", [(b"allow", b"GET")])
        if path == METRICS:
            body, content_type = metrics.exposition()
            head = [
                (b"content-type", content_type.encode()),
                (b"content-length", b"%d" % len(body)),
            ]
            return Answer(200, head, body)
        if path == HEALTH:
            consumer = "enabled" if self.consumer_enabled else "disabled"
            return json_answer(200, {"status": "ok", "timestamp": now_iso(), "consumer": consumer})
        ready, reason = self.health.ready()
        return json_answer(200 if ready else 503, {"ready": ready, "status": reason})
