"""COPY from S3 in the Redshift Data API emulator: boto3's `redshift-data` client
drives it, boto3's `s3` client puts the objects into the suite's moto server."""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.emulators.redshift.copy_sql import MISSING_CREDENTIALS
from tests.emulators.redshift.errors import SqlError
from tests.emulators.redshift.s3 import s3_service_exception
from tests.emulators.redshift.translate import translate
from tests.emulators.redshift_data import RedshiftDataEmulator
from tests.fixtures.redshift import EMULATOR_SETTINGS, REDSHIFT_TARGET, make_redshift_data_client
from tests.fixtures.redshift import wait_statement as wait

ROLE = "arn:aws:iam::123456789012:role/afpipe-copy"
COLUMNS = "id, event_time, event_name, app_id, user_id, device_id, event_data"
STAGE_DDL = (
    "CREATE TEMP TABLE afpipe_stage (id VARCHAR(255) NOT NULL, event_time TIMESTAMP, "
    "event_name VARCHAR(255), app_id VARCHAR(255), user_id VARCHAR(255), "
    "device_id VARCHAR(255), event_data SUPER)"
)
EVENTS_DDL = (
    'CREATE TABLE IF NOT EXISTS "public"."events" (id VARCHAR(255) NOT NULL, '
    "event_time TIMESTAMP, event_name VARCHAR(255), app_id VARCHAR(255), "
    "user_id VARCHAR(255), device_id VARCHAR(255), event_data SUPER, "
    "created_at TIMESTAMP DEFAULT GETDATE())"
)
DEDUPE = (
    'DELETE FROM afpipe_stage USING "public"."events" WHERE afpipe_stage.id = "public"."events".id'
)
PUBLISH = f'INSERT INTO "public"."events" ({COLUMNS}) SELECT {COLUMNS} FROM afpipe_stage'
LOAD_FAILED = (
    "Load into table 'events' failed. Check 'sys_load_error_detail' system table for details."
)


def copy_sql(table: str, path: str, options: str = "GZIP") -> str:
    return (
        f"COPY {table} ({COLUMNS}) FROM '{path}' IAM_ROLE '{ROLE}' REGION 'us-east-1' "
        f"FORMAT AS JSON 'auto' TIMEFORMAT 'auto' {options}"
    )


# -- helpers ---------------------------------------------------------------------


def run(client: Any, sql: str) -> dict[str, Any]:
    return wait(client, client.execute_statement(Sql=sql, **REDSHIFT_TARGET)["Id"])


def run_batch(client: Any, sqls: list[str]) -> dict[str, Any]:
    return wait(client, client.batch_execute_statement(Sqls=sqls, **REDSHIFT_TARGET)["Id"])


def run_ok(client: Any, sql: str) -> dict[str, Any]:
    described = run(client, sql)
    assert described["Status"] == "FINISHED", described.get("Error")
    return described


def select(client: Any, sql: str) -> list[list[Any]]:
    statement_id = run_ok(client, sql)["Id"]
    records = client.get_statement_result(Id=statement_id)["Records"]
    return [[None if f.get("isNull") else next(iter(f.values())) for f in r] for r in records]


def event(n: int, **overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": f"evt-{n:06d}",
        "event_time": f"2024-05-01 12:00:{n % 60:02d}.{n % 1_000_000:06d}",
        "event_name": "af_purchase",
        "app_id": "id123456789",
        "user_id": f"user-{n}",
        "device_id": f"device-{n % 97}",
        "event_data": {"af_revenue": "9.99", "n": n, "tags": ["a", "b"], "nested": {"k": None}},
    }
    record.update(overrides)
    return record


def random_text(chars: int) -> str:
    return "".join(uuid.uuid4().hex for _ in range(chars // 32))


def ndjson(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


@pytest.fixture(scope="module")
def s3(boto_s3: Any) -> Any:
    """boto3's S3 client on the suite's moto (``tests.fixtures.s3``)."""
    return boto_s3


@pytest.fixture(scope="module")
def bucket(s3: Any) -> Iterator[str]:
    name = f"afpipe-copy-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    yield name
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        for item in page.get("Contents", []):
            s3.delete_object(Bucket=name, Key=item["Key"])
    s3.delete_bucket(Bucket=name)


@dataclass(frozen=True)
class Objects:
    """A test's own corner of the module's bucket."""

    s3: Any
    bucket: str
    prefix: str

    def path(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    def put(self, key: str, body: bytes, *, compress: bool = True) -> str:
        data = gzip.compress(body) if compress else body
        self.s3.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data)
        return self.path(key)


@pytest.fixture
def objects(s3: Any, bucket: str) -> Objects:
    return Objects(s3, bucket, f"{uuid.uuid4().hex[:8]}/")


@pytest.fixture
def client(redshift_emulator: RedshiftDataEmulator) -> Any:
    client = make_redshift_data_client(redshift_emulator)
    run_ok(client, EVENTS_DDL)
    return client


def count_events(client: Any) -> int:
    return int(select(client, "SELECT count(*) FROM events")[0][0])


def failed_copy(client: Any, sql: str) -> str:
    """The error of `sql` run after an INSERT in one batch, which must leave no row."""
    described = run_batch(client, ["INSERT INTO events (id) VALUES ('before')", sql])
    assert described["Status"] == "FAILED"
    assert [s["Status"] for s in described["SubStatements"]] == ["FINISHED", "FAILED"]
    assert count_events(client) == 0
    error: str = described["Error"]
    assert error.startswith("Query #2 failed with ERROR: ")
    return error.removeprefix("Query #2 failed with ERROR: ")


# -- loading ---------------------------------------------------------------------


def test_copy_loads_json_records(client: Any, objects: Objects) -> None:
    records = [
        event(1),
        event(2, user_id=None, event_data={"deep": {"list": [1, {"x": "ü"}]}}),
        {"id": "evt-3", "event_name": "only some keys", "unknown_key": "ignored"},
        event(4, event_name="quote ' double \" backslash \\ tab \t newline \n", app_id="é😀漢"),
        event(5, event_data="a plain string", event_time="2024-02-29 23:59:59"),
    ]
    path = objects.put("batch/one.json.gz", ndjson(records))
    copied = run_ok(client, copy_sql("public.events", path))
    assert copied["ResultRows"] == 5
    rows = select(
        client,
        f"SELECT {COLUMNS}, created_at IS NOT NULL FROM events ORDER BY id",
    )
    ids = ["evt-000001", "evt-000002", "evt-000004", "evt-000005", "evt-3"]
    assert [row[0] for row in rows] == ids
    first, second, fourth, fifth, third = rows
    assert first[1:6] == [
        "2024-05-01 12:00:01.000001",
        "af_purchase",
        "id123456789",
        "user-1",
        "device-1",
    ]
    assert json.loads(first[6]) == records[0]["event_data"]
    assert first[7] is True  # columns outside the list get their DEFAULT
    assert second[4] is None
    assert json.loads(second[6]) == {"deep": {"list": [1, {"x": "ü"}]}}
    assert third[1:7] == [None, "only some keys", None, None, None, None]
    assert fourth[2:4] == [records[3]["event_name"], "é😀漢"]
    assert fifth[1] == "2024-02-29 23:59:59"
    assert fifth[6] == '"a plain string"'  # a SUPER string scalar


def test_afpipe_staging_transaction_twice(client: Any, objects: Objects) -> None:
    path = objects.put("afpipe/batch-0001.json.gz", ndjson([event(n) for n in range(50)]))
    sqls = [STAGE_DDL, copy_sql("afpipe_stage", path), DEDUPE, PUBLISH]
    first = run_batch(client, sqls)
    assert first["Status"] == "FINISHED", first.get("Error")
    assert [s["ResultRows"] for s in first["SubStatements"]] == [0, 50, 0, 50]
    again = run_batch(client, sqls)
    assert again["Status"] == "FINISHED", again.get("Error")
    assert [s["ResultRows"] for s in again["SubStatements"]] == [0, 50, 50, 0]
    assert count_events(client) == 50
    (data,) = select(client, "SELECT event_data FROM events WHERE id = 'evt-000049'")[0]
    assert json.loads(data) == event(49)["event_data"]


def test_a_prefix_loads_every_object_under_it(client: Any, objects: Objects) -> None:
    objects.put("load/part-1", ndjson([event(1), event(2)]))
    objects.put("load/part-10", ndjson([event(10)]))
    objects.put("load/part-2", ndjson([event(20), event(21), event(22)]))
    objects.put("other/part-1", ndjson([event(99)]))
    assert run_ok(client, copy_sql("events", objects.path("load/part-1")))["ResultRows"] == 3
    assert run_ok(client, copy_sql("events", objects.path("load/")))["ResultRows"] == 6
    assert count_events(client) == 9


def test_options_in_any_order_and_case(client: Any, objects: Objects) -> None:
    plain = objects.put("plain.json", ndjson([event(1)]), compress=False)
    gzipped = objects.put("gzipped.json.gz", ndjson([event(2)]))
    variants = [
        f"copy events from '{gzipped}' gzip format json 'auto' iam_role '{ROLE}'",
        f"COPY events FROM '{plain}' JSON AS 'auto' REGION AS 'us-east-1' IAM_ROLE DEFAULT",
        f"Copy public.events (id) From '{plain}' Timeformat As 'AUTO' Json 'auto ignorecase' "
        f"Iam_Role '{ROLE},arn:aws:iam::210987654321:role/chained'",
        f"COPY events FROM '{gzipped}' FORMAT JSON 'auto' IAM_ROLE '{ROLE}' GZIP;",
    ]
    for sql in variants:
        assert run_ok(client, sql)["ResultRows"] == 1, sql
    assert count_events(client) == 4


def test_ignorecase_matches_keys_case_insensitively(client: Any, objects: Objects) -> None:
    records = [{"ID": "upper", "Event_Name": "x"}]
    path = objects.put("upper.json", ndjson(records), compress=False)
    loaded = run_ok(client, f"COPY events FROM '{path}' IAM_ROLE default JSON 'auto ignorecase'")
    assert loaded["ResultRows"] == 1
    assert select(client, "SELECT id, event_name FROM events") == [["upper", "x"]]
    exact = run(client, f"COPY events FROM '{path}' IAM_ROLE default JSON 'auto'")
    assert exact["Error"] == f"ERROR: {LOAD_FAILED}"  # `id` has no matching key: NULL into NOT NULL


def test_timeformat_auto_recognises_more_than_the_default(client: Any, objects: Objects) -> None:
    times = ["2024-05-01T12:00:00", "2024-05-01", "2024-05-01 12:00:00.5"]
    path = objects.put("times.json", ndjson([event(n, event_time=t) for n, t in enumerate(times)]))
    default_format = run(client, f"COPY events FROM '{path}' IAM_ROLE default JSON 'auto' GZIP")
    assert default_format["Error"] == f"ERROR: {LOAD_FAILED}"  # the default format has no `T`
    assert run_ok(client, copy_sql("events", path))["ResultRows"] == 3
    assert select(client, "SELECT event_time FROM events ORDER BY id") == [
        ["2024-05-01 12:00:00"],
        ["2024-05-01 00:00:00"],
        ["2024-05-01 12:00:00.5"],
    ]


def test_column_names_are_folded_like_redshift(client: Any, objects: Objects) -> None:
    run_ok(client, 'CREATE TABLE mixed (ID VARCHAR(8) NOT NULL, "Payload" SUPER)')
    path = objects.put("mixed.json", ndjson([{"id": "a", "payload": [1]}]), compress=False)
    loaded = run_ok(client, f"COPY mixed FROM '{path}' IAM_ROLE default JSON 'auto'")
    assert loaded["ResultRows"] == 1
    assert select(client, "SELECT id, payload FROM mixed") == [["a", "[1]"]]


# -- failures --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "line", "column", "code", "message"),
    [
        (ndjson([event(1), event(2, app_id="é" * 128)]), 2, "app_id", 1204, "String length"),
        (ndjson([event(1, event_time="2024-13-01 00:00:00")]), 1, "event_time", 1206, "Invalid"),
        (ndjson([event(1, event_time="yesterday")]), 1, "event_time", 1206, "timestamp"),
        (ndjson([event(1), event(2), event(3, id=None)]), 3, "id", 1213, "Missing data"),
        (ndjson([event(1)]) + b'{"id": "x", oops}\n', 2, "", 1216, "Invalid JSON"),
        (ndjson([event(1)]) + b"[1, 2]\n", 2, "", 1216, "JSON object"),
        (ndjson([event(1)]) + b'{"id": NaN}\n', 2, "", 1216, "Invalid JSON"),
        (b'{"id": "\xff"}\n', 1, "", 1220, "UTF8"),
    ],
    ids=["too-long", "bad-month", "bad-timestamp", "not-null", "json", "array", "nan", "utf8"],
)
def test_load_errors_fail_the_transaction(
    client: Any, objects: Objects, body: bytes, line: int, column: str, code: int, message: str
) -> None:
    path = objects.put("bad.json.gz", body)
    assert failed_copy(client, copy_sql("events", path)) == LOAD_FAILED
    detail = select(
        client,
        "SELECT query_id, file_name, line_number, column_name, error_code, error_message "
        "FROM sys_load_error_detail",
    )
    (copy_step,) = client.list_statements(Status="FAILED")["Statements"]
    query_id = client.describe_statement(Id=f"{copy_step['Id']}:2")["RedshiftQueryId"]
    assert detail[0][:5] == [query_id, path, line, column, code]
    assert message in detail[0][5]


def test_reset_forgets_load_errors(
    redshift_emulator: RedshiftDataEmulator, client: Any, objects: Objects
) -> None:
    path = objects.put("bad.json.gz", ndjson([event(1, id=None)]))
    assert run(client, copy_sql("events", path))["Error"] == f"ERROR: {LOAD_FAILED}"
    detail = "SELECT count(*) FROM rs_catalog.sys_load_error_detail"
    assert redshift_emulator.query(detail) == [(1,)]
    redshift_emulator.reset()
    assert redshift_emulator.query(detail) == [(0,)]


@pytest.mark.parametrize(("compressed", "option"), [(True, ""), (False, "GZIP")])
def test_gzip_must_match_the_object(
    client: Any, objects: Objects, compressed: bool, option: str
) -> None:
    path = objects.put("data", ndjson([event(1)]), compress=compressed)
    assert failed_copy(client, copy_sql("events", path, option)) == LOAD_FAILED


def test_missing_objects_are_s3_errors(client: Any, objects: Objects) -> None:
    no_bucket = failed_copy(client, copy_sql("events", f"s3://{objects.bucket}-x/data.json.gz"))
    assert no_bucket.startswith(
        "S3ServiceException:The specified bucket does not exist,Status 404,Error NoSuchBucket,"
    )
    no_key = failed_copy(client, copy_sql("events", objects.path("nothing/here.json.gz")))
    assert (
        no_key == f"The specified S3 prefix '{objects.prefix}nothing/here.json.gz' does not exist"
    )


def test_s3_error_answers_read_like_redshift() -> None:
    response = {
        "Error": {"Code": "NoSuchKey", "Message": "The specified key does not exist."},
        "ResponseMetadata": {"HTTPStatusCode": 404, "RequestId": "R1", "HostId": "H1"},
    }
    assert str(s3_service_exception(response)) == (
        "S3ServiceException:The specified key does not exist.,Status 404,Error NoSuchKey,"
        "Rid R1,ExtRid H1,CanRetry 1"
    )


def test_copy_is_a_step_like_any_other(
    redshift_emulator: RedshiftDataEmulator, client: Any, objects: Objects
) -> None:
    path = objects.put("ok.json.gz", ndjson([event(1)]))
    redshift_emulator.set_latency(0.2)
    described = run_batch(client, [STAGE_DDL, copy_sql("afpipe_stage", path)])
    assert described["SubStatements"][1]["Duration"] >= 0.2e9
    redshift_emulator.set_latency(0)
    redshift_emulator.fail_next_statements(1, "ERROR: injected")
    assert run(client, copy_sql("events", path))["Error"] == "ERROR: injected"
    assert count_events(client) == 0


def test_copy_of_3000_events_is_fast(client: Any, objects: Objects) -> None:
    """afpipe's staging batch at benchmark size: 3,000 events of ~1.2 KB."""
    warm_up = objects.put("warm.json.gz", ndjson([event(-1)]))
    run_ok(client, copy_sql("events", warm_up))  # boto3's S3 client is made at the first COPY
    records = [event(n, event_data={"payload": random_text(960), "n": n}) for n in range(3000)]
    body = ndjson(records)
    assert 1_100 <= len(body) / len(records) <= 1_400
    path = objects.put("big.json.gz", body)
    described = run_batch(client, [STAGE_DDL, copy_sql("afpipe_stage", path), DEDUPE, PUBLISH])
    assert described["Status"] == "FINISHED", described.get("Error")
    copy_step = described["SubStatements"][1]
    assert copy_step["ResultRows"] == 3000
    assert copy_step["Duration"] < 1.5e9  # wall time, S3 GET from moto included
    assert count_events(client) == 3001


def test_a_later_failure_rolls_the_copy_back(client: Any, objects: Objects) -> None:
    path = objects.put("ok.json.gz", ndjson([event(1), event(2)]))
    described = run_batch(
        client,
        [copy_sql("events", path), f"INSERT INTO events (id) VALUES ('{'x' * 256}')"],
    )
    assert described["Status"] == "FAILED"
    assert described["SubStatements"][0]["ResultRows"] == 2
    assert count_events(client) == 0


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ("FORMAT AS JSON 'auto'", MISSING_CREDENTIALS),
        ("FORMAT AS JSON 'auto' IAM_ROLE 'arn:aws:iam::123:role/x'", "Invalid IAM_ROLE"),
        ("FORMAT AS JSON 'auto' IAM_ROLE 'my-role'", "Invalid IAM_ROLE"),
    ],
)
def test_copy_needs_an_iam_role(client: Any, options: str, error: str) -> None:
    assert failed_copy(client, f"COPY events FROM 's3://bucket/x' {options}").startswith(error)


def test_without_an_s3_endpoint_copy_fails() -> None:
    with RedshiftDataEmulator(EMULATOR_SETTINGS) as emu:
        client = make_redshift_data_client(emu)
        run_ok(client, EVENTS_DDL)
        described = run(client, copy_sql("events", "s3://bucket/key"))
    assert described["Error"].startswith(
        "ERROR: S3ServiceException:emulator has no S3 endpoint (Settings.s3_endpoint_url is None)"
    )


def test_unsupported_options_fail_through_the_api(client: Any) -> None:
    described = run(client, "COPY events FROM 's3://bucket/x' IAM_ROLE default CSV")
    assert described["Error"] == "ERROR: emulator: COPY option CSV is not supported"


# -- the grammar (no HTTP) -----------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ("CSV", "CSV"),
        ("FORMAT AS PARQUET", "FORMAT AS PARQUET"),
        ("FORMAT AS JSON 'auto' MANIFEST", "MANIFEST"),
        ("JSON 'auto' MAXERROR 10", "MAXERROR"),
        ("JSON 'auto' DATEFORMAT 'auto'", "DATEFORMAT"),
        ("JSON 'auto' TIMEFORMAT 'epochsecs'", "TIMEFORMAT 'epochsecs'"),
        ("JSON 's3://bucket/jsonpaths.json'", "JSON 's3://bucket/jsonpaths.json'"),
        ("JSON 'noshred'", "JSON 'noshred'"),
        ("FORMAT AS JSON", "JSON without 'auto'"),
        ("JSON 'auto' CREDENTIALS 'aws_iam_role=x'", "CREDENTIALS"),
        ("JSON 'auto' WITH CREDENTIALS AS 'aws_iam_role=x'", "CREDENTIALS"),
        ("JSON 'auto' ACCESS_KEY_ID 'a' SECRET_ACCESS_KEY 's'", "ACCESS_KEY_ID"),
        ("JSON 'auto' LZOP", "LZOP"),
    ],
)
def test_unsupported_options_are_named(options: str, option: str) -> None:
    sql = f"COPY t FROM 's3://bucket/key' IAM_ROLE default {options}"
    with pytest.raises(SqlError, match=r"^emulator: COPY option .* is not supported") as failed:
        translate(sql, None)
    assert str(failed.value).startswith(f"emulator: COPY option {option} is not supported")


@pytest.mark.parametrize(
    ("sql", "error"),
    [
        ("COPY t FROM 's3://b/k' IAM_ROLE default", "without FORMAT AS JSON"),
        ("COPY t FROM 'emr://j-1/part' IAM_ROLE default JSON 'auto'", "only s3://"),
        ("COPY t FROM 's3:///k' IAM_ROLE default JSON 'auto'", "Invalid S3 path"),
        ("COPY t (a, a) FROM 's3://b/k' IAM_ROLE default JSON 'auto'", "more than once"),
        ("COPY t FROM 's3://b/k' IAM_ROLE default JSON 'auto' GZIP GZIP", "redundant"),
        ("COPY t FROM 's3://b/k' GZIP JSON 'auto'", "Invalid credentials"),
        ("COPY t TO 's3://b/k'", 'syntax error at or near "TO"'),
        ("COPY t (a FROM 's3://b/k'", 'syntax error at or near "FROM"'),
        ("COPY t FROM 's3://b/k' IAM_ROLE default JSON 'auto' , GZIP", 'near ","'),
    ],
)
def test_copy_grammar_errors(sql: str, error: str) -> None:
    with pytest.raises(SqlError, match=error):
        translate(sql, None)


def test_copy_plan() -> None:
    plan = translate(
        "copy Stage.Events (ID, \"Event_Name\") from 's3://bkt/a/b-' "
        "region as 'eu-west-1' json as 'Auto IgnoreCase' iam_role default gzip",
        None,
    )
    command = plan.copy
    assert command is not None
    assert plan.writes == (command.table,)
    assert command.table.qualified() == "stage.events"
    assert command.columns == ("id", "event_name")
    assert (command.bucket, command.prefix, command.region) == ("bkt", "a/b-", "eu-west-1")
    assert command.ignorecase and command.gzip
    assert command.iam_role == "default"
