"""The stack's ceiling: a no-op POST route on the same Quart-trio + hypercorn setup.

Served with afpipe's own ``hypercorn_config`` so only afpipe's per-request work differs.
    python -m bench.noop_app   # PORT and HOST from the environment, like afpipe
"""

from __future__ import annotations

import os
import signal
from functools import partial

import trio
from hypercorn.trio import serve
from quart import Response, request
from quart_trio import QuartTrio

from afpipe.ingest import WEBHOOK, hypercorn_config

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


async def _main(host: str, port: int) -> None:
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        config = hypercorn_config(host, port, graceful_timeout_s=5.0)
        nursery.start_soon(partial(serve, create_app(), config, shutdown_trigger=shutdown.wait))
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                shutdown.set()
                break


def main() -> None:
    trio.run(_main, os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "8000")))


if __name__ == "__main__":
    main()
