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
from afpipe.warehouse.redshift.errors import StatementDataError, StatementTimeout
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


class HeldSubmitApi(LongPollApi):
    """Also holds a submit that carries WaitTimeSeconds until its statement ends (or
    the wait elapses) and answers its Status then, as the Data API documents; a
    FAILED statement's Error comes only from DescribeStatement."""

    def __init__(self, runs_s: float, final: str = "FINISHED") -> None:
        super().__init__(runs_s)
        self.final = final
        self.tokens: list[str] = []  # of every submit, as it arrives
        self.late_s = 0.0  # a held submit answers this long after its wait (the network)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        operation = request.headers["X-Amz-Target"].removeprefix("RedshiftData.")
        if operation.endswith("ExecuteStatement"):
            self.tokens.append(body["ClientToken"])
        if operation.endswith("ExecuteStatement") and "WaitTimeSeconds" in body:
            self.ends_at = trio.current_time() + self.runs_s
            await trio.sleep(min(body["WaitTimeSeconds"], self.runs_s) + self.late_s)
            self(request)  # recorded
            ended = trio.current_time() >= self.ends_at
            status = self.final if ended else "STARTED"
            return httpx.Response(200, json={"Id": STATEMENT_ID, "Status": status})
        if operation == "DescribeStatement" and self.final == "FAILED":
            self.describes = [{"Status": "FAILED", "Error": "ERROR: invalid input syntax for json"}]
            return self(request)
        return await super().handle(request)


@pytest.fixture
async def long_poll() -> AsyncIterator[tuple[HeldSubmitApi, AwsClient]]:
    api = HeldSubmitApi(runs_s=0.0)
    async with AwsClient(
        credentials=CredentialCache(static_credentials("AKID", "SECRET")),
        policy=RetryPolicy(base_delay_s=0.1, max_delay_s=1.0),
        transport=httpx.MockTransport(api.handle),
        rand=lambda: 0.5,
    ) as aws:
        await aws.credentials.get()  # in a thread: before any deadline (autojump)
        yield api, aws


def data_on(
    long_poll: tuple[HeldSubmitApi, AwsClient], runs_s: float, **limits: Any
) -> tuple[HeldSubmitApi, RedshiftData]:
    api, aws = long_poll
    api.runs_s = runs_s
    options = {"statement_timeout_s": 120.0, "max_wait_s": 120, **limits}
    return api, RedshiftData(aws, FAKE_SERVICE, TARGET, **options)


def describe_waits(api: FakeDataApi) -> list[int | None]:
    return [b.get("WaitTimeSeconds") for _, op, b in api.calls if op == "DescribeStatement"]


async def test_a_statement_costs_its_submit_and_one_held_describe(
    autojump_clock: trio.testing.MockClock, long_poll: tuple[HeldSubmitApi, AwsClient]
) -> None:
    api, data = data_on(long_poll, runs_s=3.0)
    with trio.fail_after(60):
        result = await data.run("DELETE FROM t")
    assert result.status == "FINISHED"
    assert api.operations == ["ExecuteStatement", "DescribeStatement"]
    assert describe_waits(api) == [LONG_POLL_S]
    assert trio.current_time() == pytest.approx(3.0)  # answered when it ended


async def test_a_statement_longer_than_the_wait_is_described_again(
    autojump_clock: trio.testing.MockClock, long_poll: tuple[HeldSubmitApi, AwsClient]
) -> None:
    api, data = data_on(long_poll, runs_s=LONG_POLL_S + 5.0)
    with trio.fail_after(120):
        await data.run("DELETE FROM t")
    assert describe_waits(api) == [LONG_POLL_S, LONG_POLL_S]


@pytest.mark.parametrize(("timeout_s", "max_wait_s", "waits"), [(120, 7, [7]), (120, 30, [20, 10])])
async def test_the_waits_stay_within_the_polling_budget(
    autojump_clock: trio.testing.MockClock,
    long_poll: tuple[HeldSubmitApi, AwsClient],
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
    autojump_clock: trio.testing.MockClock, long_poll: tuple[HeldSubmitApi, AwsClient]
) -> None:
    api, data = data_on(long_poll, runs_s=60.0)
    with trio.move_on_after(2.0) as drain:
        await data.run("DELETE FROM t")
    assert drain.cancelled_caught
    # (the fake records a call when it answers: the held describe never was)
    assert api.operations == ["ExecuteStatement", "CancelStatement"]
    assert api.calls[-1][2] == {"Id": STATEMENT_ID}
    assert trio.current_time() == pytest.approx(2.0)  # the drain did not wait for the poll


async def test_a_held_submit_that_ends_within_its_wait_costs_no_describe(
    autojump_clock: trio.testing.MockClock, long_poll: tuple[HeldSubmitApi, AwsClient]
) -> None:
    api, data = data_on(long_poll, runs_s=3.0)
    with trio.fail_after(60):
        result = await data.run(["INSERT INTO s VALUES (1)"], held=True)
    assert result.status == "FINISHED"
    assert api.operations == ["BatchExecuteStatement"]
    assert api.calls[0][2]["WaitTimeSeconds"] == LONG_POLL_S
    assert trio.current_time() == pytest.approx(3.0)  # answered when it ended


async def test_a_held_submit_that_failed_is_described_for_its_error(
    autojump_clock: trio.testing.MockClock, long_poll: tuple[HeldSubmitApi, AwsClient]
) -> None:
    api, data = data_on(long_poll, runs_s=1.0)
    api.final = "FAILED"
    with trio.fail_after(60), pytest.raises(StatementDataError, match="invalid input syntax"):
        await data.run(["INSERT INTO s VALUES (1)"], held=True)
    assert api.operations == ["BatchExecuteStatement", "DescribeStatement"]


async def test_a_held_submit_still_running_keeps_to_the_same_budget(
    autojump_clock: trio.testing.MockClock, long_poll: tuple[HeldSubmitApi, AwsClient]
) -> None:
    """What the held submit waited counts: the statement gets REDSHIFT_MAX_RETRIES
    seconds of waiting in all, not that plus the submit's wait."""
    api, data = data_on(long_poll, runs_s=1000.0, max_wait_s=30)
    with trio.fail_after(120), pytest.raises(StatementTimeout):
        await data.run(["INSERT INTO s VALUES (1)"], held=True)
    assert describe_waits(api) == [10]  # 30 s in all, 20 of them in the submit
    assert api.operations[-1] == "CancelStatement"
    assert trio.current_time() == pytest.approx(30.0)


async def test_a_submit_is_not_held_unless_asked(
    autojump_clock: trio.testing.MockClock, long_poll: tuple[HeldSubmitApi, AwsClient]
) -> None:
    api, data = data_on(long_poll, runs_s=3.0)
    with trio.fail_after(60):
        await data.run(["INSERT INTO s VALUES (1)"])
    assert "WaitTimeSeconds" not in api.calls[0][2]  # a drain must know the Id to cancel
    assert api.operations == ["BatchExecuteStatement", "DescribeStatement"]


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


async def test_emulator_a_load_is_two_batches_and_one_describe(
    redshift_emulator: RedshiftDataEmulator, aws_client: AwsClient
) -> None:
    warehouse = warehouse_on(redshift_emulator, aws_client)
    with trio.fail_after(30):
        await warehouse.ensure_table()
        redshift_emulator.set_latency(0.3)  # per statement: 0.6 s to stage (held), 0.6 to merge
        redshift_emulator.reset_counters()
        result = await warehouse.load([event(n) for n in range(20)])
    assert result.loaded == 20 and counts(redshift_emulator) == (20, 20)
    assert redshift_emulator.calls == {"BatchExecuteStatement": 2, "DescribeStatement": 1}


async def test_a_drain_during_a_held_submit_cancels_the_statement_by_its_token(
    autojump_clock: trio.testing.MockClock, long_poll: tuple[HeldSubmitApi, AwsClient]
) -> None:
    """The held submit has not answered the Id: the same call with the same
    ClientToken does (starting nothing new), then CancelStatement."""
    api, data = data_on(long_poll, runs_s=60.0)
    with trio.move_on_after(2.0) as drain:
        await data.run(["INSERT INTO s VALUES (1)"], held=True)
    assert drain.cancelled_caught
    # (the fake records a call when it answers: the held submit never was)
    assert api.operations == ["BatchExecuteStatement", "CancelStatement"]
    [again] = [body for _, op, body in api.calls if op == "BatchExecuteStatement"]
    assert "WaitTimeSeconds" not in again
    assert api.tokens == [api.tokens[0]] * 2  # the same call: the same statement
    assert api.calls[-1][2] == {"Id": STATEMENT_ID}
    assert trio.current_time() == pytest.approx(2.0)


async def test_a_held_submit_answered_after_the_whole_budget_times_out_cleanly(
    autojump_clock: trio.testing.MockClock, long_poll: tuple[HeldSubmitApi, AwsClient]
) -> None:
    """The submit held for the whole statement timeout and its answer came a little
    later still: nothing is left to wait, so the statement is cancelled as timed out
    (the process crashed on a negative timeout before: CI found it)."""
    api, data = data_on(long_poll, runs_s=1000.0, statement_timeout_s=2.0)
    api.late_s = 0.1
    with trio.fail_after(60), pytest.raises(StatementTimeout):
        await data.run(["INSERT INTO s VALUES (1)"], held=True)
    assert api.calls[0][2]["WaitTimeSeconds"] == 2
    assert api.operations == ["BatchExecuteStatement", "CancelStatement"]
