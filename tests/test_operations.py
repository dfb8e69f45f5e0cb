"""AFPIPE_METRICS_PORT: /metrics, /health and /ready on a port of their own, so the
public webhook port does not expose the metrics, and a consumer-only process
(serve --no-ingest), which had no HTTP server at all, can be scraped and probed."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from afpipe import cli
from afpipe.health import Health
from afpipe.http.operations import OperationsApp
from tests.daemon import afpipe_process, wait_for_rows
from tests.load import purchase
from tests.test_workers import free_port


def answer(app: OperationsApp, path: str, method: str = "GET") -> tuple[int, bytes]:
    status, _, body = app.answer(path, method)
    return status, body


async def test_the_listener_answers_its_three_routes_and_nothing_else() -> None:
    health = Health(fail_after_s=60)
    app = OperationsApp(health, consumer_enabled=True)
    status, body = answer(app, "/metrics")
    assert status == 200 and b"afpipe_events_accepted_total" in body
    assert answer(app, "/health")[0] == 200
    assert answer(app, "/ready")[0] == 503  # not serving yet
    health.serving = True
    assert answer(app, "/ready") == (200, b'{"ready":true,"status":"ready"}')
    status, body = answer(app, "/webhook/appsflyer", "POST")
    assert status == 404 and b"AFPIPE_METRICS_PORT" in body
    assert answer(app, "/metrics", "POST")[0] == 405


def test_the_metrics_port_must_not_be_the_webhook_s(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PORT", "3000")
    monkeypatch.setenv("AFPIPE_METRICS_PORT", "3000")
    assert cli.main(["check"]) == 2
    assert "AFPIPE_METRICS_PORT" in capsys.readouterr().err


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.slow
async def test_a_consumer_only_process_is_scraped_and_the_accounting_spans_both(
    tmp_path: Path,
) -> None:
    """Ingest in one process, consumer in another (--no-ingest): the consumer used
    to serve no /metrics, so what it settled was seen nowhere."""
    data_dir = tmp_path / "data"
    ingest_env = {"ENABLE_SQS_CONSUMER": "false", "AFPIPE_METRICS_PORT": str(free_port())}
    consumer_env = {"AFPIPE_BATCH_LINGER_MS": "20", "AFPIPE_METRICS_PORT": str(free_port())}
    with trio.fail_after(60):
        async with (
            afpipe_process(data_dir, ingest_env) as ingest,
            httpx.AsyncClient(timeout=30) as client,
        ):
            for n in range(5):
                posted = await client.post(f"{ingest.url}/webhook/appsflyer", json=purchase(n))
                assert posted.status_code == 200
            # The metrics left the public port for their own.
            assert (await client.get(f"{ingest.url}/metrics")).status_code == 404
            assert ingest.metrics_url
            accepted = samples((await client.get(f"{ingest.metrics_url}/metrics")).text)
            assert accepted[("afpipe_events_accepted_total", frozenset())] == 5
            async with afpipe_process(data_dir, consumer_env, args=("--no-ingest",)) as consumer:
                await wait_for_rows(data_dir, 5)
                assert consumer.metrics_url
                ready = await client.get(f"{consumer.metrics_url}/ready")
                assert ready.status_code == 200
                await trio.sleep(0.3)  # the writer deletes, then counts
                text = (await client.get(f"{consumer.metrics_url}/metrics")).text
                consumer.signal(signal.SIGTERM)
                assert await consumer.wait() == 0
            ingest.signal(signal.SIGTERM)
            assert await ingest.wait() == 0
    settled = frozenset({("queue", "main"), ("target", "primary"), ("outcome", "loaded")})
    assert samples(text)[("afpipe_events_settled_total", settled)] == 5
