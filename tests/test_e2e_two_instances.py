"""End to end: an HA pair. Two real ``afpipe serve`` instances share one SQS queue
(moto) and load one primary and one secondary Redshift (emulators), and every
event is posted to both, as a sender's retry lands on the other instance behind
a load balancer. Under SNAPSHOT isolation (Redshift's default) two overlapping
``INSERT ... WHERE NOT EXISTS`` of one id both commit; the loads' lock must leave
exactly one row per acknowledged event anyway, under SERIALIZABLE too (where
nothing may be dead-lettered for a conflict).
"""

from __future__ import annotations

import dataclasses
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.daemon import Daemon, afpipe_process
from tests.emulators.redshift_data import (
    TEST_CLUSTER,
    TEST_DATABASE,
    TEST_DB_USER,
    RedshiftDataEmulator,
)
from tests.fixtures.moto import MOTO_REGION, sqs_depth
from tests.fixtures.redshift import (
    EMULATOR_SETTINGS,
    redshift_env,
    settings_with_s3,
    start_emulator,
)
from tests.load import purchase
from tests.test_workers import free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

EVENTS = 1_000
CONCURRENT_SENDERS = 16


@dataclasses.dataclass(frozen=True)
class Case:
    isolation: str
    workers: int  # AFPIPE_WORKERS of each instance


CASES = [Case("snapshot", 1), Case("snapshot", 2), Case("serializable", 1)]


@pytest.fixture
def emulators(
    request: pytest.FixtureRequest, moto_endpoint: str
) -> Iterator[tuple[RedshiftDataEmulator, RedshiftDataEmulator]]:
    settings = dataclasses.replace(EMULATOR_SETTINGS, isolation=request.param)
    primary = start_emulator(settings_with_s3(moto_endpoint, settings))
    secondary = start_emulator(settings_with_s3(moto_endpoint, settings))
    try:
        for emu in (primary, secondary):
            emu.set_latency(0.02)  # statements hold their transaction open a while
        yield primary, secondary
    finally:
        primary.close()
        secondary.close()
    assert primary.crashes == [] and secondary.crashes == []


def ids_in(emu: RedshiftDataEmulator) -> list[str]:
    try:
        return [str(row[0]) for row in emu.query("SELECT id FROM public.appsflyer_events")]
    except Exception:  # the table does not exist yet
        return []


def holds_all(emu: RedshiftDataEmulator, acked: set[str]) -> bool:
    return acked <= set(ids_in(emu))


@asynccontextmanager
async def instances(
    tmp_path: Path, env: dict[str, str], workers: int
) -> AsyncIterator[list[Daemon]]:
    async with AsyncExitStack() as stack:
        daemons = []
        for name in ("a", "b"):
            own = {"AFPIPE_WORKERS": str(workers)}
            if workers > 1:
                own["PORT"] = str(free_port())
            (tmp_path / name).mkdir()
            daemon = await stack.enter_async_context(
                afpipe_process(tmp_path / name / "data", {**env, **own})
            )
            daemons.append(daemon)
        yield daemons


async def post_each_to_both(urls: list[str], acked: set[str], refused: list[int]) -> None:
    """Every event once to each instance, at the same moment, single-event POSTs."""
    numbers_in, numbers_out = trio.open_memory_channel[int](0)

    async def sender(client: httpx.AsyncClient, numbers: trio.MemoryReceiveChannel[int]) -> None:
        async with numbers:
            async for n in numbers:
                async with trio.open_nursery() as both:
                    for url in urls:
                        both.start_soon(post_one, client, url, n)

    async def post_one(client: httpx.AsyncClient, url: str, n: int) -> None:
        response = await client.post(f"{url}/webhook/appsflyer", json=purchase(n))
        if response.status_code == 200:
            acked.add(response.json()["eventId"])
        else:
            refused.append(response.status_code)

    async with httpx.AsyncClient(timeout=30) as client, trio.open_nursery() as nursery:
        async with numbers_out:
            for _ in range(CONCURRENT_SENDERS):
                nursery.start_soon(sender, client, numbers_out.clone())
        async with numbers_in:
            for n in range(EVENTS):
                await numbers_in.send(n)


async def wait_until(done: Callable[[], bool], timeout_s: float) -> None:
    with trio.fail_after(timeout_s):
        while not done():
            await trio.sleep(0.2)


@pytest.mark.parametrize(
    ("emulators", "case"),
    [(case.isolation, case) for case in CASES],
    indirect=["emulators"],
    ids=[f"{case.isolation}-workers{case.workers}" for case in CASES],
)
async def test_two_instances_every_event_posted_to_both_make_one_row_each(
    tmp_path: Path,
    moto_endpoint: str,
    make_sqs_queue: Callable[..., str],
    emulators: tuple[RedshiftDataEmulator, RedshiftDataEmulator],
    case: Case,
    boto_sqs: Any,
) -> None:
    primary, secondary = emulators
    queue_url = make_sqs_queue("afpipe-ha", VisibilityTimeout="30")
    dlq_url = make_sqs_queue("afpipe-ha-dlq")
    env = {
        "AWS_ENDPOINT_URL_SQS": moto_endpoint,
        "AWS_REGION": MOTO_REGION,
        "SQS_QUEUE_URL": queue_url,
        "AFPIPE_DLQ_URL": dlq_url,
        "AFPIPE_SECONDARY_RETRY_QUEUE_URL": make_sqs_queue("afpipe-ha-retry"),
        "AFPIPE_BATCH_LINGER_MS": "100",
        "AFPIPE_RECEIVE_WAIT_S": "1",
        "SQS_POLLING_INTERVAL": "50",
        **redshift_env(primary),
        "SECONDARY_REDSHIFT_ENABLED": "true",
        "SECONDARY_REDSHIFT_ENDPOINT": secondary.url,
        "SECONDARY_REDSHIFT_CLUSTER_IDENTIFIER": TEST_CLUSTER,
        "SECONDARY_REDSHIFT_DATABASE": TEST_DATABASE,
        "SECONDARY_REDSHIFT_DB_USER": TEST_DB_USER,
    }
    acked: set[str] = set()
    refused: list[int] = []
    with trio.fail_after(240):
        async with instances(tmp_path, env, case.workers) as daemons:
            await post_each_to_both([daemon.url for daemon in daemons], acked, refused)
            assert refused == [] and len(acked) == EVENTS  # one id per event, both acked it
            for emu in (primary, secondary):
                await wait_until(partial(holds_all, emu, acked), 120)
            await wait_until(lambda: sqs_depth(boto_sqs, queue_url) == (0, 0), 60)
            for daemon in daemons:
                daemon.signal(signal.SIGTERM)
            for daemon in daemons:
                assert await daemon.wait() == 0, daemon.output()
    for emu in (primary, secondary):
        ids = ids_in(emu)
        assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} duplicate rows"
        assert set(ids) == acked
    assert sqs_depth(boto_sqs, dlq_url) == (0, 0)  # no conflict was dead-lettered
