"""End to end: the real ``afpipe serve`` with SQS on moto and the embedded warehouse."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.daemon import afpipe_process, subprocess_env, wait_for_rows, warehouse_rows
from tests.fixtures.moto import MOTO_REGION, sqs_depth
from tests.load import post_batches, purchase

pytestmark = [
    pytest.mark.slow,
    # Load generators are cut off mid-request when the daemon stops; httpx then leaves
    # request-body generators unfinished, which is the client's business, not afpipe's.
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


@pytest.fixture
def sqs_env(moto_endpoint: str, make_sqs_queue: Callable[..., str]) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_REGION": MOTO_REGION,
        "SQS_QUEUE_URL": make_sqs_queue("afpipe-e2e", VisibilityTimeout="30"),
        "AFPIPE_DLQ_URL": make_sqs_queue("afpipe-e2e-dlq"),
        "AFPIPE_BATCH_LINGER_MS": "50",
        "SQS_POLLING_INTERVAL": "50",
        "AFPIPE_RECEIVE_WAIT_S": "1",
    }


async def wait_empty(boto_sqs: Any, url: str, timeout_s: float = 30) -> None:
    with trio.fail_after(timeout_s):
        while sqs_depth(boto_sqs, url) != (0, 0):
            await trio.sleep(0.1)


async def test_events_posted_arrive_exactly_once_through_sqs(
    tmp_path: Path, sqs_env: dict[str, str], boto_sqs: Any
) -> None:
    data_dir = tmp_path / "data"
    with trio.fail_after(90):
        async with (
            afpipe_process(data_dir, sqs_env) as daemon,
            httpx.AsyncClient(base_url=daemon.url, timeout=30) as client,
        ):
            one = await client.post("/webhook/appsflyer", json=purchase(1))
            many = await client.post("/webhook/appsflyer", json=[purchase(n) for n in range(2, 40)])
            got = await client.get("/webhook/appsflyer", params={"event_name": "install", "x": "1"})
            again = await client.post("/webhook/appsflyer", json=purchase(1))
            assert [r.status_code for r in (one, many, got, again)] == [200] * 4
            ids = {one.json()["eventId"], got.json()["eventId"], *many.json()["eventIds"]}
            await wait_for_rows(data_dir, len(ids), timeout_s=30)
            await wait_empty(boto_sqs, sqs_env["SQS_QUEUE_URL"])
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait() == 0
    rows = warehouse_rows(data_dir)
    assert sorted(row[0] for row in rows) == sorted(ids)


async def test_kill_9_mid_load_then_restart_loses_and_duplicates_nothing(
    tmp_path: Path, sqs_env: dict[str, str], boto_sqs: Any
) -> None:
    data_dir = tmp_path / "data"
    env = {**sqs_env, "AFPIPE_VISIBILITY_TIMEOUT_S": "2"}
    acked: set[str] = set()
    with trio.fail_after(120):
        async with afpipe_process(data_dir, env) as daemon, trio.open_nursery() as nursery:
            nursery.start_soon(post_batches, daemon.url, acked)
            while len(warehouse_rows(data_dir)) < 100:
                await trio.sleep(0.02)
            daemon.signal(signal.SIGKILL)
            assert await daemon.wait() == -signal.SIGKILL
        async with afpipe_process(data_dir, env) as daemon:
            await wait_for_rows(data_dir, len(acked), timeout_s=60)
            await wait_empty(boto_sqs, sqs_env["SQS_QUEUE_URL"], timeout_s=60)
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait() == 0
    ids = [row[0] for row in warehouse_rows(data_dir)]
    assert acked <= set(ids)
    assert len(ids) == len(set(ids))


def afpipe_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "afpipe", *args],
        env=subprocess_env(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_poison_message_goes_to_the_dlq_and_redrive_brings_it_back(
    tmp_path: Path, sqs_env: dict[str, str], boto_sqs: Any
) -> None:
    data_dir = tmp_path / "data"
    queue_url, dlq_url = sqs_env["SQS_QUEUE_URL"], sqs_env["AFPIPE_DLQ_URL"]
    boto_sqs.send_message(QueueUrl=queue_url, MessageBody="this is not JSON")
    boto_sqs.send_message(QueueUrl=queue_url, MessageBody='{"event_name": "legacy", "n": 1}')
    with trio.fail_after(90):
        async with afpipe_process(data_dir, sqs_env) as daemon:
            await wait_for_rows(data_dir, 1)  # the old service's bare object loads
            await wait_empty(boto_sqs, queue_url)
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait() == 0
    assert [row[1] for row in warehouse_rows(data_dir)] == ["legacy"]
    # A long poll the daemon abandoned at exit stays open on the server for its wait
    # (1 s here) and would claim the redriven message: let it expire first.
    await trio.sleep(1.5)
    assert sqs_depth(boto_sqs, dlq_url) == (1, 0)

    env = {**sqs_env, "AFPIPE_DATA_DIR": str(data_dir)}
    peek = await trio.to_thread.run_sync(afpipe_cli, ["dlq", "peek"], env, tmp_path)
    assert peek.returncode == 0, peek.stderr
    assert "undecodable" in peek.stdout and "this is not JSON" in peek.stdout
    assert sqs_depth(boto_sqs, dlq_url)[0] == 1  # peek deletes nothing

    moved = await trio.to_thread.run_sync(afpipe_cli, ["dlq", "redrive"], env, tmp_path)
    assert moved.returncode == 0, moved.stderr
    assert "redrove 1 message" in moved.stdout
    assert sqs_depth(boto_sqs, dlq_url) == (0, 0)
    got = boto_sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1)
    assert [m["Body"] for m in got.get("Messages", [])] == ["this is not JSON"], (
        sqs_depth(boto_sqs, queue_url),
        moved.stdout,
    )


async def test_check_reports_the_queue_and_fails_readably(
    tmp_path: Path, sqs_env: dict[str, str], moto_endpoint: str
) -> None:
    env = {**sqs_env, "AFPIPE_DATA_DIR": str(tmp_path / "data")}
    good = await trio.to_thread.run_sync(afpipe_cli, ["check"], env, tmp_path)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "visibility timeout 30 s" in good.stdout and "credentials: ok" in good.stdout
    # The heartbeat extends held messages: the timeout only bounds crash recovery.
    assert "WARNING" not in good.stdout, good.stdout
    used = "visibility timeout used: 30 s (the queue's); after a crash, what the process held"
    assert used in good.stdout, good.stdout
    short = {**env, "AFPIPE_VISIBILITY_TIMEOUT_S": "4"}
    warned = await trio.to_thread.run_sync(afpipe_cli, ["check"], short, tmp_path)
    assert "visibility timeout used: 4 s (AFPIPE_VISIBILITY_TIMEOUT_S)" in warned.stdout
    assert "WARNING: a visibility timeout of 4 s" in warned.stdout
    missing = {**env, "SQS_QUEUE_URL": f"{moto_endpoint}/123456789012/no-such-queue"}
    bad = await trio.to_thread.run_sync(afpipe_cli, ["check"], missing, tmp_path)
    assert bad.returncode == 1
    assert "FAILED (queue)" in bad.stdout


def test_bad_setting_exits_2_naming_the_variable(tmp_path: Path) -> None:
    result = afpipe_cli(["serve"], {"PORT": "abc"}, tmp_path)
    assert result.returncode == 2
    assert "PORT" in result.stderr
    assert os.path.exists(tmp_path / "afpipe-data") is False  # nothing was started
