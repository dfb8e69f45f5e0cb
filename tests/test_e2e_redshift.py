"""End to end: the real ``afpipe serve`` with SQS on moto and Redshift on two emulators."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.daemon import afpipe_process
from tests.emulators.redshift_data import (
    TEST_CLUSTER,
    TEST_DATABASE,
    TEST_DB_USER,
    RedshiftDataEmulator,
)
from tests.fixtures.moto import MOTO_REGION, sqs_depth
from tests.fixtures.redshift import redshift_env
from tests.load import post_batches

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


@pytest.fixture
def env(
    moto_endpoint: str,
    make_sqs_queue: Callable[..., str],
    redshift_emulator: RedshiftDataEmulator,
    redshift_secondary_emulator: RedshiftDataEmulator,
) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL_SQS": moto_endpoint,
        "AWS_REGION": MOTO_REGION,
        "SQS_QUEUE_URL": make_sqs_queue("afpipe-rs", VisibilityTimeout="30"),
        "AFPIPE_DLQ_URL": make_sqs_queue("afpipe-rs-dlq"),
        "AFPIPE_SECONDARY_RETRY_QUEUE_URL": make_sqs_queue("afpipe-rs-retry"),
        "AFPIPE_BATCH_LINGER_MS": "100",
        # What a killed daemon held comes back within seconds, not after the queue's
        # 30 s (the heartbeat extends what a live one holds).
        "AFPIPE_VISIBILITY_TIMEOUT_S": "6",
        "AFPIPE_RECEIVE_WAIT_S": "1",
        "SQS_POLLING_INTERVAL": "50",
        **redshift_env(redshift_emulator),
        "SECONDARY_REDSHIFT_ENABLED": "true",
        "SECONDARY_REDSHIFT_ENDPOINT": redshift_secondary_emulator.url,
        "SECONDARY_REDSHIFT_CLUSTER_IDENTIFIER": TEST_CLUSTER,
        "SECONDARY_REDSHIFT_DATABASE": TEST_DATABASE,
        "SECONDARY_REDSHIFT_DB_USER": TEST_DB_USER,
    }


def ids_in(emu: RedshiftDataEmulator) -> list[str]:
    try:
        return [str(row[0]) for row in emu.query("SELECT id FROM public.appsflyer_events")]
    except Exception:  # the table does not exist yet
        return []


async def wait_ids(emu: RedshiftDataEmulator, expected: set[str], timeout_s: float = 60) -> None:
    with trio.fail_after(timeout_s):
        while not expected <= set(ids_in(emu)):
            await trio.sleep(0.1)


async def post_until(
    url: str, acked: set[str], enough: Callable[[], bool], workers: int = 3
) -> None:
    await post_batches(url, acked, workers=workers, until=enough)


async def test_dual_write_exactly_once_also_after_kill_9(
    tmp_path: Path,
    env: dict[str, str],
    redshift_emulator: RedshiftDataEmulator,
    redshift_secondary_emulator: RedshiftDataEmulator,
    boto_sqs: Any,
) -> None:
    data_dir = tmp_path / "data"
    acked: set[str] = set()
    with trio.fail_after(180):
        async with afpipe_process(data_dir, env) as daemon:
            await post_until(daemon.url, acked, lambda: len(acked) >= 300)
            # Kill it while it is loading, then restart: nothing lost, nothing twice.
            while len(ids_in(redshift_emulator)) < 100:
                await trio.sleep(0.05)
            daemon.signal(signal.SIGKILL)
            assert await daemon.wait() == -signal.SIGKILL
        async with afpipe_process(data_dir, env) as daemon:
            await post_until(daemon.url, acked, lambda: len(acked) >= 400)
            await wait_ids(redshift_emulator, acked)
            await wait_ids(redshift_secondary_emulator, acked)
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait() == 0
    for emu in (redshift_emulator, redshift_secondary_emulator):
        ids = ids_in(emu)
        assert acked <= set(ids)
        assert len(ids) == len(set(ids)), "duplicate rows"
    assert redshift_emulator.crashes == [] and redshift_secondary_emulator.crashes == []


async def test_secondary_outage_never_blocks_the_primary_and_it_catches_up(
    tmp_path: Path,
    env: dict[str, str],
    redshift_emulator: RedshiftDataEmulator,
    redshift_secondary_emulator: RedshiftDataEmulator,
    boto_sqs: Any,
) -> None:
    data_dir = tmp_path / "data"
    acked: set[str] = set()
    env = {**env, "AFPIPE_SECONDARY_TIMEOUT_S": "1", "REDSHIFT_STATEMENT_TIMEOUT": "2000"}
    with trio.fail_after(180):
        async with afpipe_process(data_dir, env) as daemon:
            await post_until(daemon.url, acked, lambda: len(acked) >= 30, workers=1)
            await wait_ids(redshift_secondary_emulator, acked)  # both healthy first
            redshift_secondary_emulator.hang_all_statements(True)
            await post_until(daemon.url, acked, lambda: len(acked) >= 200)
            await wait_ids(redshift_emulator, acked, timeout_s=30)  # the primary goes on
            assert not acked <= set(ids_in(redshift_secondary_emulator))
            # ... and its messages are deleted (once the secondary's events are handed off).
            while sqs_depth(boto_sqs, env["SQS_QUEUE_URL"]) != (0, 0):
                await trio.sleep(0.1)
            handed = [e for e in daemon.logs if e.get("message", "").startswith("secondary events")]
            assert handed, "the missed events should have gone to the retry queue"
            redshift_secondary_emulator.hang_all_statements(False)
            await wait_ids(redshift_secondary_emulator, acked, timeout_s=90)
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait() == 0
    for emu in (redshift_emulator, redshift_secondary_emulator):
        ids = ids_in(emu)
        assert set(ids) == acked and len(ids) == len(acked)
