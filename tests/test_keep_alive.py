"""HTTP keep-alive outlasts the load balancer's, and never holds up a drain.

Behind an AWS ALB (idle timeout 60 s) a target that closes an idle connection
first makes the ALB answer 502 to the push it just forwarded on it: a lost event.
The in-process tests run hypercorn on port 0 on trio's autojump clock: a minute of
idleness takes no real time (loopback data is readable as soon as it is sent, so
the clock only jumps when nothing at all is left to do).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from afpipe import config
from afpipe.health import Health
from afpipe.http.app import create_app
from afpipe.http.config import IngestConfig
from afpipe.http.server import hypercorn_config, serve_ingest
from afpipe.producer import Producer
from tests.test_ingest import ScriptedQueue

NO_DOTENV = Path("/nonexistent/.env")
ALB_IDLE_TIMEOUT_S = 60.0
GRACEFUL_TIMEOUT_S = 5.0
PUSH = b"GET /webhook/appsflyer?event_name=install HTTP/1.1\r\nHost: x\r\n\r\n"
HEALTH = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"


def test_the_default_keep_alive_outlasts_common_balancers() -> None:
    settings = config.load({}, NO_DOTENV)
    assert settings.keep_alive_timeout_s > ALB_IDLE_TIMEOUT_S
    hconfig = hypercorn_config(
        "127.0.0.1", 0, 5, keep_alive_timeout_s=settings.keep_alive_timeout_s
    )
    assert hconfig.keep_alive_timeout == settings.keep_alive_timeout_s
    # hypercorn's read timeout also bounds the wait on an idle connection
    assert hconfig.read_timeout is not None and hconfig.read_timeout > hconfig.keep_alive_timeout
    chosen = config.load({"AFPIPE_KEEP_ALIVE_TIMEOUT_S": "350"}, NO_DOTENV)
    hconfig = hypercorn_config("127.0.0.1", 0, 5, keep_alive_timeout_s=chosen.keep_alive_timeout_s)
    assert hconfig.keep_alive_timeout == 350 and (hconfig.read_timeout or 0) > 350


@asynccontextmanager
async def serving(keep_alive_timeout_s: float) -> AsyncIterator[tuple[int, trio.Event]]:
    """The ingest on port 0; yields (port, stop). Leaving the block waits for the drain."""
    queue = ScriptedQueue()
    producer = Producer(
        queue,  # type: ignore[arg-type]
        max_message_bytes=64 * 1024,
        max_pending_events=100,
        senders=1,
    )
    ingest = IngestConfig(
        max_body_bytes=16 * 1024, max_message_bytes=64 * 1024, enqueue_timeout_s=5
    )
    app = create_app(producer, Health(fail_after_s=30), ingest)
    hconfig = hypercorn_config(
        "127.0.0.1", 0, GRACEFUL_TIMEOUT_S, keep_alive_timeout_s=keep_alive_timeout_s
    )
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(producer.run)
        binds = await nursery.start(serve_ingest, app, hconfig, stop)
        yield int(binds[0].rsplit(":", 1)[1]), stop
        stop.set()
        producer.close()


async def ask(stream: trio.SocketStream, request: bytes = PUSH) -> bytes:
    """One request on ``stream``; the whole answer, or b"" if the server closed."""
    try:
        await stream.send_all(request)
        answer = b""
        while not complete(answer):
            chunk = await stream.receive_some(65536)
            if not chunk:
                return b""
            answer += chunk
    except trio.BrokenResourceError:
        return b""
    return answer


def complete(answer: bytes) -> bool:
    head, found, body = answer.partition(b"\r\n\r\n")
    if not found:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return True


@pytest.mark.parametrize("request_bytes", [PUSH, HEALTH], ids=["webhook", "quart-route"])
async def test_an_idle_connection_outlives_the_load_balancers_idle_timeout(
    autojump_clock: trio.testing.MockClock, request_bytes: bytes
) -> None:
    """The old 5 s keep-alive closed it before the ALB's 60 s; hypercorn's 30 s read
    timeout did too (it also bounds the wait for the next request on an idle
    connection, and is all that closes one after a Quart route)."""
    keep_alive_s = float(config.defaults()["AFPIPE_KEEP_ALIVE_TIMEOUT_S"])
    with trio.fail_after(10 * keep_alive_s):
        async with serving(keep_alive_s) as (port, _):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                assert (await ask(stream, request_bytes)).startswith(b"HTTP/1.1 200")
                await trio.sleep(ALB_IDLE_TIMEOUT_S + 5)  # idle past the balancer's timeout
                second = await ask(stream, request_bytes)  # on the same connection
                assert second.startswith(b"HTTP/1.1 200")
                idle_since = trio.current_time()
                assert await stream.receive_some(1) == b""  # until afpipe closes it
                closed_after_s = trio.current_time() - idle_since
    assert keep_alive_s <= closed_after_s < keep_alive_s + 2


async def test_a_short_setting_closes_idle_connections_sooner(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        async with serving(keep_alive_timeout_s=3) as (port, _):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                assert (await ask(stream)).startswith(b"HTTP/1.1 200")
                idle_since = trio.current_time()
                assert await stream.receive_some(1) == b""
                assert 3 <= trio.current_time() - idle_since < 5


async def test_a_drain_does_not_wait_for_idle_keep_alive_connections(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """hypercorn closes idle connections as soon as it stops: the drain ends at once,
    not after the keep-alive timeout (75 s) nor the graceful timeout."""
    keep_alive_s = float(config.defaults()["AFPIPE_KEEP_ALIVE_TIMEOUT_S"])
    with trio.fail_after(10 * keep_alive_s):
        stream: trio.SocketStream | None = None
        async with serving(keep_alive_s) as (port, stop):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            assert (await ask(stream)).startswith(b"HTTP/1.1 200")
            await trio.sleep(1)  # idle, kept alive
            stop.set()
            drain_started = trio.current_time()
        drain_s = trio.current_time() - drain_started
        assert await stream.receive_some(1) == b""  # closed by the drain
        await stream.aclose()
    assert drain_s < 1
