"""The HTTP ingest in-process: answers come from the queue's acknowledgements."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio

from afpipe.config import defaults
from afpipe.errors import TransientError
from afpipe.health import Health
from afpipe.http.app import create_app
from afpipe.http.config import IngestConfig
from afpipe.http.server import hypercorn_config, serve_ingest
from afpipe.producer import Producer

KEEP_ALIVE_TIMEOUT_S = float(defaults()["AFPIPE_KEEP_ALIVE_TIMEOUT_S"])


class ScriptedQueue:
    """Records sends; fails or blocks them on demand."""

    name = "scripted"

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.fail = False
        self.gate: trio.Event | None = None
        self.entered = trio.Event()  # a send has started

    async def send_batch(self, bodies: Sequence[str]) -> list[str]:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise TransientError("queue is down", code="ServiceUnavailable")
        self.sent.extend(bodies)
        return [f"m-{len(self.sent) - len(bodies) + i}" for i in range(len(bodies))]


@asynccontextmanager
async def running(
    queue: ScriptedQueue,
    *,
    max_pending: int = 100,
    enqueue_timeout_s: float = 5,
    max_inflight: int = 100,
    token: str = "",
    token_header: str = "Authorization",
    **options: Any,
) -> AsyncIterator[tuple[httpx.AsyncClient, Health, Producer]]:
    health = Health(fail_after_s=30)
    producer = Producer(
        queue,  # type: ignore[arg-type]
        max_message_bytes=64 * 1024,
        max_pending_events=max_pending,
        senders=1,
        health=health,
    )
    app = create_app(
        producer,
        health,
        IngestConfig(
            max_body_bytes=16 * 1024,
            max_message_bytes=64 * 1024,
            enqueue_timeout_s=enqueue_timeout_s,
            max_inflight_requests=max_inflight,
            token=token,
            token_header=token_header,
            **options,
        ),
    )
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(producer.run)
        hconfig = hypercorn_config("127.0.0.1", 0, 2, keep_alive_timeout_s=KEEP_ALIVE_TIMEOUT_S)
        binds = await nursery.start(serve_ingest, app, hconfig, stop)
        health.serving = True
        async with httpx.AsyncClient(base_url=binds[0], timeout=10) as client:
            yield client, health, producer
        stop.set()
        producer.close()
        if queue.gate is not None:
            queue.gate.set()


async def test_queue_failure_answers_503_with_retry_after() -> None:
    queue = ScriptedQueue()
    queue.fail = True
    with trio.fail_after(20):
        async with running(queue) as (client, _, _):
            response = await client.post("/webhook/appsflyer", json={"event_name": "install"})
    assert response.status_code == 503
    assert response.headers["Retry-After"].isdigit()
    assert response.json()["success"] is False
    assert "queue is down" in response.json()["error"]
    assert queue.sent == []


async def test_overload_sheds_with_503_and_keeps_accepted_events() -> None:
    queue = ScriptedQueue()
    queue.gate = trio.Event()
    statuses: dict[int, int] = {}
    with trio.fail_after(20):
        async with running(queue, max_pending=1) as (client, _, producer):

            async def post(n: int) -> None:
                response = await client.post("/webhook/appsflyer", json={"n": n})
                statuses[n] = response.status_code

            async with trio.open_nursery() as nursery:
                nursery.start_soon(post, 1)
                await queue.entered.wait()  # request 1 is being sent (and blocked)
                nursery.start_soon(post, 2)
                while producer.pending() < 1:  # request 2 fills the waiting room
                    await trio.sleep(0.01)
                await post(3)  # no room: shed at once
                assert statuses == {3: 503}
                queue.gate.set()
    assert statuses == {1: 200, 2: 200, 3: 503}
    assert len(queue.sent) == 2


async def test_timeout_waiting_for_the_queue_answers_503() -> None:
    queue = ScriptedQueue()
    queue.gate = trio.Event()
    with trio.fail_after(20):
        async with running(queue, enqueue_timeout_s=0.2) as (client, _, _):
            response = await client.post("/webhook/appsflyer", json={"n": 1})
    assert response.status_code == 503
    assert "Retry-After" in response.headers


async def test_array_answer_lists_event_ids_in_order() -> None:
    queue = ScriptedQueue()
    with trio.fail_after(20):
        async with running(queue) as (client, _, _):
            response = await client.post("/webhook/appsflyer", json=[{"n": 1}, {"n": 2}])
            single = await client.post("/webhook/appsflyer", json={"n": 1})
    body = response.json()
    assert response.status_code == 200 and body["success"] is True
    assert len(body["eventIds"]) == 2 and body["eventIds"][0] == single.json()["eventId"]
    assert body["messageId"].startswith("m-")
    assert len(queue.sent) == 2


async def test_ready_reflects_draining_and_failing_backends() -> None:
    queue = ScriptedQueue()
    with trio.fail_after(20):
        async with running(queue) as (client, health, _):
            assert (await client.get("/ready")).status_code == 200
            health.fail_after_s = 0
            health.failed("queue")
            failing = await client.get("/ready")
            health.ok("queue")
            recovered = await client.get("/ready")
            health.draining = True
            draining = await client.get("/ready")
            live = await client.get("/health")
    assert failing.status_code == 503 and "queue" in failing.json()["status"]
    assert recovered.status_code == 200
    assert draining.status_code == 503 and draining.json()["status"] == "draining"
    assert live.status_code == 200


async def test_ready_turns_503_while_the_queue_keeps_failing_and_back() -> None:
    queue = ScriptedQueue()
    with trio.fail_after(20):
        async with running(queue) as (client, health, _):
            health.fail_after_s = 0  # no grace: the first failure counts
            queue.fail = True
            assert (await client.post("/webhook/appsflyer", json={"n": 1})).status_code == 503
            failing = await client.get("/ready")
            queue.fail = False
            assert (await client.post("/webhook/appsflyer", json={"n": 2})).status_code == 200
            recovered = await client.get("/ready")
    assert failing.status_code == 503 and failing.json()["status"] == "failing: queue"
    assert recovered.status_code == 200


async def test_too_many_requests_in_flight_are_shed_before_any_work() -> None:
    queue = ScriptedQueue()
    queue.gate = trio.Event()
    statuses: dict[int, int] = {}
    with trio.fail_after(20):
        async with running(queue, max_inflight=1) as (client, _, _):

            async def post(n: int) -> None:
                response = await client.post("/webhook/appsflyer", json={"n": n})
                statuses[n] = response.status_code
                if response.status_code == 503:
                    assert response.headers["Retry-After"] == "1"

            async with trio.open_nursery() as nursery:
                nursery.start_soon(post, 1)
                await queue.entered.wait()  # request 1 holds the only slot
                await post(2)
                queue.gate.set()
    assert statuses == {1: 200, 2: 503}
    assert len(queue.sent) == 1  # the shed request enqueued nothing


# --- the webhook's own HTTP handling (it is served without Quart) ----------------------------


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
async def test_other_methods_get_405_with_allow_and_enqueue_nothing(method: str) -> None:
    queue = ScriptedQueue()
    with trio.fail_after(20):
        async with running(queue) as (client, _, _):
            response = await client.request(method, "/webhook/appsflyer", content=b'{"a":"b"}')
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, POST"
    if method != "HEAD":
        assert response.json() == {"success": False, "error": "method not allowed: use POST or GET"}
    assert queue.sent == []


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_a_chunked_body_is_bounded_like_a_declared_one() -> None:
    """Without Content-Length the limit is enforced while reading: 413, nothing enqueued."""
    queue = ScriptedQueue()
    event = json.dumps({"event_name": "install", "n": 1}).encode()
    with trio.fail_after(20):
        async with running(queue) as (client, _, _):
            small = await client.post("/webhook/appsflyer", content=_chunks(event[:5], event[5:]))
            big = await client.post(
                "/webhook/appsflyer", content=_chunks(b'{"x": "', b"y" * 20_000, b'"}')
            )
    assert small.status_code == 200 and small.json()["success"] is True
    assert big.status_code == 413 and "exceeds 16384 bytes" in big.json()["error"]
    assert big.headers["Connection"] == "close"
    assert len(queue.sent) == 1


async def test_a_body_declared_far_over_the_limit_is_refused_before_it_is_sent() -> None:
    queue = ScriptedQueue()
    with trio.fail_after(20):
        async with running(queue) as (client, _, _):
            host, port = str(client.base_url.host), client.base_url.port
            assert port is not None
            stream = await trio.open_tcp_stream(host, port)
            async with stream:
                await stream.send_all(
                    b"POST /webhook/appsflyer HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n{"
                )
                answer = b""
                while b"\r\n\r\n" not in answer:
                    answer += await stream.receive_some(65536)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"connection: close" in answer.lower()
    assert queue.sent == []


async def test_a_bug_in_the_webhook_answers_500_json_and_enqueues_nothing() -> None:
    queue = ScriptedQueue()
    with trio.fail_after(20):
        async with running(queue) as (client, _, producer):

            def broken(events: object) -> None:
                raise RuntimeError("injected")

            producer.submit = broken  # type: ignore[method-assign,assignment]
            response = await client.post("/webhook/appsflyer", json={"n": 1})
            health = await client.get("/health")  # the server is still up
    assert response.status_code == 500
    assert response.json() == {"success": False, "error": "internal error"}
    assert health.status_code == 200
    assert queue.sent == []


async def test_the_token_header_name_is_case_insensitive_and_repeats_are_not_a_bypass() -> None:
    queue = ScriptedQueue()
    with trio.fail_after(20):
        async with running(queue, token="s3cret", token_header="X-AF-Token") as (client, _, _):
            ok = await client.post(
                "/webhook/appsflyer", json={"n": 1}, headers={"x-af-token": "s3cret"}
            )
            wrong = await client.post(
                "/webhook/appsflyer", json={"n": 2}, headers={"X-AF-TOKEN": "nope"}
            )
            doubled = await client.post(
                "/webhook/appsflyer",
                json={"n": 3},
                headers=[("X-AF-Token", "nope"), ("X-AF-Token", "s3cret")],
            )
    assert ok.status_code == 200
    assert wrong.status_code == 401 and doubled.status_code == 401
    assert len(queue.sent) == 1
