"""Staged loads, the pure parts: the COPY transaction, the staged object, the key,
the inline-or-COPY choice and how a failed COPY is classified; no I/O."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from afpipe.errors import TransientError
from afpipe.event import Row, to_row
from afpipe.warehouse.redshift import Staging, copy, load_sql, sql
from afpipe.warehouse.redshift.errors import (
    ABORTED,
    CONFLICT,
    COPY_SOURCE,
    FAILED,
    CopySourceError,
    StatementAborted,
    StatementConflict,
    StatementDataError,
    StatementSystemError,
    copy_statement_error,
)
from afpipe.warehouse.redshift.results import StatementResult
from tests.emulators.redshift.lexer import Kind, significant, tokenize
from tests.events import from_payload

TABLE = sql.table_name("analytics.appsflyer_events")
STAGING = Staging(
    bucket="afpipe-staging",
    prefix="loads/",
    iam_role="arn:aws:iam::123456789012:role/redshift-copy",
    region="eu-west-1",
)
KEY = "loads/2024/03/02/12/0b3c6a1e-1111-2222-3333-444455556666.json.gz"


def row(n: int, *, data: str = '{"n":1}', **columns: str | None) -> Row:
    values: dict[str, Any] = {
        "id": f"id-{n}",
        "event_time": "2024-03-02 12:00:01.123000",
        "event_name": "af_purchase",
        "app_id": "app",
        "user_id": "user",
        "device_id": "device",
        "event_data": data,
    }
    return Row(**{**values, **columns})


# --- the transaction -------------------------------------------------------------------------


def test_copy_statement_is_exactly_the_agreed_form() -> None:
    assert copy.copy_sql(STAGING, KEY) == (
        "COPY afpipe_stage (id, event_time, event_name, app_id, user_id, device_id, event_data)"
        f" FROM 's3://afpipe-staging/{KEY}'"
        " IAM_ROLE 'arn:aws:iam::123456789012:role/redshift-copy' REGION 'eu-west-1'"
        " FORMAT AS JSON 'auto' GZIP TIMEFORMAT 'auto'"
    )


def test_copy_literals_decode_under_redshift_rules() -> None:
    odd = Staging(bucket="b.k.t", prefix="", iam_role="arn:aws:iam::1:role/x", region="r")
    tokens = significant(tokenize(copy.copy_sql(odd, "it's\\key")))
    strings = [token.value for token in tokens if token.kind is Kind.STRING]
    assert strings == ["s3://b.k.t/it's\\key", "arn:aws:iam::1:role/x", "r", "auto", "auto"]
    assert "\n" not in copy.copy_sql(odd, "k")  # one line


def test_object_key_is_dated_in_utc_under_the_prefix() -> None:
    now = datetime(2024, 3, 2, 7, 59, 59, tzinfo=UTC)
    assert copy.object_key("loads/", now, "u-1") == "loads/2024/03/02/07/u-1.json.gz"
    assert copy.object_key("", now, "u-2") == "2024/03/02/07/u-2.json.gz"


def test_staging_prefix_ends_with_a_slash() -> None:
    with pytest.raises(ValueError, match="ends with"):
        Staging(bucket="b", prefix="loads", iam_role="r", region="x")


# --- the object ------------------------------------------------------------------------------


def lines_of(body: bytes) -> list[dict[str, Any]]:
    text = gzip.decompress(body).decode("utf-8")
    assert text.endswith("\n")
    # split on "\n" only: U+2028 and U+0085 stay raw inside strings (valid JSON)
    return [json.loads(line) for line in text.split("\n")[:-1]]


def test_object_is_gzipped_json_lines_with_the_column_names() -> None:
    payload = {
        "event_name": "af_purchase",
        "event_time": "2024-03-02 12:00:01.123",
        "app_id": 'it\'s \\ "quoted"',
        "customer_user_id": "Zoë 😀 \u2028 日本",
        "event_value": '{"af_revenue":"9.99"}',
        "nested": {"list": [1, 2.5, None, True], "empty": {}},
        "text\nkey": "line\r\nbreak\ttab\x01 \x85",
    }
    full = to_row(from_payload(payload))
    sparse = row(2, event_time=None, event_name=None, app_id=None, user_id=None, device_id=None)
    body = copy.object_body([full, sparse])
    first, second = lines_of(body)
    assert list(first) == list(sql.COLUMNS)  # keys exactly the columns, in order
    assert first == {
        "id": full.id,
        "event_time": "2024-03-02 12:00:01.123000",
        "event_name": "af_purchase",
        "app_id": 'it\'s \\ "quoted"',
        "user_id": "Zoë 😀 \u2028 日本",
        "device_id": None,
        "event_data": payload,  # the object itself, not a string holding it
    }
    assert second == {
        "id": "id-2",
        "event_time": None,
        "event_name": None,
        "app_id": None,
        "user_id": None,
        "device_id": None,
        "event_data": {"n": 1},
    }
    assert gzip.decompress(body).count(b"\n") == 2


def test_event_data_is_spliced_in_verbatim() -> None:
    data = '{"a":"\\u0000 \\" \\\\","b":[{"c":null}],"d":1e400}'
    line = copy.json_line(row(1, data=data))
    assert line.endswith(b',"event_data":' + data.encode() + b"}")
    assert b"\n" not in line


def test_the_object_is_deterministic() -> None:
    rows = [row(n) for n in range(50)]
    assert copy.object_body(rows) == copy.object_body(rows)  # no gzip timestamp


# --- what may be loaded, and how ---------------------------------------------------------


def test_with_staging_a_large_row_is_storable_up_to_four_megabytes() -> None:
    large = row(1, data=json.dumps({"blob": "x" * 200_000}))
    assert load_sql.unstorable_reason(large, TABLE) is not None  # too large for inline SQL
    assert copy.unstorable_reason(large) is None
    fits = row(2, data=json.dumps({"b": "x" * (copy.MAX_LINE_BYTES - 300)}))
    assert len(copy.json_line(fits)) <= copy.MAX_LINE_BYTES
    assert copy.unstorable_reason(fits) is None
    huge = row(3, data=json.dumps({"b": "x" * copy.MAX_LINE_BYTES}))
    reason = copy.unstorable_reason(huge)
    assert reason is not None and reason.startswith("row too large for Redshift COPY")


def test_with_staging_nul_and_bad_event_times_are_still_refused() -> None:
    assert copy.unstorable_reason(row(1, user_id="a\x00b")) == sql.NUL_REASON
    reason = copy.unstorable_reason(row(1, event_time="2024-03-02T12:00:01"))
    assert reason is not None and "event_time" in reason
    assert copy.unstorable_reason(row(1, data='{"k":"\\u0000"}')) is None


def test_rows_that_fit_one_inline_text_stay_inline() -> None:
    assert copy.fits_inline([row(n) for n in range(20)], TABLE)


def test_rows_needing_two_inline_texts_go_through_s3() -> None:
    rows = [row(n, data=json.dumps({"pad": "x" * 1200, "n": n})) for n in range(90)]
    assert len(load_sql.stage_calls(rows, [sql.create_stage_sql()], sql.TOTAL_LIMITS)) == 2
    assert not copy.fits_inline(rows, TABLE)
    assert copy.fits_inline(rows[:40], TABLE)


def test_the_staging_decision_does_not_follow_the_batch_limit() -> None:
    """Each text is a statement: several cost more than one COPY, even where the
    Data API would take them in one call."""
    rows = [row(n, data=json.dumps({"pad": "x" * 1200, "n": n})) for n in range(90)]
    assert len(load_sql.stage_calls(rows, [sql.create_stage_sql()], sql.PER_TEXT_LIMITS)) == 1
    assert not copy.fits_inline(rows, TABLE)


def test_a_row_too_large_for_inline_sql_goes_through_s3() -> None:
    large = row(1, data=json.dumps({"blob": "x" * 120_000}))
    assert not copy.fits_inline([large], TABLE)
    assert not copy.fits_inline([row(2), large, row(3)], TABLE)
    # just under the cheap bound, escaping pushes it over: still decided right
    quoted = row(4, data=json.dumps({"q": "'" * 60_000}))
    assert load_sql.inline_size_reason(quoted, TABLE) is not None
    assert not copy.fits_inline([quoted], TABLE)


# --- a failed COPY transaction -------------------------------------------------------------


def failed(error: str, status: str = "FAILED") -> StatementResult:
    return StatementResult(id="stmt-1", status=status, error=error)


@pytest.mark.parametrize(
    "error",
    [
        "S3ServiceException:Access Denied,Status 403,Error AccessDenied,Rid X,CanRetry 1",
        "S3ServiceException:The specified bucket does not exist,Status 404,Error NoSuchBucket",
        "The specified S3 prefix 'loads/2024/03/02/12/x.json.gz' does not exist",
        "User arn:aws:redshift:eu-west-1:123456789012:dbuser:c/u is not authorized to assume"
        " IAM Role arn:aws:iam::123456789012:role/redshift-copy",
        "IAM role arn:aws:iam::123456789012:role/x is not associated with the cluster",
        "S3ServiceException:The bucket you are attempting to access must be addressed using"
        " the specified endpoint.,Status 301,Error PermanentRedirect",
        "The S3 bucket addressed by the query is in a different region from this cluster.",
        "S3CurlException: Couldn't connect to server",
    ],
)
def test_a_copy_that_cannot_read_the_object_is_transient(error: str) -> None:
    result = copy_statement_error(failed(error))
    assert isinstance(result, CopySourceError)
    assert result.code == COPY_SOURCE
    assert error in str(result)


def test_a_copy_that_rejected_a_row_is_a_data_error() -> None:
    error = (
        "ERROR: Load into table 'afpipe_stage' failed. "
        "Check 'sys_load_error_detail' system table for details."
    )
    result = copy_statement_error(failed(error))
    assert isinstance(result, StatementDataError)
    assert (str(result), result.code, result.request_id) == (error, FAILED, "stmt-1")


@pytest.mark.parametrize(
    ("error", "status", "kind", "code"),
    [
        (
            "ERROR: 1023 DETAIL: Serializable isolation violation",
            "FAILED",
            StatementConflict,
            CONFLICT,
        ),
        ("Load into table 'afpipe_stage' failed", "ABORTED", StatementAborted, ABORTED),
        ("value too long for type character varying(255)", "FAILED", StatementDataError, FAILED),
        ("connection reset by peer", "FAILED", StatementSystemError, FAILED),
    ],
)
def test_other_failures_are_classified_as_inline_ones(
    error: str, status: str, kind: type[Exception], code: str
) -> None:
    result = copy_statement_error(failed(error, status))
    assert type(result) is kind
    assert isinstance(result, TransientError | StatementDataError)  # for .code
    assert result.code == code
