"""Loads staged in S3 and COPYed: the object, its key, the transaction; pure, no I/O.

Inline SQL carries at most what the Data API's limits in force allow per
transaction: 100 KB, or 40 texts of 100 KB where the Data API takes them
(``sql.SqlLimits``; ``batch_limit`` learns which). Each text is a
statement of its own, and one COPY costs what one text does, so with staging
on, rows that do not fit in ONE inline text of 100 KB, or a row too large for
inline SQL, are staged by one COPY from one S3 object instead, then merged as
inline loads are (``load_sql``):

    CREATE TEMP TABLE afpipe_stage (...)    -- or DELETE FROM afpipe_stage
    COPY afpipe_stage (id, ...) FROM 's3://B/K' IAM_ROLE 'R' REGION 'G'
        FORMAT AS JSON 'auto' GZIP TIMEFORMAT 'auto'           -- one line
    -- then, in another call of the same session: LOCK ...; INSERT ... SELECT

The object is gzip'd JSON lines: one object per row, keys the lower-case
column names, text columns as JSON strings or null, and ``event_data`` the
payload's canonical JSON itself (not a string holding it), which COPY loads
into the SUPER column. A failed COPY is classified by ``errors.copy_statement_error``.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from datetime import datetime

import msgspec

from afpipe.event import Row
from afpipe.warehouse.redshift import load_sql, sql

MAX_LINE_BYTES = 4 * 1024 * 1024  # COPY's limit on one JSON object
_GZIP_LEVEL = 1  # the object lives for seconds: speed over size


class Staging(msgspec.Struct, frozen=True, kw_only=True):
    """Where staged objects go and how Redshift reads them."""

    bucket: str
    prefix: str  # "" or ending with "/"
    iam_role: str  # the role ARN COPY assumes
    region: str  # the bucket's region (COPY's REGION clause)

    def __post_init__(self) -> None:
        if self.prefix and not self.prefix.endswith("/"):
            raise ValueError("a staging prefix ends with '/'")


class _Line(msgspec.Struct):
    """One row of the object; field order is column order."""

    id: str
    event_time: str | None
    event_name: str | None
    app_id: str | None
    user_id: str | None
    device_id: str | None
    event_data: msgspec.Raw  # spliced in as JSON, not re-encoded as a string


_encoder = msgspec.json.Encoder()


def _line(row: Row) -> _Line:
    return _Line(*row[:-1], msgspec.Raw(row.event_data.encode()))


def json_line(row: Row) -> bytes:
    """The row's line in the object, without the newline."""
    return _encoder.encode(_line(row))


def object_body(rows: Sequence[Row]) -> bytes:
    """The staged object: newline-delimited JSON, gzip'd. CPU-bound: run it in a thread."""
    lines = _encoder.encode_lines([_line(row) for row in rows])
    return gzip.compress(lines, compresslevel=_GZIP_LEVEL, mtime=0)


def object_key(prefix: str, now: datetime, token: str) -> str:
    """``{prefix}YYYY/MM/DD/HH/{token}.json.gz``; ``now`` in UTC, ``token`` unique."""
    return f"{prefix}{now:%Y/%m/%d/%H}/{token}.json.gz"


def unstorable_reason(row: Row) -> str | None:
    """Why ``row`` can never be loaded with staging on (COPY takes large rows), or None."""
    reason = sql.value_reason(row)
    if reason is not None:
        return reason
    line_bytes = len(json_line(row))
    if line_bytes > MAX_LINE_BYTES:
        return (
            f"row too large for Redshift COPY: {line_bytes} bytes of JSON,"
            f" at most {MAX_LINE_BYTES} in one object"
        )
    return None


def copy_sql(staging: Staging, key: str) -> str:
    source = sql.literal(f"s3://{staging.bucket}/{key}")
    return (
        f"COPY {sql.STAGE} ({sql.COLUMN_LIST}) FROM {source}"
        f" IAM_ROLE {sql.literal(staging.iam_role)} REGION {sql.literal(staging.region)}"
        " FORMAT AS JSON 'auto' GZIP TIMEFORMAT 'auto'"
    )


def fits_inline(rows: Sequence[Row], table: sql.TableName) -> bool:
    """Whether ``rows`` (unique ids, at least one) stage as ONE inline text: no
    row too large for inline SQL, and 100 KB of SQL in all, the stage's CREATE
    included. Anything more costs a statement per text; a COPY costs one."""
    limits = sql.TOTAL_LIMITS
    # A lower bound, cheap for a large batch: quoting and escaping only add bytes.
    if sum(len(row.event_data) + len(row.id) for row in rows) > limits.max_batch_sql_bytes:
        return False
    if any(load_sql.inline_size_reason(row, table, limits) is not None for row in rows):
        return False
    calls = load_sql.stage_calls(rows, [sql.create_stage_sql()], limits)
    return len(calls) == 1 and len(calls[0].sqls) == 2
