"""End to end with S3 staging: the real ``afpipe serve``, SQS and S3 on moto, and the
Redshift emulator running each COPY against moto's S3."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from afpipe.warehouse.redshift import sql
from tests.daemon import afpipe_process
from tests.emulators.redshift_data import RedshiftDataEmulator
from tests.fixtures.moto import MOTO_REGION, sqs_depth
from tests.fixtures.redshift import REDSHIFT_TARGET, redshift_env
from tests.fixtures.s3 import s3_keys
from tests.load import post_batches, purchase
from tests.test_e2e_redshift import ids_in, wait_ids

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

COPY_ROLE = "arn:aws:iam::123456789012:role/afpipe-copy"


@pytest.fixture
def env(
    moto_endpoint: str,
    make_sqs_queue: Callable[..., str],
    redshift_emulator: RedshiftDataEmulator,
    s3_bucket: str,
) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL_SQS": moto_endpoint,
        "AWS_ENDPOINT_URL_S3": moto_endpoint,
        "AWS_REGION": MOTO_REGION,
        "SQS_QUEUE_URL": make_sqs_queue("afpipe-st", VisibilityTimeout="30"),
        "AFPIPE_DLQ_URL": make_sqs_queue("afpipe-st-dlq"),
        "AFPIPE_S3_STAGING_URI": f"s3://{s3_bucket}/loads",
        "AFPIPE_COPY_IAM_ROLE": COPY_ROLE,
        "AFPIPE_BATCH_LINGER_MS": "300",
        # What a killed daemon held comes back soon (the heartbeat extends live ones).
        "AFPIPE_VISIBILITY_TIMEOUT_S": "6",
        "AFPIPE_RECEIVE_WAIT_S": "1",
        "SQS_POLLING_INTERVAL": "50",
        **redshift_env(redshift_emulator),
    }


async def staged_loads(url: str) -> float:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        text = (await client.get("/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('afpipe_staged_loads_total{target="primary"}')
    )


async def test_large_batches_load_by_copy_exactly_once_also_after_kill_9(
    tmp_path: Path,
    env: dict[str, str],
    redshift_emulator: RedshiftDataEmulator,
    boto_s3: Any,
    boto_sqs: Any,
    s3_bucket: str,
) -> None:
    data_dir = tmp_path / "data"
    acked: set[str] = set()
    with trio.fail_after(180):
        async with afpipe_process(data_dir, env) as daemon:
            # One message of 400 events (~200 KB) is one batch, too large for one
            # inline transaction (100 KB of SQL): COPY loads it.
            async with httpx.AsyncClient(base_url=daemon.url, timeout=30) as client:
                answer = await client.post(
                    "/webhook/appsflyer", json=[purchase(50_000_000 + n) for n in range(400)]
                )
            assert answer.status_code == 200
            acked.update(answer.json()["eventIds"])
            await wait_ids(redshift_emulator, acked)
            assert await staged_loads(daemon.url) >= 1
            await post_batches(daemon.url, acked, until=lambda: len(acked) >= 600)
            await post_batches(daemon.url, acked, until=lambda: len(acked) >= 1200)
            while len(ids_in(redshift_emulator)) < 700:
                await trio.sleep(0.05)
            daemon.signal(signal.SIGKILL)
            assert await daemon.wait() == -signal.SIGKILL
        async with afpipe_process(data_dir, env) as daemon:
            await post_batches(daemon.url, acked, until=lambda: len(acked) >= 1500)
            await wait_ids(redshift_emulator, acked)
            # Redelivered messages of the killed daemon load again, deduplicated.
            while sqs_depth(boto_sqs, env["SQS_QUEUE_URL"]) != (0, 0):
                await trio.sleep(0.1)
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait() == 0
    ids = ids_in(redshift_emulator)
    assert acked <= set(ids)
    assert len(ids) == len(set(ids)), "duplicate rows"
    assert redshift_emulator.crashes == []
    # What a clean run staged it deleted; only a kill -9 can leave an object behind
    # (for the bucket's lifecycle rule), and at most one per writer.
    assert len(s3_keys(boto_s3, s3_bucket)) <= 2


async def test_a_row_redshift_refuses_in_a_copy_is_isolated_with_its_real_reason(
    tmp_path: Path,
    env: dict[str, str],
    redshift_emulator: RedshiftDataEmulator,
    redshift_data_client: Any,
    boto_s3: Any,
    boto_sqs: Any,
    s3_bucket: str,
) -> None:
    table = sql.table_name("appsflyer_events")
    narrow = sql.create_table_sql(table).replace(
        "event_name VARCHAR(255)", "event_name VARCHAR(12)"
    )
    statement = redshift_data_client.execute_statement(Sql=narrow, **REDSHIFT_TARGET)
    while redshift_data_client.describe_statement(Id=statement["Id"])["Status"] != "FINISHED":
        await trio.sleep(0.05)
    good = [purchase(n) for n in range(400)]  # event_name "af_purchase" fits
    bad = [{**purchase(10_000 + n), "event_name": "a_name_longer_than_twelve"} for n in range(3)]
    events = good[:200] + bad + good[200:]
    with trio.fail_after(120):
        async with (
            afpipe_process(tmp_path / "data", env) as daemon,
            httpx.AsyncClient(base_url=daemon.url, timeout=30) as client,
        ):
            answer = await client.post("/webhook/appsflyer", json=events)
            assert answer.status_code == 200
            ids = answer.json()["eventIds"]
            good_ids = set(ids[:200] + ids[203:])
            await wait_ids(redshift_emulator, good_ids)
            while sqs_depth(boto_sqs, env["SQS_QUEUE_URL"]) != (0, 0):
                await trio.sleep(0.1)
            assert await staged_loads(daemon.url) >= 1
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait() == 0
    assert set(ids_in(redshift_emulator)) == good_ids
    letters = boto_sqs.receive_message(
        QueueUrl=env["AFPIPE_DLQ_URL"], MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    )["Messages"]
    reasons = [m["MessageAttributes"]["afpipe_reason"]["StringValue"] for m in letters]
    bodies = "".join(m["Body"] for m in letters)
    assert all(event["idfv"] in bodies for event in bad)
    # Bisection ends inline, so the reason is Redshift's own for the row, not COPY's
    # "check sys_load_error_detail".
    assert reasons and all("value too long" in reason for reason in reasons), reasons
    assert s3_keys(boto_s3, s3_bucket) == set()
