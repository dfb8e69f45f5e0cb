"""Long polling: DescribeStatement with WaitTimeSeconds.

A statement costs its submit and one DescribeStatement that the service holds until
the statement ends (or the wait elapses: then another); a drain or a timeout during
that wait still cancels the statement, whose Id is known. Timing runs on a scripted
transport under the autojump clock; the wire protocol on the Data API emulator.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from afpipe.aws import AwsClient, CredentialCache, RetryPolicy, static_credentials
from afpipe.warehouse.redshift.data_api import LONG_POLL_S, RedshiftData
from afpipe.warehouse.redshift.errors import StatementTimeout
from tests.emulators.redshift_data import RedshiftDataEmulator
from tests.test_redshift_warehouse import (
    FAKE_SERVICE,
    STATEMENT_ID,
    TARGET,
    FakeDataApi,
    counts,
    event,
    warehouse_on,
)


class LongPollApi(FakeDataApi):
    """``FakeDataApi`` whose DescribeStatement honours WaitTimeSeconds: the statement
    runs ``runs_s`` (trio time) from its submit, then is FINISHED."""

    def __init__(self, runs_s: float) -> None:
        super().__init__()
        self.runs_s = runs_s
        self.ends_at = 0.0

    async def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        operation = request.headers["X-Amz-Target"].removeprefix("RedshiftData.")
        if operation.endswith("ExecuteStatement"):
            self.ends_at = trio.current_time() + self.runs_s
        if operation == "DescribeStatement":
            left_s = self.ends_at - trio.current_time()
            await trio.sleep(max(0.0, min(body.get("WaitTimeSeconds", 0), left_s)))
            ended = trio.current_time() >= self.ends_at
            self.describes = [{"Status": "FINISHED" if ended else "STARTED"}]
        return self(request)


@pytest.fixture
async def long_poll() -> AsyncIterator[tuple[LongPollApi, AwsClient]]:
    api = LongPollApi(runs_s=0.0)
    async with AwsClient(
        credentials=CredentialCache(static_credentials("AKID", "SECRET")),
        policy=RetryPolicy(base_delay_s=0.1, max_delay_s=1.0),
        transport=httpx.MockTransport(api.handle),
        rand=lambda: 0.5,
    ) as aws:
        await aws.credentials.get()  # in a thread: before any deadline (autojump)
        yield api, aws


def data_on(
    long_poll: tuple[LongPollApi, AwsClient], runs_s: float, **limits: Any
) -> tuple[LongPollApi, RedshiftData]:
    api, aws = long_poll
    api.runs_s = runs_s
    options = {"statement_timeout_s": 120.0, "max_wait_s": 120, **limits}
    return api, RedshiftData(aws, FAKE_SERVICE, TARGET, **options)


def describe_waits(api: FakeDataApi) -> list[int | None]:
    return [b.get("WaitTimeSeconds") for _, op, b in api.calls if op == "DescribeStatement"]


async def test_a_statement_costs_its_submit_and_one_held_describe(
    autojump_clock: trio.testing.MockClock, long_poll: tuple[LongPollApi, AwsClient]
) -> None:
    api, data = data_on(long_poll, runs_s=3.0)
    with trio.fail_after(60):
        result = await data.run("DELETE FROM t")
    assert result.status == "FINISHED"
    assert api.operations == ["ExecuteStatement", "DescribeStatement"]
    assert describe_waits(api) == [LONG_POLL_S]
    assert trio.current_time() == pytest.approx(3.0)  # answered when it ended


async def test_a_statement_longer_than_the_wait_is_described_again(
    autojump_clock: trio.testing.MockClock, long_poll: tuple[LongPollApi, AwsClient]
) -> None:
    api, data = data_on(long_poll, runs_s=LONG_POLL_S + 5.0)
    with trio.fail_after(120):
        await data.run("DELETE FROM t")
    assert describe_waits(api) == [LONG_POLL_S, LONG_POLL_S]


@pytest.mark.parametrize(("timeout_s", "max_wait_s", "waits"), [(120, 7, [7]), (120, 30, [20, 10])])
async def test_the_waits_stay_within_the_polling_budget(
    autojump_clock: trio.testing.MockClock,
    long_poll: tuple[LongPollApi, AwsClient],
    timeout_s: float,
    max_wait_s: float,
    waits: list[int],
) -> None:
    api, data = data_on(
        long_poll, runs_s=1000.0, statement_timeout_s=timeout_s, max_wait_s=max_wait_s
    )
    with trio.fail_after(120), pytest.raises(StatementTimeout):
        await data.run("DELETE FROM t")
    assert describe_waits(api) == waits
    assert api.operations[-1] == "CancelStatement"


async def test_a_drain_during_the_long_poll_cancels_the_statement(
    autojump_clock: trio.testing.MockClock, long_poll: tuple[LongPollApi, AwsClient]
) -> None:
    api, data = data_on(long_poll, runs_s=60.0)
    with trio.move_on_after(2.0) as drain:
        await data.run("DELETE FROM t")
    assert drain.cancelled_caught
    # (the fake records a call when it answers: the held describe never was)
    assert api.operations == ["ExecuteStatement", "CancelStatement"]
    assert api.calls[-1][2] == {"Id": STATEMENT_ID}
    assert trio.current_time() == pytest.approx(2.0)  # the drain did not wait for the poll


# --- the Data API emulator ------------------------------------------------------------------


async def test_emulator_a_one_second_statement_costs_one_describe(
    redshift_emulator: RedshiftDataEmulator, aws_client: AwsClient
) -> None:
    """Polled every 0.25 s, as before long polling, it took five DescribeStatements."""
    warehouse = warehouse_on(redshift_emulator, aws_client)
    with trio.fail_after(20):
        await warehouse.ensure_table()
        redshift_emulator.set_latency(1.0)
        redshift_emulator.reset_counters()
        await warehouse.data.run("SELECT 1")
    assert redshift_emulator.calls == {"ExecuteStatement": 1, "DescribeStatement": 1}


async def test_emulator_a_load_is_two_batches_and_two_describes(
    redshift_emulator: RedshiftDataEmulator, aws_client: AwsClient
) -> None:
    warehouse = warehouse_on(redshift_emulator, aws_client)
    with trio.fail_after(30):
        await warehouse.ensure_table()
        redshift_emulator.set_latency(0.3)  # per statement: 0.6 s to stage, 0.6 s to merge
        redshift_emulator.reset_counters()
        result = await warehouse.load([event(n) for n in range(20)])
    assert result.loaded == 20 and counts(redshift_emulator) == (20, 20)
    assert redshift_emulator.calls == {"BatchExecuteStatement": 2, "DescribeStatement": 2}
