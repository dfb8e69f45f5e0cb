"""The ASGI app hypercorn serves: the webhook on its fast path, the other routes on Quart.

Quart answers in the same JSON shapes as the webhook, written by the same
functions (``responses``); its routes and their methods come from ``routes``.
With AFPIPE_CORS_ORIGINS, Quart's routes answer CORS (quart-cors) for those
origins; the webhook, which browsers never call, does not.
"""

from __future__ import annotations

from typing import Any

from quart import Response
from quart_cors import cors
from quart_trio import QuartTrio
from werkzeug.datastructures import Headers
from werkzeug.exceptions import HTTPException

from afpipe import __version__, metrics
from afpipe.health import Health
from afpipe.http.config import IngestConfig
from afpipe.http.inflight import RequestsInFlight
from afpipe.http.responses import Answer, error_answer, json_answer, now_iso
from afpipe.http.routes import HEALTH, HELLO, METRICS, READY, ROUTES, WEBHOOK
from afpipe.http.webhook import Webhook
from afpipe.producer import Producer


class IngestApp:
    """Dispatch on the path: the webhook's bare ASGI handler, or Quart for the rest."""

    def __init__(self, webhook: Webhook, rest: QuartTrio, in_flight: RequestsInFlight) -> None:
        self.webhook = webhook
        self.rest = rest
        self.in_flight = in_flight  # shared with the observer serve_ingest puts in front

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == WEBHOOK:
            await self.webhook(scope, receive, send)
        else:
            await self.rest(scope, receive, send)


def create_app(producer: Producer, health: Health, config: IngestConfig) -> IngestApp:
    in_flight = RequestsInFlight()
    webhook = Webhook(producer, config, in_flight)
    return IngestApp(webhook, _quart_app(health, config), in_flight)


def _response(answer: Answer) -> Response:
    """A Quart response with the answer's status, headers and body, as they are."""
    headers = Headers(
        [(name.decode("latin-1"), value.decode("latin-1")) for name, value in answer.headers]
    )
    return Response(answer.body, status=answer.status, headers=headers)


def _quart_app(health: Health, config: IngestConfig) -> QuartTrio:
    app = QuartTrio("afpipe")
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.config["BODY_TIMEOUT"] = config.body_timeout_s

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        message = exc.description or exc.name
        if status == 413:
            message = f"request body exceeds {config.max_body_bytes} bytes"
        return _response(error_answer(status, message))

    @app.route(HEALTH, methods=ROUTES[HEALTH])
    async def health_route() -> Response:
        consumer = "enabled" if config.consumer_enabled else "disabled"
        body = {"status": "ok", "timestamp": now_iso(), "consumer": consumer}
        return _response(json_answer(200, body))

    @app.route(READY, methods=ROUTES[READY])
    async def ready_route() -> Response:
        ready, reason = health.ready()
        return _response(json_answer(200 if ready else 503, {"ready": ready, "status": reason}))

    if config.metrics_route:  # else on AFPIPE_METRICS_PORT (afpipe.http.operations)

        @app.route(METRICS, methods=ROUTES[METRICS])
        async def metrics_route() -> Response:
            body, content_type = metrics.exposition()
            return Response(body, status=200, content_type=content_type)

    @app.route(HELLO, methods=ROUTES[HELLO])
    async def hello() -> Response:
        about = {"name": "afpipe", "message": "Hello from afpipe", "version": __version__}
        return _response(json_answer(200, {**about, "endpoints": list(ROUTES)}))

    if config.cors_origins:  # the webhook is not Quart's: it never answers CORS
        origin = "*" if config.cors_origins == ("*",) else list(config.cors_origins)
        app = cors(app, allow_origin=origin, allow_methods=["GET"], max_age=600)
    return app
