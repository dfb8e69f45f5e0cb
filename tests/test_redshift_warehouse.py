"""The Redshift warehouse and its Data API client.

Polling, timeouts and cancellation run on a scripted transport under the
autojump clock; loads, idempotence, bisection and faults run against the
Data API emulator (a real clock, a time limit on each test).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from afpipe.aws import AwsClient, AwsService, CredentialCache, RetryPolicy, static_credentials
from afpipe.aws.service import redshift_data_service
from afpipe.errors import ConfigError, PermanentError, TransientError
from afpipe.event import Event, to_row
from afpipe.warehouse.redshift import RedshiftWarehouse, Target, sql
from afpipe.warehouse.redshift.data_api import RedshiftData
from afpipe.warehouse.redshift.errors import (
    ABORTED,
    CONFLICT,
    FAILED,
    TIMED_OUT,
    RefusedRequest,
    StatementAborted,
    StatementConflict,
    StatementDataError,
    StatementNotFound,
    StatementSystemError,
    StatementTimeout,
    UnclassifiedStatementError,
)
from tests.emulators.redshift_data import (
    TEST_CLUSTER,
    TEST_DATABASE,
    TEST_DB_USER,
    RedshiftDataEmulator,
)
from tests.events import from_payload
from tests.fixtures.moto import FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY
from tests.fixtures.redshift import REDSHIFT_REGION, start_emulator

TARGET = Target(cluster_identifier=TEST_CLUSTER, database=TEST_DATABASE, db_user=TEST_DB_USER)
STATEMENT_ID = "0b3c6a1e-1111-2222-3333-444455556666"
FAKE_SERVICE = redshift_data_service("us-east-1", {"AWS_ENDPOINT_URL": "https://aws.test"})


def event(n: int, **fields: Any) -> Event:
    payload = {"event_name": "af_purchase", "app_id": "app", "n": n}
    payload["event_time"] = f"2024-03-02 12:{n // 60 % 60:02d}:{n % 60:02d}.123"
    return from_payload({**payload, **fields})


def service_for(emu: RedshiftDataEmulator) -> AwsService:
    return redshift_data_service(REDSHIFT_REGION, {"AWS_ENDPOINT_URL_REDSHIFT_DATA": emu.url})


def warehouse_on(
    emu: RedshiftDataEmulator, aws: AwsClient, table: str = "appsflyer_events", **options: Any
) -> RedshiftWarehouse:
    options = {"statement_timeout_s": 10.0, "max_wait_s": 200, **options}
    return RedshiftWarehouse(aws, service_for(emu), TARGET, table, **options)


def counts(emu: RedshiftDataEmulator, table: str = "appsflyer_events") -> tuple[int, int]:
    [(rows, ids)] = emu.query(f"SELECT count(*), count(DISTINCT id) FROM {table}")
    return int(rows), int(ids)


# --- the client on a scripted transport ------------------------------------------------------


class FakeDataApi:
    """Answers Data API calls: statements start at once, DescribeStatement follows a script."""

    def __init__(self, *describes: dict[str, Any]) -> None:
        self.describes = list(describes) or [{"Status": "FINISHED"}]
        self.failures: dict[str, list[httpx.Response]] = {}  # by operation, answered first
        self.pages: list[dict[str, Any]] = []
        self.calls: list[tuple[float, str, dict[str, Any]]] = []

    @property
    def operations(self) -> list[str]:
        return [operation for _, operation, _ in self.calls]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        operation = request.headers["X-Amz-Target"].removeprefix("RedshiftData.")
        body = json.loads(request.content)
        self.calls.append((trio.current_time(), operation, body))
        if self.failures.get(operation):
            return self.failures[operation].pop(0)
        if operation == "DescribeStatement":
            answer = self.describes.pop(0) if len(self.describes) > 1 else self.describes[0]
            return httpx.Response(200, json={"Id": body["Id"], **answer})
        if operation == "GetStatementResult":
            return httpx.Response(200, json=self.pages.pop(0))
        if operation == "CancelStatement":
            return httpx.Response(200, json={"Status": True})
        return httpx.Response(200, json={"Id": STATEMENT_ID})


def error(status: int, code: str) -> httpx.Response:
    return httpx.Response(status, json={"__type": code, "message": f"{code} happened"})


@pytest.fixture
async def fake_api() -> AsyncIterator[tuple[FakeDataApi, RedshiftData]]:
    api = FakeDataApi()
    async with AwsClient(
        credentials=CredentialCache(static_credentials("AKID", "SECRET")),
        policy=RetryPolicy(base_delay_s=0.1, max_delay_s=1.0),
        transport=httpx.MockTransport(api),
        rand=lambda: 0.5,
    ) as aws:
        await aws.credentials.get()  # in a thread: before any deadline (autojump)
        yield api, RedshiftData(aws, FAKE_SERVICE, TARGET, statement_timeout_s=20, max_wait_s=30)


async def test_a_service_that_does_not_hold_describes_is_polled_with_capped_backoff(
    autojump_clock: trio.testing.MockClock, fake_api: tuple[FakeDataApi, RedshiftData]
) -> None:
    api, data = fake_api
    api.describes = [{"Status": s} for s in ["SUBMITTED", "PICKED", *["STARTED"] * 5]]
    api.describes.append({"Status": "FINISHED", "ResultRows": 3, "HasResultSet": False})
    with trio.fail_after(30):
        result = await data.run("DELETE FROM t")
    assert (result.status, result.result_rows) == ("FINISHED", 3)
    times = [at for at, operation, _ in api.calls if operation == "DescribeStatement"]
    gaps = [round(b - a, 6) for a, b in zip([api.calls[0][0], *times], times, strict=False)]
    # The first describe at once (long polling would hold it: test_redshift_long_poll)
    assert gaps == [0.0, 0.05, 0.1, 0.2, 0.25, 0.25, 0.25, 0.25]


async def test_request_carries_the_target_and_a_client_token_kept_across_retries(
    autojump_clock: trio.testing.MockClock, fake_api: tuple[FakeDataApi, RedshiftData]
) -> None:
    api, data = fake_api
    api.failures["BatchExecuteStatement"] = [
        error(500, "InternalServerException"),
        error(400, "ThrottlingException"),
    ]
    with trio.fail_after(30):
        await data.run(["SELECT 1", "SELECT 2"])
        await data.run("SELECT 3", {"name": "x"})
    batch = [body for _, op, body in api.calls if op == "BatchExecuteStatement"]
    [single] = [body for _, op, body in api.calls if op == "ExecuteStatement"]
    assert len(batch) == 3 and batch[0] == batch[1] == batch[2]  # the same call, retried
    assert batch[0]["Sqls"] == ["SELECT 1", "SELECT 2"]
    assert {k: batch[0][k] for k in ("ClusterIdentifier", "Database", "DbUser")} == {
        "ClusterIdentifier": TEST_CLUSTER,
        "Database": TEST_DATABASE,
        "DbUser": TEST_DB_USER,
    }
    assert single["Parameters"] == [{"name": "name", "value": "x"}]
    assert single["ClientToken"] != batch[0]["ClientToken"]  # one token per statement


async def test_timeout_cancels_the_statement(
    autojump_clock: trio.testing.MockClock, fake_api: tuple[FakeDataApi, RedshiftData]
) -> None:
    api, data = fake_api
    api.describes = [{"Status": "STARTED"}]
    start = trio.current_time()
    with trio.fail_after(60), pytest.raises(StatementTimeout) as caught:
        await data.run("SELECT pg_sleep(1000)")
    assert caught.value.code == TIMED_OUT  # the code logs and metrics show, as before
    assert trio.current_time() - start == pytest.approx(20.0)
    assert api.operations[-1] == "CancelStatement"
    assert api.calls[-1][2] == {"Id": STATEMENT_ID}


async def test_max_wait_s_bounds_the_wait(
    autojump_clock: trio.testing.MockClock, fake_api: tuple[FakeDataApi, RedshiftData]
) -> None:
    api, data = fake_api
    api.describes = [{"Status": "STARTED"}]
    data.max_wait_s = 4  # REDSHIFT_MAX_RETRIES: 4 one-second polls' worth of waiting
    with trio.fail_after(60), pytest.raises(StatementTimeout, match="4 s of polling"):
        await data.run("SELECT 1")
    # at once, after 0.05, 0.1, 0.2, then every 0.25 s until 4 s have passed: 4 + 14 polls
    assert api.operations.count("DescribeStatement") == 18
    assert trio.current_time() - api.calls[0][0] == pytest.approx(4.1, abs=0.01)
    assert api.operations[-1] == "CancelStatement"


async def test_a_cancelled_caller_still_cancels_the_statement(
    autojump_clock: trio.testing.MockClock, fake_api: tuple[FakeDataApi, RedshiftData]
) -> None:
    api, data = fake_api
    api.describes = [{"Status": "STARTED"}]
    with trio.fail_after(60):
        with trio.move_on_after(3) as drain:
            await data.run("SELECT 1")
    assert drain.cancelled_caught
    assert api.operations[-1] == "CancelStatement"


async def test_cancel_that_fails_does_not_hide_the_timeout(
    autojump_clock: trio.testing.MockClock, fake_api: tuple[FakeDataApi, RedshiftData]
) -> None:
    api, data = fake_api
    api.describes = [{"Status": "STARTED"}]
    data.max_wait_s = 1
    api.failures["CancelStatement"] = [error(400, "ValidationException")]  # finished meanwhile
    with trio.fail_after(60), pytest.raises(StatementTimeout):
        await data.run("SELECT 1")
    assert api.operations[-1] == "CancelStatement"


DATA = StatementDataError
CLASSIFIED = [
    (
        "FAILED",
        "ERROR: 1023 DETAIL: Serializable isolation violation on table",
        StatementConflict,
        CONFLICT,
    ),
    (
        "FAILED",
        "could not complete because of conflict with concurrent transaction",
        StatementConflict,
        CONFLICT,
    ),
    (
        "FAILED",
        "Query #4 failed with ERROR: value too long for type character varying",
        DATA,
        FAILED,
    ),
    ("FAILED", 'ERROR: invalid input syntax for type timestamp: "x"', DATA, FAILED),
    ("FAILED", "ERROR: JSON parsing error", DATA, FAILED),
    ("FAILED", 'ERROR: invalid byte sequence for encoding "UTF8": 0x00', DATA, FAILED),
    ("FAILED", "ERROR: connection reset", StatementSystemError, FAILED),
    (
        "FAILED",
        'ERROR: relation "public.appsflyer_events" does not exist',
        StatementSystemError,
        FAILED,
    ),
    ("FAILED", "ERROR: something afpipe has never seen", UnclassifiedStatementError, FAILED),
    ("ABORTED", "", StatementAborted, ABORTED),
]


@pytest.mark.parametrize(("status", "text", "kind", "code"), CLASSIFIED)
async def test_failed_statements_are_classified(
    autojump_clock: trio.testing.MockClock,
    fake_api: tuple[FakeDataApi, RedshiftData],
    status: str,
    text: str,
    kind: type[Exception],
    code: str,
) -> None:
    api, data = fake_api
    api.describes = [{"Status": status, "Error": text}]
    with trio.fail_after(60), pytest.raises((TransientError, PermanentError)) as caught:
        await data.run("INSERT INTO t VALUES (1)")
    failure = caught.value
    assert isinstance(failure, TransientError | PermanentError)
    assert type(failure) is kind
    assert failure.code == code
    assert text in str(caught.value)
    assert "CancelStatement" not in api.operations


@pytest.mark.parametrize(
    "text",
    [
        "ERROR: permission denied for relation appsflyer_events",
        "ERROR: permission denied for schema analytics",
        "ERROR: must be owner of relation afpipe_load_lock",
    ],
)
async def test_a_missing_privilege_is_a_configuration_error(
    autojump_clock: trio.testing.MockClock, fake_api: tuple[FakeDataApi, RedshiftData], text: str
) -> None:
    """Retrying cannot grant a privilege: the process exits 2 naming the settings."""
    api, data = fake_api
    api.describes = [{"Status": "FAILED", "Error": text}]
    with trio.fail_after(60), pytest.raises(ConfigError) as caught:
        await data.run("CREATE TABLE t (a INT)")
    assert text in str(caught.value) and "REDSHIFT_DB_USER" in str(caught.value)


async def test_validation_exception_is_not_retried(
    autojump_clock: trio.testing.MockClock, fake_api: tuple[FakeDataApi, RedshiftData]
) -> None:
    api, data = fake_api
    api.failures["ExecuteStatement"] = [error(400, "ValidationException")]
    with trio.fail_after(60), pytest.raises(PermanentError) as caught:
        await data.run("SELEC 1")
    assert caught.value.code == "ValidationException"
    assert api.operations == ["ExecuteStatement"]


async def test_a_forgotten_statement_is_transient(
    autojump_clock: trio.testing.MockClock, fake_api: tuple[FakeDataApi, RedshiftData]
) -> None:
    api, data = fake_api
    api.failures["DescribeStatement"] = [error(400, "ResourceNotFoundException")]
    with trio.fail_after(60), pytest.raises(StatementNotFound) as caught:
        await data.run("SELECT 1")
    assert caught.value.code == "ResourceNotFoundException"


async def test_records_follow_next_token(
    autojump_clock: trio.testing.MockClock, fake_api: tuple[FakeDataApi, RedshiftData]
) -> None:
    api, data = fake_api
    api.describes = [{"Status": "FINISHED", "HasResultSet": True}]
    api.pages = [
        {"Records": [[{"stringValue": "a"}, {"longValue": 1}]], "NextToken": "n1"},
        {"Records": [[{"isNull": True}, {"booleanValue": False}]]},
    ]
    with trio.fail_after(60):
        rows = await data.query("SELECT x, y FROM t")
    assert rows == [["a", 1], [None, False]]
    pages = [body for _, op, body in api.calls if op == "GetStatementResult"]
    assert pages == [{"Id": STATEMENT_ID}, {"Id": STATEMENT_ID, "NextToken": "n1"}]


async def test_empty_parameter_values_are_refused_before_sending(
    fake_api: tuple[FakeDataApi, RedshiftData],
) -> None:
    api, data = fake_api
    with pytest.raises(ValueError, match="non-empty"):
        await data.run("SELECT :x", {"x": ""})
    assert api.calls == []


@pytest.mark.parametrize(
    "fields",
    [
        {"database": "dev"},
        {"database": "dev", "cluster_identifier": "c", "workgroup_name": "w"},
        {"database": "dev", "workgroup_name": "w", "db_user": "u"},
        {"database": "dev", "cluster_identifier": "c", "db_user": "u", "secret_arn": "arn"},
        {"database": "", "cluster_identifier": "c"},
    ],
)
def test_target_refuses_impossible_identities(fields: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        Target(**fields)


def test_target_request_fields() -> None:
    serverless = Target(workgroup_name="wg", database="dev", secret_arn="arn:s")
    assert serverless.request_fields() == {
        "WorkgroupName": "wg",
        "Database": "dev",
        "SecretArn": "arn:s",
    }
    iam = Target(cluster_identifier="c", database="dev")
    assert iam.request_fields() == {"ClusterIdentifier": "c", "Database": "dev"}


# --- the warehouse against the emulator ----------------------------------------------------


async def test_ensure_table_is_idempotent_and_has_the_expected_columns(
    redshift_emulator: RedshiftDataEmulator, aws_client: AwsClient
) -> None:
    warehouse = warehouse_on(redshift_emulator, aws_client)
    with trio.fail_after(20):
        assert await warehouse.columns() == []
        await warehouse.ensure_table()
        await warehouse.ensure_table()
        assert await warehouse.columns() == sql.EXPECTED_COLUMNS
        await warehouse.ping()
        await warehouse.aclose()


@pytest.mark.parametrize("there", [False, True], ids=["new-database", "table-there"])
async def test_creators_at_once_all_end_with_the_table(
    redshift_emulator: RedshiftDataEmulator, aws_client: AwsClient, there: bool
) -> None:
    """Processes starting together create the table at the same time: all but one
    got a serializable conflict (error 1023; CREATE ... IF NOT EXISTS writes the
    catalog even when the table is there) and failed their first load; the
    secondary, which does not retry, went down for its cool-down."""
    if there:
        await warehouse_on(redshift_emulator, aws_client).ensure_table()
        redshift_emulator.reset_counters()
        # A table that is there is only looked at: a CREATE would now fail.
        redshift_emulator.fail_statements_containing("CREATE TABLE", "ERROR: no CREATE here")
    redshift_emulator.set_latency(0.2)  # each CREATE is under way when the next starts
    warehouses = [warehouse_on(redshift_emulator, aws_client) for _ in range(4)]
    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for warehouse in warehouses:
                    nursery.start_soon(warehouse.ensure_table)
            assert await warehouses[0].columns() == sql.EXPECTED_COLUMNS
    finally:
        for warehouse in warehouses:
            await warehouse.aclose()
    if not there:  # they did collide: more than one look and one CREATE per table each
        assert redshift_emulator.calls["ExecuteStatement"] > 4 * len(warehouses) + 1


async def test_load_is_idempotent(
    redshift_emulator: RedshiftDataEmulator, aws_client: AwsClient
) -> None:
    warehouse = warehouse_on(redshift_emulator, aws_client)
    events = [event(n) for n in range(50)]
    with trio.fail_after(20):
        await warehouse.ensure_table()
        first = await warehouse.load(events)
        again = await warehouse.load([*events[::-1], events[0]])
    assert (first.loaded, first.rejected) == (50, [])
    assert (again.loaded, again.rejected) == (0, [])
    assert counts(redshift_emulator) == (50, 50)


async def test_repeats_inside_one_batch_make_one_row(
    redshift_emulator: RedshiftDataEmulator, aws_client: AwsClient
) -> None:
    warehouse = warehouse_on(redshift_emulator, aws_client)
    no_time = from_payload({"event_name": "install"})  # no event_time: NULL, still deduplicated
    with trio.fail_after(20):
        await warehouse.ensure_table()
        result = await warehouse.load([event(1), no_time, event(1), no_time, event(2)])
        again = await warehouse.load([no_time])
    assert (result.loaded, result.rejected, again.loaded) == (3, [], 0)
    assert counts(redshift_emulator) == (3, 3)


async def test_a_batch_larger_than_one_transaction_loads_once(
    redshift_emulator: RedshiftDataEmulator, aws_client: AwsClient
) -> None:
    warehouse = warehouse_on(redshift_emulator, aws_client)
    events = [event(n, blob="b\\'" * 700) for n in range(150)]
    with trio.fail_after(30):
        await warehouse.ensure_table()
        first = await warehouse.load(events)
        again = await warehouse.load(events)
    assert redshift_emulator.calls["BatchExecuteStatement"] >= 2 * 4
    assert (first.loaded, again.loaded) == (150, 0)
    assert counts(redshift_emulator) == (150, 150)


async def test_one_warehouse_runs_its_writers_loads_one_at_a_time(
    redshift_emulator: RedshiftDataEmulator, aws_client: AwsClient
) -> None:
    """Two writers of one process: their merges queue in the process (not in
    Redshift, holding a WLM slot), so each load is one stage and one merge, with
    no conflict to retry. Several processes: test_redshift_exactly_once."""
    warehouse = warehouse_on(redshift_emulator, aws_client)
    events = [event(n) for n in range(60)]
    loaded: list[int] = []

    async def load(batch: list[Event]) -> None:
        loaded.append((await warehouse.load(batch)).loaded)

    with trio.fail_after(30):
        await warehouse.ensure_table()
        redshift_emulator.set_latency(0.05)
        redshift_emulator.reset_counters()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(load, events[:40])
            nursery.start_soon(load, events[20:])
    assert sorted(loaded) == [20, 40]
    assert counts(redshift_emulator) == (60, 60)
    assert redshift_emulator.calls["BatchExecuteStatement"] == 4  # no conflict, no retry


async def test_bisection_rejects_exactly_the_rows_redshift_refuses(
    redshift_emulator: RedshiftDataEmulator, aws_client: AwsClient
) -> None:
    warehouse = warehouse_on(redshift_emulator, aws_client)
    narrow = sql.create_table_sql(warehouse.table).replace(
        "event_name VARCHAR(255)", "event_name VARCHAR(12)"
    )
    events = [event(n) for n in range(31)]
    too_long = event(99, event_name="x" * 13)
    nul = event(98, app_id="a\x00b")
    with trio.fail_after(30):
        await warehouse.data.run(narrow)
        await warehouse.ensure_table()  # keeps the existing table
        result = await warehouse.load([*events[:7], too_long, *events[7:], nul])
    assert result.loaded == 31
    assert [r.event for r in result.rejected] == [nul, too_long]
    assert result.rejected[0].reason == sql.NUL_REASON
    assert "ERROR: value too long for type character varying(12)" in result.rejected[1].reason
    assert counts(redshift_emulator) == (31, 31)


async def test_throttling_and_server_errors_are_retried(
    redshift_emulator: RedshiftDataEmulator,
) -> None:
    policy = RetryPolicy(max_attempts=8, base_delay_s=0.1, max_delay_s=0.5)
    credentials = CredentialCache(static_credentials(FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY))
    async with AwsClient(credentials=credentials, policy=policy, rand=lambda: 0.999) as aws:
        warehouse = warehouse_on(redshift_emulator, aws)
        with trio.fail_after(30):
            await warehouse.ensure_table()
            redshift_emulator.set_rate_limit("BatchExecuteStatement", 2.0)
            redshift_emulator.fail_next_requests(2, "DescribeStatement")
            async with trio.open_nursery() as nursery:
                for n in range(4):
                    nursery.start_soon(warehouse.load, [event(n), event(n + 10)])
            redshift_emulator.fail_next_requests(2, "BatchExecuteStatement")
            result = await warehouse.load([event(20)])
    assert result.loaded == 1
    assert redshift_emulator.errors["ThrottlingException"] >= 1
    assert redshift_emulator.errors["InternalServerException"] == 4
    assert counts(redshift_emulator) == (9, 9)


async def test_a_hanging_statement_times_out_and_is_cancelled(
    redshift_emulator: RedshiftDataEmulator, aws_client: AwsClient
) -> None:
    warehouse = warehouse_on(redshift_emulator, aws_client, statement_timeout_s=0.5)
    with trio.fail_after(20):
        await warehouse.ensure_table()
        redshift_emulator.hang_next_statements(1)
        with pytest.raises(StatementTimeout):
            await warehouse.load([event(1)])
        assert redshift_emulator.calls["CancelStatement"] == 1
        assert redshift_emulator.active_statements() == 0
        assert counts(redshift_emulator) == (0, 0)
        assert (await warehouse.load([event(1)])).loaded == 1


async def test_drain_cancels_the_running_statement(
    redshift_emulator: RedshiftDataEmulator, aws_client: AwsClient
) -> None:
    warehouse = warehouse_on(redshift_emulator, aws_client)
    with trio.fail_after(20):
        await warehouse.ensure_table()
        redshift_emulator.hang_next_statements(1)
        with trio.move_on_after(0.5) as drain:
            await warehouse.load([event(1)])
    assert drain.cancelled_caught
    assert redshift_emulator.calls["CancelStatement"] == 1
    assert redshift_emulator.active_statements() == 0


async def test_a_refused_request_is_not_retried_nor_bisected(
    redshift_emulator: RedshiftDataEmulator, aws_client: AwsClient
) -> None:
    # Limits above the Data API's: the emulator answers ValidationException.
    limits = sql.SqlLimits(max_sql_bytes=300_000, max_batch_sql_bytes=300_000)
    warehouse = warehouse_on(redshift_emulator, aws_client, limits=limits)
    with trio.fail_after(20):
        await warehouse.ensure_table()
        redshift_emulator.reset_counters()
        with pytest.raises(PermanentError) as direct:
            await warehouse.data.run("SELECT '" + "x" * 100_001 + "'")
        with pytest.raises(RefusedRequest) as caught:
            await warehouse.load([event(n, blob="y" * 20_000) for n in range(8)])
    assert direct.value.code == caught.value.code == "ValidationException"
    assert redshift_emulator.calls["ExecuteStatement"] == 1  # the big SELECT
    assert redshift_emulator.calls["BatchExecuteStatement"] == 1


async def test_an_unclassified_failure_is_transient_and_commits_nothing(
    redshift_emulator: RedshiftDataEmulator, aws_client: AwsClient
) -> None:
    warehouse = warehouse_on(redshift_emulator, aws_client)
    with trio.fail_after(20):
        await warehouse.ensure_table()
        redshift_emulator.fail_next_statements(1, "ERROR: disk full")
        with pytest.raises(TransientError, match="disk full"):
            await warehouse.load([event(1), event(2)])
    assert redshift_emulator.calls["BatchExecuteStatement"] == 1
    assert counts(redshift_emulator) == (0, 0)


# --- round trip ----------------------------------------------------------------------------

_column_text = st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"))
_payloads = st.fixed_dictionaries(
    {
        "event_name": _column_text,
        "app_id": _column_text,
        "customer_user_id": _column_text,
        "idfa": _column_text,
        "event_time": st.datetimes(min_value=datetime(1000, 1, 1)).map(
            lambda t: t.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        ),
        "event_value": st.text(),  # anything, NUL included: JSON escapes it in event_data
    },
    optional={"nested": st.dictionaries(st.text(), st.text() | st.integers(), max_size=3)},
)  # fmt: skip


TRICKY = {
    "event_name": "it's \\ a \\' test\n\r\t\x01\x7f 😀 \u2028 ''\\\\",
    "app_id": "\\000 \\x41 \\u0041 %s :name $1 -- /* */ ;",
    "customer_user_id": "é" * 200,  # 400 bytes: cut to 255 at a character boundary
    "idfa": "𝄞" * 70,
    "event_time": "2024-03-02 12:00:01.123",
    "event_value": '{"af_revenue":"9.99","q":"\\"\\\\","nul":"\x00"}',
}


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(payloads=st.lists(_payloads, min_size=1, max_size=8))
@example(payloads=[TRICKY])
def test_any_unicode_round_trips_byte_exact(
    round_trip_emulator: RedshiftDataEmulator, payloads: list[dict[str, Any]]
) -> None:
    trio.run(_round_trip, round_trip_emulator, [from_payload(p) for p in payloads])


async def _round_trip(emu: RedshiftDataEmulator, events: list[Event]) -> None:
    credentials = CredentialCache(static_credentials(FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY))
    with trio.fail_after(20):
        async with AwsClient(credentials=credentials) as aws:
            table = f"round_trip_{uuid.uuid4().hex[:12]}"  # a fresh table per example
            warehouse = warehouse_on(emu, aws, table)
            await warehouse.ensure_table()
            result = await warehouse.load(events)
            records = await warehouse.data.query(
                "SELECT id, event_time, event_name, app_id, user_id, device_id,"
                f" JSON_SERIALIZE(event_data) FROM {table}"
            )
    assert result.rejected == []
    expected = {row.id: row for row in map(to_row, events)}
    assert len(records) == len(expected)
    for id_, event_time, *texts, event_data in records:
        row = expected[str(id_)]
        assert isinstance(event_time, str) and row.event_time is not None
        assert datetime.fromisoformat(event_time) == datetime.fromisoformat(row.event_time)
        assert texts == [row.event_name, row.app_id, row.user_id, row.device_id]
        assert json.loads(str(event_data)) == json.loads(row.event_data)


@pytest.fixture
def round_trip_emulator() -> Iterator[RedshiftDataEmulator]:
    emu = start_emulator()
    try:
        yield emu
    finally:
        emu.close()
    assert not emu.crashes
