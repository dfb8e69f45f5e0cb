"""HTTP ingest: Quart-trio routes served by hypercorn inside the root nursery."""

from __future__ import annotations

import logging
import math
import socket
from functools import partial
from typing import Any

import msgspec
import trio
import trio.lowlevel
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from quart import Response
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from afpipe import __version__, metrics
from afpipe.health import Health
from afpipe.http_observer import HttpObserver
from afpipe.producer import Producer
from afpipe.webhook_asgi import WEBHOOK, IngestConfig, Webhook, now_iso

log = logging.getLogger("afpipe.ingest")

# Longest wait for the next bytes of a request's head (or, idle, of the next request).
READ_TIMEOUT_S = 30

__all__ = ["WEBHOOK", "IngestConfig", "create_app", "hypercorn_config", "serve_ingest"]


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    response = Response(msgspec.json.encode(body), status=status, headers=headers)
    response.content_type = "application/json; charset=utf-8"
    return response


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return _json(status, {"success": False, "error": message}, headers)


class IngestApp:
    """The ASGI app hypercorn serves: the webhook on its fast path, the rest on Quart."""

    def __init__(self, webhook: Webhook, rest: QuartTrio) -> None:
        self.webhook = webhook
        self.rest = rest

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == WEBHOOK:
            await self.webhook(scope, receive, send)
        else:
            await self.rest(scope, receive, send)


def create_app(producer: Producer, health: Health, config: IngestConfig) -> IngestApp:
    app = QuartTrio("afpipe")
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.config["BODY_TIMEOUT"] = config.body_timeout_s

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        if status == 413:
            return _error(413, f"request body exceeds {config.max_body_bytes} bytes")
        return _error(status, exc.description or exc.name)

    @app.route("/health")
    async def health_route() -> Response:
        return _json(
            200,
            {
                "status": "ok",
                "timestamp": now_iso(),
                "consumer": "enabled" if config.consumer_enabled else "disabled",
            },
        )

    @app.route("/ready")
    async def ready_route() -> Response:
        ready, reason = health.ready()
        return _json(200 if ready else 503, {"ready": ready, "status": reason})

    @app.route("/metrics")
    async def metrics_route() -> Response:
        body, content_type = metrics.exposition()
        return Response(body, status=200, content_type=content_type)

    @app.route("/api/hello")
    async def hello() -> Response:
        return _json(
            200,
            {
                "name": "afpipe",
                "message": "Hello from afpipe",
                "version": __version__,
                "endpoints": ["/health", "/ready", "/metrics", "/api/hello", WEBHOOK],
            },
        )

    return IngestApp(Webhook(producer, config), app)


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _shared_bind(host: str, port: int) -> str:
    """AFPIPE_WORKERS: a socket several processes accept on (SO_REUSEPORT)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return f"fd://{sock.detach()}"  # hypercorn takes the descriptor over


def hypercorn_config(
    host: str,
    port: int,
    graceful_timeout_s: float,
    cert_file: str = "",
    key_file: str = "",
    *,
    keep_alive_timeout_s: float,
    reuse_port: bool = False,
) -> HypercornConfig:
    config = HypercornConfig()
    config.bind = [_shared_bind(host, port) if reuse_port else _bind(host, port)]
    if cert_file:  # in-process TLS, for deployments without a load balancer
        config.certfile = cert_file
        config.keyfile = key_file
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    # Bounds the drain: in-flight requests get this long after shutdown starts, and idle
    # keep-alive connections (which quart-trio on hypercorn's trio worker may keep
    # open past keep_alive_timeout) are cut at the same deadline.
    config.graceful_timeout = graceful_timeout_s
    # Longer than the balancer's own idle timeout (DESIGN.md 6): closing an idle
    # connection first makes an ALB answer 502 to the push it just sent on it. The
    # drain does not wait for it: on shutdown hypercorn closes idle connections at
    # once, and serve_ingest cancels any left once no request is in flight.
    config.keep_alive_timeout = keep_alive_timeout_s
    # hypercorn applies read_timeout to every read, the wait on an idle connection
    # included: below the keep-alive timeout it would close idle connections first.
    # (After a Quart route it is all that closes one: quart-trio cancels the task
    # that would start hypercorn's keep-alive timer.)
    config.read_timeout = max(READ_TIMEOUT_S, math.ceil(keep_alive_timeout_s) + 1)
    config.h11_max_incomplete_size = 64 * 1024
    config.include_server_header = False
    return config


async def serve_ingest(
    app: IngestApp,
    config: HypercornConfig,
    shutdown: trio.Event,
    access_log_sample: float = 1.0,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``shutdown`` is set, then finish in-flight requests (bounded)."""
    requests = HttpObserver(app, access_log_sample=access_log_sample)
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            partial(serve, requests, config, shutdown_trigger=shutdown.wait)
        )
        task_status.started(binds)
        await shutdown.wait()
        with trio.move_on_after(config.graceful_timeout):
            await trio.lowlevel.checkpoint()  # let hypercorn mark itself terminated first
            await requests.wait_idle()
        nursery.cancel_scope.cancel()  # only idle keep-alive connections remain
