"""HTTP ingest: Quart-trio routes served by hypercorn inside the root nursery."""

from __future__ import annotations

import logging
import socket
import time
from functools import partial
from typing import Any

import msgspec
import trio
import trio.lowlevel
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from afpipe import __version__, metrics
from afpipe.errors import AfpipeError, Overloaded
from afpipe.health import Health
from afpipe.http_observer import HttpObserver
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
    ) -> None:
        self.max_inflight_requests = max_inflight_requests
        self.allowed_networks = parse_networks(allowed_cidrs)
        self.trusted_proxies = parse_networks(trusted_proxies)
        self.max_body_bytes = max_body_bytes
        self.max_message_bytes = max_message_bytes
        self.enqueue_timeout_s = enqueue_timeout_s
        self.token = token
        self.token_header = token_header
        self.consumer_enabled = consumer_enabled


def _now_iso() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    response = Response(msgspec.json.encode(body), status=status, headers=headers)
    response.content_type = "application/json; charset=utf-8"
    return response


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return _json(status, {"success": False, "error": message}, headers)


CLOSE = {"Connection": "close"}


async def _refuse(status: int, reason: str, message: str, headers: dict[str, str]) -> Response:
    """Refuse a webhook request before any work, counted by ``reason``.

    The body is read first: replying mid-upload leaves a keep-alive connection
    with unread bytes in front of the next request.
    """
    metrics.EVENTS_REJECTED.labels(reason).inc()
    await request.get_data(cache=False, parse_form_data=False)
    return _error(status, message, headers)


def create_app(producer: Producer, health: Health, config: IngestConfig) -> QuartTrio:
    app = QuartTrio("afpipe")
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.config["BODY_TIMEOUT"] = 30

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        if status == 413:
            metrics.EVENTS_REJECTED.labels("too_large").inc()
            return _error(413, f"request body exceeds {config.max_body_bytes} bytes")
        return _error(status, exc.description or exc.name)

    inflight = [0]  # webhook requests being handled

    @app.route(WEBHOOK, methods=["POST", "GET"])
    async def webhook() -> Response:
        # Shed before any work: under CPU overload the producer's own bound is never
        # reached, requests would just queue up in memory and in the kernel.
        if inflight[0] >= config.max_inflight_requests:
            headers = {"Retry-After": str(RETRY_AFTER_OVERLOADED_S)}
            return await _refuse(
                503, "overloaded", "overloaded: too many requests in flight", headers
            )
        inflight[0] += 1
        try:
            return await handle_webhook()
        finally:
            inflight[0] -= 1

    async def handle_webhook() -> Response:
        if config.allowed_networks and not _source_allowed():
            return await _refuse(403, "forbidden", "source address not allowed", CLOSE)
        if config.token and not token_matches(
            config.token, request.headers.get(config.token_header)
        ):
            return await _refuse(401, "unauthorized", "missing or invalid token", CLOSE)
        try:
            if request.method == "GET":
                payloads, is_array = [payload_from_query(request.args.items(multi=True))], False
            else:
                body = await request.get_data(cache=False, as_text=False, parse_form_data=False)
                assert isinstance(body, bytes)
                payloads, is_array = payloads_from_json(body)
            events = encode_all(payloads, config.max_message_bytes)
        except BadRequest as exc:
            reason = "too_large" if exc.status == 413 else "bad_request"
            metrics.EVENTS_REJECTED.labels(reason).inc()
            return _error(exc.status, str(exc))
        try:
            ticket = producer.submit(events)
            message_ids = await wait_ticket(ticket, config.enqueue_timeout_s)
        except Overloaded as exc:
            metrics.EVENTS_REJECTED.labels("overloaded").inc()
            return _error(503, f"overloaded: {exc}", {"Retry-After": str(RETRY_AFTER_OVERLOADED_S)})
        except AfpipeError as exc:
            metrics.EVENTS_REJECTED.labels("queue_unavailable").inc()
            return _error(
                503, f"queue unavailable: {exc}", {"Retry-After": str(RETRY_AFTER_UNAVAILABLE_S)}
            )
        metrics.EVENTS_ACCEPTED.inc(len(events))
        answer: dict[str, Any] = {"success": True, "messageId": message_ids[0]}
        if is_array:
            answer["eventIds"] = [e.id for e in events]
            answer["messageIds"] = message_ids
        else:
            answer["eventId"] = events[0].id
        answer["timestamp"] = _now_iso()
        return _json(200, answer)

    def _source_allowed() -> bool:
        peer = request.scope.get("client") or ("", 0)
        forwarded = request.headers.get("X-Forwarded-For")
        return allowed(str(peer[0]), forwarded, config.allowed_networks, config.trusted_proxies)

    @app.route("/health")
    async def health_route() -> Response:
        return _json(
            200,
            {
                "status": "ok",
                "timestamp": _now_iso(),
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

    return app


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
    config.keep_alive_timeout = 5
    config.read_timeout = 30
    config.h11_max_incomplete_size = 64 * 1024
    config.include_server_header = False
    return config


async def serve_ingest(
    app: QuartTrio,
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
