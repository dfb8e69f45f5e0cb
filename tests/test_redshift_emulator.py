"""The Redshift Data API emulator, driven by boto3's `redshift-data` client so that
it is held to the real API (wire protocol, shapes, error codes)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError, ParamValidationError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.emulators.redshift_data import RedshiftDataEmulator
from tests.fixtures.redshift import (
    EMULATOR_SETTINGS,
    REDSHIFT_TARGET,
    alarm_after,
    make_redshift_data_client,
    start_emulator,
)
from tests.fixtures.redshift import wait_statement as wait

TEST_TIME_LIMIT_S = 20

EVENTS_DDL = """
CREATE TABLE IF NOT EXISTS appsflyer_events (
    id VARCHAR(255) NOT NULL PRIMARY KEY,
    event_time TIMESTAMP,
    event_name VARCHAR(255),
    app_id VARCHAR(255),
    event_data SUPER,
    created_at TIMESTAMP DEFAULT GETDATE()
) DISTSTYLE KEY DISTKEY (id) SORTKEY (event_time)
"""


@pytest.fixture(autouse=True)
def _time_limit() -> Iterator[None]:
    """Bound every test: SIGALRM interrupts even a blocked socket read."""
    with alarm_after(TEST_TIME_LIMIT_S):
        yield


# -- helpers ---------------------------------------------------------------------


def run(client: Any, sql: str, **kwargs: Any) -> dict[str, Any]:
    submitted = client.execute_statement(Sql=sql, **REDSHIFT_TARGET, **kwargs)
    return wait(client, submitted["Id"])


def run_ok(client: Any, sql: str, **kwargs: Any) -> dict[str, Any]:
    described = run(client, sql, **kwargs)
    assert described["Status"] == "FINISHED", described.get("Error")
    return described


def run_batch(client: Any, sqls: list[str]) -> dict[str, Any]:
    submitted = client.batch_execute_statement(Sqls=sqls, **REDSHIFT_TARGET)
    return wait(client, submitted["Id"])


def select(client: Any, sql: str, **kwargs: Any) -> list[list[Any]]:
    """Rows as plain values, read through GetStatementResult (all pages)."""
    statement_id = run_ok(client, sql, **kwargs)["Id"]
    rows: list[list[Any]] = []
    token: dict[str, str] = {}
    while True:
        page = client.get_statement_result(Id=statement_id, **token)
        rows += [[_value(field) for field in record] for record in page["Records"]]
        if "NextToken" not in page:
            return rows
        token = {"NextToken": page["NextToken"]}


def _value(field: dict[str, Any]) -> Any:
    if field.get("isNull"):
        return None
    (value,) = field.values()
    return value


def error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def redshift_literal(text: str) -> str:
    """What a client must send: both `'` and `\\` doubled."""
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


@pytest.fixture
def events(redshift_data_client: Any) -> Any:
    run_ok(redshift_data_client, EVENTS_DDL)
    return redshift_data_client


# -- round trips -----------------------------------------------------------------


def test_execute_describe_and_typed_results(redshift_data_client: Any) -> None:
    client = redshift_data_client
    submitted = client.execute_statement(
        Sql="SELECT 1 AS one, 2.5::float8 AS half, true AS yes, NULL AS nothing, "
        "'text' AS word, 12.30::numeric(6,2) AS money, "
        "'2024-03-02 12:00:01.123'::timestamp AS at",
        StatementName="typed",
        **REDSHIFT_TARGET,
    )
    assert submitted["ClusterIdentifier"] == REDSHIFT_TARGET["ClusterIdentifier"]
    described = wait(client, submitted["Id"])
    assert described["Status"] == "FINISHED"
    assert described["HasResultSet"] is True
    assert described["ResultRows"] == 1
    assert described["Duration"] >= 0
    assert described["QueryString"].startswith("SELECT 1 AS one")
    result = client.get_statement_result(Id=submitted["Id"])
    assert result["TotalNumRows"] == 1
    assert result["Records"] == [
        [
            {"longValue": 1},
            {"doubleValue": 2.5},
            {"booleanValue": True},
            {"isNull": True},
            {"stringValue": "text"},
            {"stringValue": "12.30"},
            {"stringValue": "2024-03-02 12:00:01.123"},
        ]
    ]
    columns = [(c["name"], c["typeName"]) for c in result["ColumnMetadata"]]
    assert columns[:3] == [("one", "int4"), ("half", "float8"), ("yes", "bool")]
    assert columns[5:] == [("money", "numeric"), ("at", "timestamp")]
    listed = client.list_statements(StatementName="typ")["Statements"]
    assert [s["Id"] for s in listed] == [submitted["Id"]]


def test_statements_run_asynchronously_with_latency(redshift_emulator: Any) -> None:
    client = make_redshift_data_client(redshift_emulator)
    redshift_emulator.set_latency(0.3)
    submitted = client.execute_statement(Sql="SELECT 1", **REDSHIFT_TARGET)
    early = client.describe_statement(Id=submitted["Id"])
    assert early["Status"] in ("SUBMITTED", "PICKED", "STARTED")
    with pytest.raises(ClientError) as not_yet:
        client.get_statement_result(Id=submitted["Id"])
    assert error_code(not_yet) == "ValidationException"
    assert wait(client, submitted["Id"])["Status"] == "FINISHED"


def test_events_table_round_trip(events: Any, redshift_emulator: RedshiftDataEmulator) -> None:
    run_ok(
        events,
        "INSERT INTO appsflyer_events (id, event_time, event_name, event_data) "
        "VALUES (:id, :at, :name, JSON_PARSE(:data))",
        Parameters=[
            {"name": "id", "value": "e1"},
            {"name": "at", "value": "2024-03-02 12:00:01.123"},
            {"name": "name", "value": "af_purchase"},
            {"name": "data", "value": '{"af_revenue": "9.99", "n": [1, 2]}'},
        ],
    )
    rows = select(events, "SELECT id, event_time, event_data, created_at FROM appsflyer_events")
    assert rows[0][:3] == ["e1", "2024-03-02 12:00:01.123", '{"af_revenue":"9.99","n":[1,2]}']
    assert rows[0][3] is not None  # DEFAULT GETDATE()
    assert redshift_emulator.query("SELECT count(*) FROM public.appsflyer_events") == [(1,)]


def test_information_schema_columns_speaks_redshift_types(events: Any) -> None:
    rows = select(
        events,
        "SELECT column_name, data_type, character_maximum_length "
        "FROM information_schema.columns WHERE table_schema = 'public' "
        "AND table_name = 'appsflyer_events' ORDER BY ordinal_position",
    )
    assert rows == [
        ["id", "character varying", 255],
        ["event_time", "timestamp without time zone", None],
        ["event_name", "character varying", 255],
        ["app_id", "character varying", 255],
        ["event_data", "super", None],
        ["created_at", "timestamp without time zone", None],
    ]


def test_result_pages_follow_next_token() -> None:
    with RedshiftDataEmulator(dataclasses.replace(EMULATOR_SETTINGS, result_page_rows=2)) as emu:
        client = make_redshift_data_client(emu)
        statement_id = run_ok(client, "SELECT * FROM range(5) ORDER BY 1")["Id"]
        first = client.get_statement_result(Id=statement_id)
        assert (len(first["Records"]), first["TotalNumRows"]) == (2, 5)
        assert select(client, "SELECT * FROM range(5) ORDER BY 1") == [[0], [1], [2], [3], [4]]


# -- Redshift semantics ------------------------------------------------------------


def test_primary_key_is_not_enforced(events: Any) -> None:
    for _ in range(2):
        run_ok(events, "INSERT INTO appsflyer_events (id) VALUES ('same')")
    assert select(events, "SELECT count(*) FROM appsflyer_events WHERE id = 'same'") == [[2]]


def test_varchar_length_counts_bytes(events: Any) -> None:
    run_ok(events, f"INSERT INTO appsflyer_events (id) VALUES ('{'a' * 255}')")
    run_ok(events, f"INSERT INTO appsflyer_events (id) VALUES ('{'é' * 127}a')")  # 255 bytes
    too_long = run(events, f"INSERT INTO appsflyer_events (id) VALUES ('{'é' * 128}')")
    assert too_long["Status"] == "FAILED"
    assert too_long["Error"] == "ERROR: value too long for type character varying(255)"
    update = run(events, f"UPDATE appsflyer_events SET event_name = '{'x' * 256}'")
    assert "value too long for type character varying(255)" in update["Error"]
    assert select(events, "SELECT count(*) FROM appsflyer_events") == [[2]]


def test_batch_is_one_transaction(events: Any) -> None:
    described = run_batch(
        events,
        [
            "INSERT INTO appsflyer_events (id) VALUES ('first')",
            f"INSERT INTO appsflyer_events (id) VALUES ('{'x' * 256}')",
            "INSERT INTO appsflyer_events (id) VALUES ('third')",
        ],
    )
    assert described["Status"] == "FAILED"
    assert described["Error"].startswith("Query #2 failed with ERROR: value too long")
    subs = described["SubStatements"]
    assert [s["Id"] for s in subs] == [f"{described['Id']}:{n}" for n in (1, 2, 3)]
    assert [s["Status"] for s in subs] == ["FINISHED", "FAILED", "ABORTED"]
    assert select(events, "SELECT count(*) FROM appsflyer_events") == [[0]]


def test_batch_sub_statements_have_their_own_results(redshift_data_client: Any) -> None:
    client = redshift_data_client
    described = run_batch(
        client,
        ["CREATE TEMP TABLE t (v INT)", "INSERT INTO t VALUES (1), (2)", "SELECT sum(v) FROM t"],
    )
    assert described["Status"] == "FINISHED"
    assert [s["HasResultSet"] for s in described["SubStatements"]] == [False, False, True]
    assert described["SubStatements"][1]["ResultRows"] == 2
    result = client.get_statement_result(Id=f"{described['Id']}:3")
    assert result["Records"] == [[{"longValue": 3}]]
    with pytest.raises(ClientError) as parent:
        client.get_statement_result(Id=described["Id"])
    assert error_code(parent) == "ValidationException"
    # The temp table lived only in that batch's session.
    assert "does not exist" in run(client, "SELECT * FROM t")["Error"]


@pytest.mark.parametrize(
    "text",
    [
        "it's",
        "back\\slash",
        "\\'",
        "'\\",
        "new\nline\ttab",
        "emoji 😀 é ü 中文",
        "\\n is not a newline",
    ],
)
def test_escaped_literals_round_trip(events: Any, text: str) -> None:
    run_ok(events, f"INSERT INTO appsflyer_events (id) VALUES ({redshift_literal(text)})")
    assert select(events, "SELECT id FROM appsflyer_events") == [[text]]


def test_backslash_is_an_escape_character(redshift_data_client: Any) -> None:
    rows = select(redshift_data_client, r"SELECT 'a\\b', 'it\'s', 'x''y', 'tab\there', '\q'")
    assert rows == [["a\\b", "it's", "x'y", "tab\there", "q"]]


def test_nul_cannot_be_stored(redshift_data_client: Any) -> None:
    assert "invalid byte sequence" in run(redshift_data_client, r"SELECT 'a\0b'")["Error"]
    via_parameter = run(
        redshift_data_client, "SELECT :v", Parameters=[{"name": "v", "value": "a\x00"}]
    )
    assert "invalid byte sequence" in via_parameter["Error"]


def test_json_parse(events: Any) -> None:
    run_ok(
        events,
        "INSERT INTO appsflyer_events (id, event_data) "
        "VALUES ('ok', JSON_PARSE('[1, {\"a\": null}]'))",
    )
    invalid = run(
        events, "INSERT INTO appsflyer_events (id, event_data) VALUES ('bad', JSON_PARSE('{oops'))"
    )
    assert invalid["Error"] == "ERROR: JSON parsing error"
    bare = run(events, "INSERT INTO appsflyer_events (id, event_data) VALUES ('bare', 'not json')")
    assert "JSON_PARSE" in bare["Error"]  # the emulator says where it differs
    assert select(events, "SELECT event_data FROM appsflyer_events") == [['[1,{"a":null}]']]


def test_timestamps_and_current_time(events: Any) -> None:
    bad = run(events, "INSERT INTO appsflyer_events (id, event_time) VALUES ('t', 'yesterday-ish')")
    assert bad["Error"] == 'ERROR: invalid input syntax for type timestamp: "yesterday-ish"'
    [[now, sysdate]] = select(events, "SELECT GETDATE(), SYSDATE")
    assert len(now) == len("2024-01-01 00:00:00")  # GETDATE() has whole seconds
    assert sysdate[:10] == now[:10]


def test_merge_needs_both_clauses(redshift_data_client: Any) -> None:
    client = redshift_data_client
    run_ok(client, "CREATE TABLE target (id INT, v VARCHAR(10))")
    only_matched = run(
        client,
        "MERGE INTO target USING (SELECT 1 AS id) s ON target.id = s.id "
        "WHEN MATCHED THEN UPDATE SET v = 'x'",
    )
    assert "MERGE requires" in only_matched["Error"]
    run_ok(
        client,
        "MERGE INTO target USING (SELECT 1 AS id) s ON target.id = s.id "
        "WHEN MATCHED THEN UPDATE SET v = 'old' WHEN NOT MATCHED THEN INSERT VALUES (s.id, 'new')",
    )
    assert select(client, "SELECT id, v FROM target") == [[1, "new"]]


def test_one_statement_per_execute(redshift_data_client: Any) -> None:
    described = run(redshift_data_client, "SELECT 1; SELECT 2")
    assert "multiple commands" in described["Error"]


# -- the API's rules ---------------------------------------------------------------------


def test_parameters_bind_by_name_and_type_by_context(redshift_data_client: Any) -> None:
    client = redshift_data_client
    run_ok(client, "CREATE TABLE nums (n INT, s VARCHAR(20), ts TIMESTAMP)")
    values = [
        {"name": "n", "value": "41"},
        {"name": "s", "value": "it's \\"},
        {"name": "ts", "value": "2024-01-02 03:04:05"},
    ]
    run_ok(client, "INSERT INTO nums VALUES (:n, :s, :ts)", Parameters=values)
    rows = select(
        client,
        "SELECT n + 1, s || ':s', ts FROM nums WHERE n = :n",
        Parameters=[{"name": "n", "value": "41"}],
    )
    assert rows == [[42, "it's \\:s", "2024-01-02 03:04:05"]]


def test_parameter_rules(redshift_emulator: RedshiftDataEmulator) -> None:
    client = make_redshift_data_client(redshift_emulator)
    with pytest.raises(ParamValidationError):  # boto3 itself refuses an empty value
        client.execute_statement(
            Sql="SELECT :v", Parameters=[{"name": "v", "value": ""}], **REDSHIFT_TARGET
        )
    raw = make_redshift_data_client(redshift_emulator, parameter_validation=False)
    cases = {
        "empty value": ("SELECT :v", [{"name": "v", "value": ""}]),
        "NULL value": ("SELECT :v", [{"name": "v"}]),
        "missing": ("SELECT :v, :w", [{"name": "v", "value": "1"}]),
        "unused": ("SELECT :v", [{"name": "v", "value": "1"}, {"name": "w", "value": "2"}]),
        "bad name": ("SELECT 1", [{"name": "a-b", "value": "1"}]),
    }
    for case, (sql, parameters) in cases.items():
        with pytest.raises(ClientError) as rejected:
            raw.execute_statement(Sql=sql, Parameters=parameters, **REDSHIFT_TARGET)
        assert error_code(rejected) == "ValidationException", case


def test_sql_text_limit_is_100_kb_in_bytes(redshift_data_client: Any) -> None:
    client = redshift_data_client
    head = "SELECT 1 -- "
    run_ok(client, head + "x" * (100_000 - len(head)))
    for oversized in (head + "x" * (100_001 - len(head)), head + "é" * 50_000):
        with pytest.raises(ClientError) as rejected:
            client.execute_statement(Sql=oversized, **REDSHIFT_TARGET)
        assert error_code(rejected) == "ValidationException"
        assert "larger than 100kB" in str(rejected.value)


def test_batch_limits(redshift_data_client: Any) -> None:
    client = redshift_data_client
    assert run_batch(client, ["SELECT 1"] * 40)["Status"] == "FINISHED"
    with pytest.raises(ClientError) as too_many:
        client.batch_execute_statement(Sqls=["SELECT 1"] * 41, **REDSHIFT_TARGET)
    assert error_code(too_many) == "ValidationException"
    assert "less than or equal to 40" in str(too_many.value)
    with pytest.raises(ClientError) as parameters:
        client.batch_execute_statement(
            Sqls=["SELECT :v"], Parameters=[{"name": "v", "value": "1"}], **REDSHIFT_TARGET
        )
    assert error_code(parameters) == "ValidationException"


@pytest.mark.parametrize(
    "target",
    [
        {"Database": "dev", "DbUser": "u"},
        {"ClusterIdentifier": "c", "WorkgroupName": "wg1", "Database": "dev"},
        {"ClusterIdentifier": "c", "Database": "dev", "DbUser": "u", "SecretArn": "arn:x"},
        {"WorkgroupName": "wg1", "Database": "dev", "DbUser": "u"},
        {"ClusterIdentifier": "c", "DbUser": "u"},
    ],
)
def test_target_combinations_are_validated(
    redshift_data_client: Any, target: dict[str, str]
) -> None:
    with pytest.raises(ClientError) as rejected:
        redshift_data_client.execute_statement(Sql="SELECT 1", **target)
    assert error_code(rejected) == "ValidationException"


@pytest.mark.parametrize(
    "target",
    [
        {"WorkgroupName": "wg1", "Database": "dev"},
        {"WorkgroupName": "wg1", "SecretArn": "arn:aws:secretsmanager:us-east-1:1:secret:s"},
        {"ClusterIdentifier": "c", "Database": "dev"},
    ],
)
def test_valid_targets(redshift_data_client: Any, target: dict[str, str]) -> None:
    submitted = redshift_data_client.execute_statement(Sql="SELECT 1", **target)
    assert wait(redshift_data_client, submitted["Id"])["Status"] == "FINISHED"


def test_unknown_statement_id(redshift_data_client: Any) -> None:
    with pytest.raises(ClientError) as missing:
        redshift_data_client.describe_statement(Id="00000000-0000-0000-0000-000000000000")
    assert error_code(missing) == "ResourceNotFoundException"


# -- quotas, faults, signatures ------------------------------------------------------


def test_throttling(redshift_emulator: RedshiftDataEmulator) -> None:
    client = make_redshift_data_client(redshift_emulator)
    redshift_emulator.set_rate_limit("ExecuteStatement", 1)
    client.execute_statement(Sql="SELECT 1", **REDSHIFT_TARGET)
    with pytest.raises(ClientError) as throttled:
        client.execute_statement(Sql="SELECT 1", **REDSHIFT_TARGET)
    assert error_code(throttled) == "ThrottlingException"
    assert throttled.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert redshift_emulator.calls["ExecuteStatement"] == 2
    assert redshift_emulator.errors == {"ThrottlingException": 1}


def test_active_statements_quota(redshift_emulator: RedshiftDataEmulator) -> None:
    client = make_redshift_data_client(redshift_emulator)
    redshift_emulator.set_max_active_statements(1)
    redshift_emulator.hang_next_statements(1)
    hanging = client.execute_statement(Sql="SELECT 1", **REDSHIFT_TARGET)
    with pytest.raises(ClientError) as exceeded:
        client.execute_statement(Sql="SELECT 2", **REDSHIFT_TARGET)
    assert error_code(exceeded) == "ActiveStatementsExceededException"
    assert client.cancel_statement(Id=hanging["Id"])["Status"] is True


def test_cancel_a_hanging_statement(redshift_emulator: RedshiftDataEmulator) -> None:
    client = make_redshift_data_client(redshift_emulator)
    redshift_emulator.hang_next_statements(1)
    submitted = client.execute_statement(Sql="SELECT 1", **REDSHIFT_TARGET)
    wait(client, submitted["Id"], ("STARTED",))
    assert client.cancel_statement(Id=submitted["Id"])["Status"] is True
    assert client.describe_statement(Id=submitted["Id"])["Status"] == "ABORTED"
    with pytest.raises(ClientError) as again:
        client.cancel_statement(Id=submitted["Id"])
    assert error_code(again) == "ValidationException"


def test_injected_statement_failure(events: Any, redshift_emulator: RedshiftDataEmulator) -> None:
    redshift_emulator.fail_next_statements(
        1, "ERROR: value too long for type character varying(255)"
    )
    failed = run(events, "INSERT INTO appsflyer_events (id) VALUES ('a')")
    assert failed["Error"] == "ERROR: value too long for type character varying(255)"
    run_ok(events, "INSERT INTO appsflyer_events (id) VALUES ('b')")
    assert select(events, "SELECT id FROM appsflyer_events") == [["b"]]


def test_internal_errors_and_idempotent_retries(redshift_emulator: RedshiftDataEmulator) -> None:
    client = make_redshift_data_client(redshift_emulator)
    redshift_emulator.fail_next_requests(1, "ExecuteStatement")
    with pytest.raises(ClientError) as failed:
        client.execute_statement(Sql="SELECT 1", **REDSHIFT_TARGET)
    assert error_code(failed) == "InternalServerException"
    assert failed.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    retrying = make_redshift_data_client(redshift_emulator, max_attempts=3)
    redshift_emulator.fail_next_requests(1, "ExecuteStatement")
    assert retrying.execute_statement(Sql="SELECT 1", **REDSHIFT_TARGET)["Id"]
    first = client.execute_statement(Sql="SELECT 1", ClientToken="token-1", **REDSHIFT_TARGET)
    again = client.execute_statement(Sql="SELECT 1", ClientToken="token-1", **REDSHIFT_TARGET)
    assert first["Id"] == again["Id"]


def test_signatures_are_checked(redshift_emulator: RedshiftDataEmulator) -> None:
    wrong_secret = make_redshift_data_client(redshift_emulator, secret_key="not-the-secret")
    with pytest.raises(ClientError) as bad_signature:
        wrong_secret.list_statements()
    assert error_code(bad_signature) == "InvalidSignatureException"
    assert bad_signature.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    unknown_key = make_redshift_data_client(redshift_emulator, access_key="AKIDUNKNOWN")
    with pytest.raises(ClientError) as unknown:
        unknown_key.list_statements()
    assert error_code(unknown) == "UnrecognizedClientException"


# -- concurrency and the idempotent load --------------------------------------------------


def staged_load(ids: list[str], marker: str) -> list[str]:
    """The loader's pattern: stage, delete what is already there, insert."""
    values = ", ".join(f"('{i}', '{marker}')" for i in ids)
    return [
        "CREATE TEMP TABLE stage (LIKE appsflyer_events)",
        f"INSERT INTO stage (id, event_name) VALUES {values}",
        "DELETE FROM appsflyer_events USING stage WHERE appsflyer_events.id = stage.id",
        "INSERT INTO appsflyer_events SELECT * FROM stage",
    ]


def test_delete_using_and_insert_select_is_an_idempotent_load(events: Any) -> None:
    for marker in ("first", "again"):
        assert run_batch(events, staged_load(["a", "b", "c"], marker))["Status"] == "FINISHED"
    rows = select(events, "SELECT id, event_name FROM appsflyer_events ORDER BY id")
    assert rows == [["a", "again"], ["b", "again"], ["c", "again"]]


@pytest.fixture
def serializable_emulator() -> Iterator[RedshiftDataEmulator]:
    """An emulator whose database uses SERIALIZABLE isolation (the default is
    SNAPSHOT: see test_redshift_emulator_isolation.py)."""
    emu = start_emulator(dataclasses.replace(EMULATOR_SETTINGS, isolation="serializable"))
    try:
        yield emu
    finally:
        emu.close()
    assert not emu.crashes


@pytest.fixture
def serializable_events(serializable_emulator: RedshiftDataEmulator) -> Any:
    client = make_redshift_data_client(serializable_emulator)
    run_ok(client, EVENTS_DDL)
    return client


def test_concurrent_loads_conflict_with_serializable_isolation(
    serializable_events: Any, serializable_emulator: RedshiftDataEmulator
) -> None:
    events, redshift_emulator = serializable_events, serializable_emulator
    redshift_emulator.set_latency(0.2)  # both batches stage before either writes
    ids = [
        events.batch_execute_statement(Sqls=staged_load(["a", "b"], marker), **REDSHIFT_TARGET)[
            "Id"
        ]
        for marker in ("one", "two")
    ]
    failed, finished = sorted((wait(events, i) for i in ids), key=lambda d: str(d["Status"]))
    assert (failed["Status"], finished["Status"]) == ("FAILED", "FINISHED")
    assert failed["Error"].startswith(
        "Query #3 failed with ERROR: 1023 DETAIL: Serializable isolation violation on table"
    )
    redshift_emulator.set_latency(0)
    assert run_batch(events, staged_load(["a", "b"], "retry"))["Status"] == "FINISHED"
    assert select(events, "SELECT count(*), count(DISTINCT id) FROM appsflyer_events") == [[2, 2]]


def test_writers_that_lock_first_are_serialized(
    serializable_events: Any, serializable_emulator: RedshiftDataEmulator
) -> None:
    events = serializable_events
    serializable_emulator.set_latency(0.1)
    load = [
        "DELETE FROM appsflyer_events WHERE id IN ('a', 'b')",
        "INSERT INTO appsflyer_events (id) VALUES ('a'), ('b')",
    ]
    ids = [events.batch_execute_statement(Sqls=load, **REDSHIFT_TARGET)["Id"] for _ in range(3)]
    assert [wait(events, i)["Status"] for i in ids] == ["FINISHED"] * 3
    assert select(events, "SELECT count(*) FROM appsflyer_events") == [[2]]


# -- the property: any text round-trips ------------------------------------------------------


@pytest.fixture(scope="module")
def shared_client() -> Iterator[Any]:
    emu = start_emulator()
    try:
        client = make_redshift_data_client(emu)
        run_ok(client, "CREATE TABLE texts (id INT, body VARCHAR(65535))")
        yield client
    finally:
        emu.close()
    assert not emu.crashes


# Any encodable text except NUL, which neither Redshift nor the emulator stores
# (tested above); lone surrogates are not UTF-8 text at all.
_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=200)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=_TEXT, n=st.integers(min_value=0, max_value=2**31 - 1))
def test_any_text_round_trips_byte_exact(shared_client: Any, text: str, n: int) -> None:
    run_ok(shared_client, f"INSERT INTO texts VALUES ({n}, {redshift_literal(text)})")
    if text:  # a parameter cannot be empty
        run_ok(
            shared_client,
            f"INSERT INTO texts VALUES ({n}, :t)",
            Parameters=[{"name": "t", "value": text}],
        )
    rows = select(shared_client, f"SELECT body FROM texts WHERE id = {n}")
    assert all(row == [text] for row in rows)
    run_ok(shared_client, f"DELETE FROM texts WHERE id = {n}")


# -- other ways in -----------------------------------------------------------------------------


async def test_trio_clients_can_use_it_too(redshift_emulator: RedshiftDataEmulator) -> None:
    credentials = Credentials(
        redshift_emulator.settings.access_key, redshift_emulator.settings.secret_key
    )

    def signed(operation: str, body: dict[str, Any]) -> AWSRequest:
        request = AWSRequest(
            "POST",
            redshift_emulator.url + "/",
            data=json.dumps(body).encode(),
            headers={
                "Content-Type": "application/x-amz-json-1.1",
                "X-Amz-Target": f"RedshiftData.{operation}",
            },
        )
        SigV4Auth(credentials, "redshift-data", "eu-west-1").add_auth(request)
        return request

    async def call(http: httpx.AsyncClient, operation: str, body: dict[str, Any]) -> Any:
        request = signed(operation, body)
        response = await http.post(
            redshift_emulator.url + "/", content=request.body, headers=dict(request.headers)
        )
        assert response.headers["x-amzn-RequestId"]
        return response.json()

    with trio.fail_after(10):
        async with httpx.AsyncClient() as http:
            submitted = await call(
                http, "ExecuteStatement", {"Sql": "SELECT 42", **REDSHIFT_TARGET}
            )
            while (await call(http, "DescribeStatement", {"Id": submitted["Id"]}))[
                "Status"
            ] != "FINISHED":
                await trio.sleep(0.01)
            result = await call(http, "GetStatementResult", {"Id": submitted["Id"]})
            unsigned = await http.post(redshift_emulator.url, content=b"{}")
    assert result["Records"] == [[{"longValue": 42}]]
    assert unsigned.status_code == 403
    assert unsigned.json()["__type"] == "MissingAuthenticationTokenException"


def test_runs_as_a_process() -> None:
    command = [sys.executable, "-m", "tests.emulators.redshift_data", "--port", "0"]
    command += ["--access-key", EMULATOR_SETTINGS.access_key]
    command += ["--secret-key", EMULATOR_SETTINGS.secret_key]
    root = Path(__file__).resolve().parent.parent
    process = subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert select(make_redshift_data_client(url), "SELECT 'up'") == [["up"]]
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
        if process.stdout is not None:
            process.stdout.close()


def test_reset_forgets_everything(events: Any, redshift_emulator: RedshiftDataEmulator) -> None:
    statement_id = run_ok(events, "INSERT INTO appsflyer_events (id) VALUES ('x')")["Id"]
    redshift_emulator.set_rate_limit("DescribeStatement", 0.001)
    redshift_emulator.reset()
    user_tables = "SELECT count(*) FROM duckdb_tables() WHERE schema_name <> 'rs_catalog'"
    assert redshift_emulator.query(user_tables) == [(0,)]
    with pytest.raises(ClientError) as forgotten:
        events.describe_statement(Id=statement_id)
    assert error_code(forgotten) == "ResourceNotFoundException"
    assert redshift_emulator.calls == {"DescribeStatement": 1}
