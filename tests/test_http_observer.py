"""The ASGI observer: access log sampling, bounded route labels, requests in flight."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
from prometheus_client import REGISTRY

from afpipe import metrics
from afpipe.http.inflight import RequestsInFlight
from afpipe.http.observer import HttpObserver


async def app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def call(observer: HttpObserver, path: str) -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        await trio.lowlevel.checkpoint()

    scope = {"type": "http", "method": "GET", "path": path, "client": ("192.0.2.1", 1)}
    await observer(scope, receive, send)


@pytest.mark.parametrize(("sample", "expected"), [(0.0, 0), (1.0, 20)])
async def test_access_log_can_be_off_or_on(
    caplog: pytest.LogCaptureFixture, sample: float, expected: int
) -> None:
    observer = HttpObserver(app, RequestsInFlight(), access_log_ratio=sample)
    with caplog.at_level(logging.INFO, logger="afpipe.access"):
        for _ in range(20):
            await call(observer, "/health")
    lines = [r for r in caplog.records if r.name == "afpipe.access"]
    assert len(lines) == expected
    if lines:
        assert lines[0].__dict__["status"] == 204


async def test_sampled_access_log_logs_some(caplog: pytest.LogCaptureFixture) -> None:
    observer = HttpObserver(app, RequestsInFlight(), access_log_ratio=0.5)
    with caplog.at_level(logging.INFO, logger="afpipe.access"):
        for _ in range(400):
            await call(observer, "/health")
    logged = sum(r.name == "afpipe.access" for r in caplog.records)
    assert 100 < logged < 300  # binomial(400, 0.5): far outside this is ~impossible


async def test_unknown_paths_share_one_label_and_in_flight_returns_to_zero() -> None:
    observer = HttpObserver(app, RequestsInFlight(), access_log_ratio=0)
    before = metrics.HTTP_REQUESTS.labels("other", "204")._value.get()
    for n in range(5):
        await call(observer, f"/scan/{n}")
    assert metrics.HTTP_REQUESTS.labels("other", "204")._value.get() == before + 5
    assert observer.in_flight.requests == 0
    with trio.fail_after(1):
        await observer.in_flight.wait_idle()


async def test_each_answer_is_timed_from_request_to_the_end_of_the_app() -> None:
    """The webhook's histogram is its ack latency: the app answers only once the
    event is durable, so the time until the app returns is what the sender waits."""

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        await trio.sleep(0.2)
        await app(scope, receive, send)

    def sample(suffix: str, **labels: str) -> float:
        name = f"afpipe_http_request_seconds_{suffix}"
        value = REGISTRY.get_sample_value(name, {"route": "/ready", **labels})
        return value or 0.0

    before = [sample("count"), sample("sum"), sample("bucket", le="0.15")]
    await call(HttpObserver(slow, RequestsInFlight(), access_log_ratio=0), "/ready")
    assert sample("count") == before[0] + 1
    assert sample("sum") >= before[1] + 0.2
    assert sample("bucket", le="0.15") == before[2]  # not under 150 ms
