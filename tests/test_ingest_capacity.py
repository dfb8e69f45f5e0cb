"""Refused requests never take capacity from good ones; memory has a stated ceiling.

A request refused from its head (no token, a source outside the allow-list, a full
house, a wrong method) is answered at once, its body unread, and its connection
closed: it holds no in-flight slot and no body bytes. The bytes of bodies being
read are bounded in total, and so are the bytes of events waiting for the queue.
The HTTP ingest runs in-process, hypercorn on port 0.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from afpipe import config, memory
from afpipe.codec import decode_body, encode_event
from afpipe.errors import Overloaded
from afpipe.health import Health
from afpipe.http.app import IngestApp, create_app
from afpipe.http.config import IngestConfig
from afpipe.http.inflight import RequestsInFlight
from afpipe.http.responses import LINGER_S
from afpipe.http.server import hypercorn_config, serve_ingest
from afpipe.http.webhook import Webhook
from afpipe.producer import EVENT_OVERHEAD_BYTES, Producer, pending_cost_bytes
from afpipe.sources import parse_networks
from tests.test_ingest import ScriptedQueue

HOOK = "/webhook/appsflyer"
TOKEN = "capacity-test-token-0d9c"
MAX_BODY_BYTES = 16 * 1024
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Server:
    host: str
    port: int
    queue: ScriptedQueue
    webhook: Webhook

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def events(self) -> list[dict[str, Any]]:
        return [event.payload for body in self.queue.sent for event in decode_body(body)]


@asynccontextmanager
async def serving(
    *, max_pending_events: int = 1000, max_pending_bytes: int = 1 << 24, **ingest: Any
) -> AsyncIterator[Server]:
    queue = ScriptedQueue()
    producer = Producer(
        queue,  # type: ignore[arg-type]
        max_message_bytes=64 * 1024,
        max_pending_events=max_pending_events,
        max_pending_bytes=max_pending_bytes,
        senders=1,
    )
    settings: dict[str, Any] = {"token": TOKEN, "max_inflight_requests": 8, **ingest}
    limits = IngestConfig(
        max_body_bytes=MAX_BODY_BYTES, max_message_bytes=64 * 1024, enqueue_timeout_s=5, **settings
    )
    app: IngestApp = create_app(producer, Health(fail_after_s=30), limits)
    hconfig = hypercorn_config("127.0.0.1", 0, 2, keep_alive_timeout_s=75)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(producer.run)
        binds = await nursery.start(serve_ingest, app, hconfig, stop)
        port = int(binds[0].rsplit(":", 1)[1])
        try:
            yield Server("127.0.0.1", port, queue, app.webhook)
        finally:
            stop.set()
            producer.close()
            if queue.gate is not None:
                queue.gate.set()


def head(content_length: int, *extra: str) -> bytes:
    lines = [f"POST {HOOK} HTTP/1.1", "Host: x", "Content-Type: application/json"]
    lines += [f"Content-Length: {content_length}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def read_answer(stream: trio.SocketStream) -> bytes:
    """Everything the server sends until it closes the connection."""
    answer = b""
    with contextlib.suppress(trio.BrokenResourceError):
        while chunk := await stream.receive_some(65536):
            answer += chunk
    return answer


def status(answer: bytes) -> int:
    found = re.match(rb"HTTP/1\.1 (\d{3}) ", answer)
    return int(found[1]) if found else 0


async def trickle(stream: trio.SocketStream, stop: trio.Event, answers: list[bytes]) -> None:
    """Send the body a byte every 50 ms until the server closes the connection (or ``stop``);
    its answer goes to ``answers`` as soon as it is complete."""

    async def read() -> None:
        answer = b""
        with contextlib.suppress(trio.BrokenResourceError):
            while not complete(answer) and (chunk := await stream.receive_some(65536)):
                answer += chunk
            answers.append(answer)
            while await stream.receive_some(65536):
                pass
        nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while not stop.is_set():
                await stream.send_all(b"x")
                await trio.sleep(0.05)
        await stop.wait()
        nursery.cancel_scope.cancel()


def complete(answer: bytes) -> bool:
    head, found, body = answer.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length: *(\d+)", head)
    return bool(found) and (length is None or len(body) >= int(length[1]))


async def slow_tokenless_client(server: Server, stop: trio.Event, answers: list[bytes]) -> None:
    """Posts without the token, trickling a 100 kB body; comes back each time it is cut off."""
    while not stop.is_set():
        stream = await trio.open_tcp_stream(server.host, server.port)
        async with stream:
            await stream.send_all(head(100_000))
            await trickle(stream, stop, answers)


async def test_slow_tokenless_clients_never_take_capacity_from_good_ones() -> None:
    """The old webhook read (and dropped) a refused request's body for up to 30 s while
    holding an in-flight slot: 8 slow clients without a token and every good post got 503."""
    attackers, good_posts = 48, 40
    with trio.fail_after(30):
        async with serving(max_inflight_requests=8) as server:
            stop = trio.Event()
            refused: list[bytes] = []
            statuses: list[int] = []
            async with trio.open_nursery() as nursery:
                for _ in range(attackers):
                    nursery.start_soon(slow_tokenless_client, server, stop, refused)
                await trio.sleep(0.5)  # they are all trickling now
                async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:

                    async def post(worker: int) -> None:
                        for n in range(good_posts // 4):
                            event = {"event_name": "good", "n": worker * 100 + n}
                            headers = {"Authorization": f"Bearer {TOKEN}"}
                            response = await client.post(HOOK, json=event, headers=headers)
                            statuses.append(response.status_code)

                    async with trio.open_nursery() as posters:
                        for worker in range(4):
                            posters.start_soon(post, worker)
                stop.set()
    assert statuses == [200] * good_posts
    assert len(refused) >= attackers and {status(a) for a in refused} == {401}
    assert all(b"connection: close" in a.lower() for a in refused)
    assert sorted(e["n"] for e in server.events()) == sorted(
        w * 100 + n for w in range(4) for n in range(10)
    )
    assert server.webhook.in_flight.admitted == 0 and server.webhook.bodies.held_bytes == 0


@pytest.mark.parametrize(
    ("case", "expected"),
    [("no token", 401), ("source not allowed", 403), ("full house", 503), ("method", 405)],
)
async def test_a_refused_request_is_answered_before_its_body_arrives(
    case: str, expected: int
) -> None:
    """Only 10 of the 10,000 bytes announced are ever sent: the answer must not wait for
    them (the old webhook waited out the 30 s body timeout for 401, 403 and 503)."""
    token = f"Authorization: {TOKEN}"
    options: dict[str, Any] = {"max_inflight_requests": 1}
    if case == "source not allowed":
        options["allowed_networks"] = tuple(parse_networks("192.0.2.0/24"))
    with trio.fail_after(10):
        async with serving(**options) as server, trio.open_nursery() as nursery:
            if case == "full house":  # a good request holds the only slot
                server.queue.gate = trio.Event()
                nursery.start_soon(post_good, server.url)
                await server.queue.entered.wait()
            request = head(10_000, token) if case != "no token" else head(10_000)
            if case == "method":
                request = request.replace(b"POST ", b"PUT ", 1)
            stream = await trio.open_tcp_stream(server.host, server.port)
            async with stream:
                await stream.send_all(request + b'{"n": 2, ')
                with trio.fail_after(5):
                    answer = await read_answer(stream)  # ends: the server closed
            if case == "full house":
                assert server.queue.gate is not None
                server.queue.gate.set()
    assert status(answer) == expected, answer[:200]
    assert b"connection: close" in answer.lower()
    assert all(e.get("n") != 2 for e in server.events())


async def post_good(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        response = await client.post(HOOK, json={"n": 1}, headers={"Authorization": TOKEN})
    assert response.status_code == 200


async def test_bodies_being_read_are_bounded_in_total() -> None:
    """Two bodies of 12,000 bytes fit a 20,000-byte budget half read; a third is shed
    at once (503, Retry-After) rather than held, and the first two still succeed."""
    body = json.dumps({"event_name": "big", "pad": ""}).encode()
    body = body.replace(b'""', b'"' + b"y" * (12_000 - len(body)) + b'"')
    assert len(body) == 12_000
    with trio.fail_after(20):
        async with serving(max_body_buffer_bytes=20_000) as server:
            budget = server.webhook.bodies
            streams = [await trio.open_tcp_stream(server.host, server.port) for _ in range(3)]
            for number, stream in enumerate(streams[:2], 1):
                await stream.send_all(head(12_000, f"Authorization: {TOKEN}") + body[:8_000])
                while budget.held_bytes < number * 8_000:
                    await trio.sleep(0.01)
            await streams[2].send_all(head(12_000, f"Authorization: {TOKEN}") + body[:8_000])
            shed = await read_answer(streams[2])
            answers = []
            for stream in streams[:2]:
                await stream.send_all(body[8_000:])
                answers.append(await read_until_answered(stream))
            for stream in streams:
                await stream.aclose()
            assert budget.held_bytes == 0
    assert status(shed) == 503 and b"retry-after: 1" in shed.lower(), shed[:300]
    assert b"request bodies" in shed
    assert [status(a) for a in answers] == [200, 200]
    assert [e["event_name"] for e in server.events()] == ["big", "big"]


async def read_until_answered(stream: trio.SocketStream) -> bytes:
    answer = b""
    while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
        answer += await stream.receive_some(65536)
    return answer


async def test_a_request_with_more_events_than_ingest_can_ever_hold_is_413() -> None:
    """It used to be 503 (overloaded), for ever: a sender would retry it endlessly."""
    with trio.fail_after(20):
        async with (
            serving(max_pending_events=5) as server,
            httpx.AsyncClient(base_url=server.url, timeout=10) as client,
        ):
            headers = {"Authorization": TOKEN}
            too_many = await client.post(HOOK, json=[{"n": n} for n in range(6)], headers=headers)
            fits = await client.post(HOOK, json=[{"n": n} for n in range(5)], headers=headers)
    assert too_many.status_code == 413, too_many.text
    assert too_many.json() == {
        "success": False,
        "error": "request holds 6 events; at most 5 are accepted",
    }
    assert fits.status_code == 200
    assert [e["n"] for e in server.events()] == [0, 1, 2, 3, 4]


async def test_a_request_whose_events_outweigh_the_pending_bytes_is_413() -> None:
    events = [{"n": n, "pad": "z" * 1_000} for n in range(8)]
    cost = pending_cost_bytes([encode_event(e) for e in events])
    with trio.fail_after(20):
        async with (
            serving(max_pending_bytes=cost - 1) as server,
            httpx.AsyncClient(base_url=server.url, timeout=10) as client,
        ):
            headers = {"Authorization": TOKEN}
            refused = await client.post(HOOK, json=events, headers=headers)
            accepted = await client.post(HOOK, json=events[:4], headers=headers)
    assert refused.status_code == 413 and "bytes" in refused.json()["error"]
    assert accepted.status_code == 200
    assert len(server.events()) == 4


async def test_the_producer_bounds_the_bytes_of_pending_events() -> None:
    """20,000 pending events of up to a message each were gigabytes; now bytes count too."""
    queue = ScriptedQueue()
    events = [encode_event({"n": n, "pad": "p" * 1_000}) for n in range(11)]
    item_cost = pending_cost_bytes(events[:1])
    producer = Producer(
        queue,  # type: ignore[arg-type]
        max_message_bytes=64 * 1024,
        max_pending_events=1_000,
        max_pending_bytes=10 * item_cost,
        senders=1,
    )
    tickets = [producer.submit([event]) for event in events[:10]]
    assert producer.pending() == 10 and producer.pending_bytes() == 10 * item_cost
    with pytest.raises(Overloaded, match="bytes of events"):
        producer.submit(events[10:])
    assert producer.pending() == 10  # far below the 1,000 events allowed
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(producer.run)
            for ticket in tickets:
                await ticket.done.wait()
            producer.close()
    assert producer.pending_bytes() == 0 and len(queue.sent) == 1
    assert item_cost > 1_000 + EVENT_OVERHEAD_BYTES


# --- hypercorn's body channel -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([(b"content-length", b"100000")], 401),  # no token
        ([(b"content-length", b"900000000"), (b"authorization", TOKEN.encode())], 413),
    ],
    ids=["refused-from-its-head", "declared-far-too-large"],
)
async def test_an_answer_at_once_completes_with_hypercorns_body_channel_full(
    autojump_clock: trio.testing.MockClock, headers: list[tuple[bytes, bytes]], expected: int
) -> None:
    """hypercorn hands the body to the app through a channel of ten chunks and, on the
    answer's last send, queues the disconnect notice on it too: answered without reading
    the body, with the channel full, that send waited for ever (the request's task and
    its connection with it). It happened to the 413 for a body declared far too large."""
    put, take = trio.open_memory_channel[dict[str, Any]](10)  # max_app_queue_size
    for _ in range(10):
        put.send_nowait({"type": "http.request", "body": b"x" * 1000, "more_body": True})
    sent: list[tuple[float, dict[str, Any]]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append((trio.current_time(), message))
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            # the answer's end: hypercorn's StreamClosed handling
            await put.send({"type": "http.disconnect"})

    producer = Producer(
        ScriptedQueue(),  # type: ignore[arg-type]
        max_message_bytes=64 * 1024,
        max_pending_events=10,
        senders=1,
    )
    limits = IngestConfig(
        max_body_bytes=MAX_BODY_BYTES, max_message_bytes=64 * 1024, enqueue_timeout_s=5, token=TOKEN
    )
    scope: dict[str, Any] = {"type": "http", "method": "POST", "path": HOOK, "headers": headers}
    scope |= {"query_string": b"", "client": ("192.0.2.1", 1)}
    with trio.fail_after(3600):
        await Webhook(producer, limits, RequestsInFlight())(scope, take.receive, send)
    (start_s, start), (body_s, body), (end_s, end) = sent
    assert start["status"] == expected and start_s == body_s == 0  # answered at once
    assert json.loads(body["body"])["success"] is False and body["more_body"] is True
    assert end_s == LINGER_S and end["body"] == b""  # the client never finished its body


# --- the stated ceiling -----------------------------------------------------------------------


def test_the_readme_states_the_ceiling_the_default_settings_imply() -> None:
    terms = memory.ingest_ceiling_bytes(config.Settings())
    readme = (ROOT / "README.md").read_text()
    total_mib = terms["total"] // memory.MIB
    assert f"{total_mib} MiB" in readme
    for name in (
        "AFPIPE_MAX_BODY_BUFFER_BYTES",
        "AFPIPE_MAX_BODY_BYTES",
        "AFPIPE_PRODUCER_MAX_PENDING_BYTES",
        "AFPIPE_PRODUCER_SENDERS",
        "AFPIPE_QUEUE_MAX_MESSAGE_BYTES",
    ):
        assert name in readme.split("### Memory ceiling", 1)[1].split("\n## ", 1)[0]
