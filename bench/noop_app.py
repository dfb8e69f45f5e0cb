"""The stack's ceiling: a no-op POST route on the same Quart-trio + hypercorn setup.

Served with afpipe's own ``hypercorn_config`` so only afpipe's per-request work differs.
    python -m bench.noop_app         # PORT and HOST from the environment, like afpipe
    python -m bench.noop_app --raw   # the same route as a bare ASGI app (no Quart)

afpipe serves its webhook as a bare ASGI handler in front of Quart, so ``--raw`` is
the fair ceiling for it; the Quart route is the one the issue names.
"""

from __future__ import annotations

import os
import signal
import sys
from functools import partial
from typing import Any

import trio
from hypercorn.trio import serve
from quart import Response, request
from quart_trio import QuartTrio

from afpipe.config import defaults
from afpipe.http.routes import WEBHOOK
from afpipe.http.server import hypercorn_config

ANSWER = b'{"success":true}'


def create_app() -> QuartTrio:
    app = QuartTrio("noop")

    @app.route(WEBHOOK, methods=["POST"])
    async def noop() -> Response:
        await request.get_data(cache=False, as_text=False, parse_form_data=False)
        return Response(ANSWER, status=200, content_type="application/json")

    @app.route("/health")
    async def health() -> Response:
        return Response(ANSWER, status=200, content_type="application/json")

    return app


class RawNoop:
    """The no-op route as a bare ASGI app: read the body, answer the fixed JSON."""

    def __init__(self, rest: QuartTrio) -> None:
        self.rest = rest

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != WEBHOOK:
            await self.rest(scope, receive, send)
            return
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        headers = [(b"content-type", b"application/json"), (b"content-length", b"16")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": ANSWER})


async def _main(host: str, port: int, raw: bool) -> None:
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        keep_alive_s = float(defaults()["AFPIPE_KEEP_ALIVE_TIMEOUT_S"])  # as afpipe serves
        config = hypercorn_config(host, port, 5.0, keep_alive_timeout_s=keep_alive_s)
        app: Any = RawNoop(create_app()) if raw else create_app()
        nursery.start_soon(partial(serve, app, config, shutdown_trigger=shutdown.wait))
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                shutdown.set()
                break


def main() -> None:
    host, port = os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "8000"))
    trio.run(_main, host, port, "--raw" in sys.argv[1:])


if __name__ == "__main__":
    main()
