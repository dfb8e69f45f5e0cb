"""End to end: the real ``afpipe serve`` (SQS on moto) while Redshift is down or refuses.

Ingest depends on the queue only: a warehouse that is down at start must not stop
the webhook or turn /ready to 503 (load balancers would take every instance out
during a Redshift maintenance window). A warehouse that refuses afpipe's identity
is a configuration error: exit 2 naming it, not an endless retry. A drain fits in
AFPIPE_DRAIN_TIMEOUT_S even when Redshift does not answer a CancelStatement.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.daemon import afpipe_process
from tests.emulators.redshift_data import RedshiftDataEmulator
from tests.fixtures.moto import MOTO_REGION, sqs_depth
from tests.fixtures.redshift import redshift_env
from tests.load import purchase

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


@pytest.fixture
def env(
    moto_endpoint: str,
    make_sqs_queue: Callable[..., str],
    redshift_emulator: RedshiftDataEmulator,
) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL_SQS": moto_endpoint,
        "AWS_REGION": MOTO_REGION,
        "SQS_QUEUE_URL": make_sqs_queue("afpipe-outage", VisibilityTimeout="10"),
        "AFPIPE_DLQ_URL": make_sqs_queue("afpipe-outage-dlq"),
        "AFPIPE_BATCH_LINGER_MS": "50",
        "AFPIPE_RECEIVE_WAIT_S": "1",
        "SQS_POLLING_INTERVAL": "50",
        "AFPIPE_READY_FAIL_AFTER_S": "1",
        **redshift_env(redshift_emulator),
    }


def ids_in(emu: RedshiftDataEmulator) -> set[str]:
    try:
        return {str(row[0]) for row in emu.query("SELECT id FROM public.appsflyer_events")}
    except Exception:  # the table does not exist yet
        return set()


async def post_events(url: str, numbers: range) -> set[str]:
    acked = set()
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for n in numbers:
            answer = await client.post("/webhook/appsflyer", json=purchase(n))
            assert answer.status_code == 200, answer.text
            acked.add(answer.json()["eventId"])
    return acked


async def test_redshift_down_at_start_never_stops_ingest_nor_readiness(
    tmp_path: Path, env: dict[str, str], redshift_emulator: RedshiftDataEmulator
) -> None:
    redshift_emulator.set_unavailable(True)  # every Data API call: 503, from the start
    with trio.fail_after(90):
        async with afpipe_process(tmp_path / "data", env) as daemon:
            acked = await post_events(daemon.url, range(30))
            await trio.sleep(2.5)  # well past AFPIPE_READY_FAIL_AFTER_S
            async with httpx.AsyncClient(base_url=daemon.url, timeout=30) as client:
                ready = await client.get("/ready")
            assert ready.status_code == 200, ready.text
            assert daemon.process.returncode is None
            assert not ids_in(redshift_emulator)
            redshift_emulator.set_unavailable(False)  # the maintenance window ends
            acked |= await post_events(daemon.url, range(30, 40))
            while not acked <= ids_in(redshift_emulator):
                await trio.sleep(0.1)
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait() == 0
    assert ids_in(redshift_emulator) == acked


async def test_a_refused_identity_ends_the_process_with_exit_2_losing_nothing(
    tmp_path: Path,
    env: dict[str, str],
    redshift_emulator: RedshiftDataEmulator,
    boto_sqs: Any,
) -> None:
    """The Data API refuses afpipe's signature (another secret key than the
    emulator's): no retry can fix that, so the process says so and exits 2; the
    event it acknowledged stays on the queue."""
    wrong = {**env, "AWS_SECRET_ACCESS_KEY": "not-the-emulators-secret"}
    with trio.fail_after(60):
        async with afpipe_process(tmp_path / "data", wrong) as daemon:
            await post_events(daemon.url, range(1))
            code = await daemon.wait()
    assert code == 2, daemon.output()
    assert "configuration error: AWS credentials / IAM policy: redshift-data" in daemon.output()
    assert sum(sqs_depth(boto_sqs, env["SQS_QUEUE_URL"])) == 1  # not lost


async def test_the_drain_fits_its_timeout_when_redshift_ignores_the_cancel(
    tmp_path: Path, env: dict[str, str], redshift_emulator: RedshiftDataEmulator
) -> None:
    """A load hangs in Redshift and CancelStatement takes 10 s to answer: SIGTERM
    still ends the process within AFPIPE_DRAIN_TIMEOUT_S (plus process start-up
    slack), and what it held goes back on the queue."""
    env = {**env, "AFPIPE_DRAIN_TIMEOUT_S": "3", "REDSHIFT_STATEMENT_TIMEOUT": "60000"}
    with trio.fail_after(60):
        async with afpipe_process(tmp_path / "data", env) as daemon:
            await post_events(daemon.url, range(1))
            while not ids_in(redshift_emulator):  # the table exists, a load went through
                await trio.sleep(0.05)
            redshift_emulator.hang_all_statements(True)
            redshift_emulator.set_cancel_delay(10.0)
            await post_events(daemon.url, range(1, 5))
            while redshift_emulator.active_statements() == 0:
                await trio.sleep(0.05)
            started = trio.current_time()
            daemon.signal(signal.SIGTERM)
            code = await daemon.wait()
            took_s = trio.current_time() - started
    assert code == 0, daemon.output()
    assert took_s < 3.0 + 1.0, f"drain took {took_s:.1f} s"
