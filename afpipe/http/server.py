"""hypercorn's settings for ingest, and ``serve_ingest``: serve inside the root nursery."""

from __future__ import annotations

import logging
import math
import socket
from functools import partial

import trio
import trio.lowlevel
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from afpipe.http.app import IngestApp
from afpipe.http.observer import HttpObserver
from afpipe.http.operations import OperationsApp

# Longest wait for the next bytes of a request's head (or, idle, of the next request).
READ_TIMEOUT_S = 30


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
    app: IngestApp | OperationsApp,
    config: HypercornConfig,
    shutdown: trio.Event,
    access_log_ratio: float = 1.0,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``shutdown`` is set, then finish in-flight requests (bounded).

    ``access_log_ratio`` (AFPIPE_ACCESS_LOG) is the share of requests logged, 0 to 1.
    """
    observed = HttpObserver(app, app.in_flight, access_log_ratio=access_log_ratio)
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            partial(serve, observed, config, shutdown_trigger=shutdown.wait)
        )
        task_status.started(binds)
        await shutdown.wait()
        with trio.move_on_after(config.graceful_timeout):
            await trio.lowlevel.checkpoint()  # let hypercorn mark itself terminated first
            await app.in_flight.wait_idle()
        nursery.cancel_scope.cancel()  # only idle keep-alive connections remain
