"""End to end: ``afpipe status`` against the real ``afpipe serve``, embedded and on SQS."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from afpipe.status.report import Numbers, parse
from tests.daemon import afpipe_process, subprocess_env, wait_for_rows
from tests.fixtures.moto import MOTO_REGION, sqs_depth
from tests.load import purchase

pytestmark = pytest.mark.slow


async def run_status(env: Mapping[str, str], cwd: Path, *args: str) -> tuple[int, str, str]:
    """``python -m afpipe status`` with ``env`` as its settings: (exit code, stdout, stderr)."""
    result = await trio.run_process(
        [sys.executable, "-m", "afpipe", "status", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=subprocess_env(env),
        cwd=cwd,
    )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def post_one_by_one(client: httpx.AsyncClient, count: int) -> None:
    """As AppsFlyer posts: one event per request."""
    for n in range(count):
        response = await client.post("/webhook/appsflyer", json=purchase(n))
        assert response.status_code == 200, response.text


async def wait_settled(client: httpx.AsyncClient, count: int) -> None:
    """Until the instance counts ``count`` events loaded into the primary (a message is
    settled once deleted, a moment after its rows are in)."""
    while True:
        scrape = parse("", (await client.get("/metrics")).text)
        labels = {"queue": "main", "target": "primary", "outcome": "loaded"}
        if Numbers([scrape]).total("afpipe_events_settled_total", **labels) >= count:
            return
        await trio.sleep(0.05)


async def test_status_of_an_embedded_instance_balances_then_still_answers_once_it_is_down(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    settings = {"AFPIPE_DATA_DIR": str(data_dir)}  # the instance's and the command's
    with trio.fail_after(90):
        async with (
            afpipe_process(data_dir, {"AFPIPE_BATCH_LINGER_MS": "50"}) as daemon,
            httpx.AsyncClient(base_url=daemon.url, timeout=30) as client,
        ):
            await post_one_by_one(client, 7)
            await wait_for_rows(data_dir, 7)
            await wait_settled(client, 7)
            url = f"{daemon.url}/metrics"
            code, out, err = await run_status(settings, tmp_path, "--url", url)
            assert code == 0, (out, err)
            json_code, document, _ = await run_status(settings, tmp_path, "--url", url, "--json")
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait() == 0
        down_code, down_out, down_err = await run_status(settings, tmp_path, "--url", url)

    assert f"  {url}  up " in out
    assert "  accepted         7; 0 held (received, not yet settled)" in out
    assert "  primary          7 loaded, 0 dead-lettered: balanced" in out
    main_queue = "  main queue       0 messages visible, 0 in flight, oldest 0 s; 0 received again"
    assert main_queue in out  # the embedded queue knows its oldest message: none, 0 s
    assert "  dead letters     0 messages on the dead-letter queue" in out
    fresh = out.split("\nFreshness", 1)[1].splitlines()[1].split()  # the row under it
    assert fresh[0] == "primary" and "never" not in fresh
    assert fresh[-2:] == ["0", "s"]  # lag: nothing held
    assert "none (the embedded backends make no AWS requests)" in out

    assert json_code == 0
    report = json.loads(document)
    assert report["completeness"]["accepted"] == 7
    assert report["completeness"]["targets"]["primary"]["loaded"] == 7
    assert report["completeness"]["targets"]["primary"]["verdict"] == "balanced"
    assert report["freshness"]["primary"]["last_load_age_s"] is not None

    assert down_code == 1  # the instance is gone; the queue still answers
    assert f"{url}  FAILED: cannot reach it" in down_out
    assert "  main queue       0 messages visible, 0 in flight" in down_out
    assert f"afpipe status: {url}: cannot reach it" in down_err


async def test_status_reads_the_sqs_queues_live(
    tmp_path: Path, moto_endpoint: str, make_sqs_queue: Callable[..., str], boto_sqs: Any
) -> None:
    queue_url = make_sqs_queue("afpipe-status", VisibilityTimeout="30")
    dlq_url = make_sqs_queue("afpipe-status-dlq")
    retry_url = make_sqs_queue("afpipe-status-retry")
    settings = {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_REGION": MOTO_REGION,
        "SQS_QUEUE_URL": queue_url,
        "AFPIPE_DLQ_URL": dlq_url,
        "SECONDARY_REDSHIFT_ENABLED": "true",  # an embedded secondary, and its retry queue
        "AFPIPE_SECONDARY_RETRY_QUEUE_URL": retry_url,
        "AFPIPE_DATA_DIR": str(tmp_path / "data"),
    }
    boto_sqs.send_message(QueueUrl=dlq_url, MessageBody="dead")
    for body in ("one", "two"):
        boto_sqs.send_message(QueueUrl=retry_url, MessageBody=body)
    ingest_only = {**settings, "ENABLE_SQS_CONSUMER": "false"}  # so the events stay queued
    with trio.fail_after(90):
        async with (
            afpipe_process(tmp_path / "data", ingest_only) as daemon,
            httpx.AsyncClient(base_url=daemon.url, timeout=30) as client,
        ):
            await post_one_by_one(client, 5)
            visible, in_flight = sqs_depth(boto_sqs, queue_url)
            args = ("--url", f"{daemon.url}/metrics", "--json")
            code, out, err = await run_status(settings, tmp_path, *args)
    assert code == 0, (out, err)
    report = json.loads(out)
    queues = report["completeness"]["queues"]
    assert 1 <= visible <= 5 and in_flight == 0
    assert queues["main"] == {
        "visible": visible,
        "in_flight": 0,
        "dead_letters": 1,
        "error": "",
        "oldest_age_s": None,  # SQS, without AFPIPE_SQS_AGE_FROM_CLOUDWATCH
    }
    assert queues["secondary_retry"] == {
        "visible": 2,
        "in_flight": 0,
        "dead_letters": None,
        "error": "",
        "oldest_age_s": None,
    }
    assert report["completeness"]["accepted"] == 5
    for target in ("primary", "secondary"):
        balance = report["completeness"]["targets"][target]
        assert (balance["unaccounted"], balance["verdict"]) == (5, "queued")
        assert balance["detail"] == "5 events still queued"
    assert report["cost"]["requests"]["sqs"]["SendMessageBatch"] >= 1
