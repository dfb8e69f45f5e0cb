"""COPY's load: JSON 'auto' records turned into column values and checked as
Redshift checks them, then one bulk `INSERT ... SELECT unnest(?), ...` - never
SQL per row, so thousands of rows cost tens of milliseconds.

Redshift's JSON input is a stream of objects separated by whitespace (usually one
a line); each object is a row. Keys match the loaded columns' names exactly
('auto') or case-insensitively ('auto ignorecase'); a missing key or null loads
NULL, other keys are ignored. A field that does not fit its column fails the
whole COPY with Redshift's "Load into table ... failed" and a row in
sys_load_error_detail.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.emulators.redshift.catalog import SUPER_MAX_BYTES
from tests.emulators.redshift.copy_sql import CopyCommand
from tests.emulators.redshift.errors import SqlError
from tests.emulators.redshift.names import TableName
from tests.emulators.redshift.s3 import S3Reader, no_s3_endpoint

Run = Callable[[str, list[object] | None], list[tuple[Any, ...]]]

# The column types COPY loads here (DuckDB's type -> the kind of conversion).
_KINDS = {"VARCHAR": "varchar", "TIMESTAMP": "timestamp", "JSON": "super"}
_CASTS = {"varchar": "", "timestamp": "::TIMESTAMP", "super": "::JSON"}
_LENGTH_CHECK = re.compile(r"value too long for type ([a-z ]+)\((\d+)\)")
# Redshift's default TIMEFORMAT (YYYY-MM-DD HH:MI:SS, fractions of a second
# allowed), and what the emulator recognises of TIMEFORMAT 'auto' (also a `T`
# separator, or a date alone).
_TIMESTAMP = re.compile(r"(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:\.\d{1,6})?")
_TIMESTAMP_AUTO = re.compile(r"(\d{4})-(\d\d)-(\d\d)(?:[ T](\d\d):(\d\d):(\d\d)(?:\.\d{1,6})?)?")
_WHITESPACE = re.compile(r"[ \t\r\n]*")
_RAW_VALUE_CHARS = 1024

# Redshift's load error codes and reasons (STL_LOAD_ERRORS / SYS_LOAD_ERROR_DETAIL).
TOO_LONG = (1204, "String length exceeds DDL length")
BAD_TIMESTAMP = (1206, "Invalid timestamp format or value [YYYY-MM-DD HH24:MI:SS]")
NOT_NULL = (1213, "Missing data for not-null field")
BAD_JSON = 1216
BAD_UTF8 = (1220, "String contains invalid or unsupported UTF8 codepoints")
SUPER_TOO_BIG = (1204, "SUPER value exceeds the 16 MB limit")


def load_failed(table: TableName) -> SqlError:
    return SqlError(
        f"Load into table '{table.table}' failed. "
        "Check 'sys_load_error_detail' system table for details."
    )


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    kind: str  # varchar | timestamp | super, or "" when COPY cannot load it here
    type_name: str  # as Redshift names it
    max_bytes: int  # VARCHAR/CHAR length in bytes; 0: no limit
    nullable: bool


@dataclass(frozen=True, slots=True)
class LoadErrorDetail:
    """One row of sys_load_error_detail."""

    file_name: str
    line_number: int
    column_name: str
    column_type: str
    column_length: int
    error_code: int
    error_message: str
    raw_field_value: str


class LoadError(Exception):
    def __init__(self, detail: LoadErrorDetail) -> None:
        super().__init__(detail.error_message)
        self.detail = detail


class _FieldError(Exception):
    def __init__(self, reason: tuple[int, str], raw: str) -> None:
        super().__init__(reason[1])
        self.code, self.message = reason
        self.raw = raw


def copy_from_s3(
    command: CopyCommand,
    run: Run,
    *,
    temp: bool,
    s3: S3Reader | None,
    check: Callable[[], None],
) -> int:
    """Load the objects into the table through `run` (the transaction's SQL);
    the number of rows loaded."""
    columns = _loaded_columns(run, command, temp)
    if s3 is None:
        raise no_s3_endpoint()
    loader = JsonLoader(
        columns, ignorecase=command.ignorecase, timeformat_auto=command.timeformat_auto
    )
    for file_name, body in s3.read(command.bucket, command.prefix, command.region, check):
        loader.add_file(file_name, body, gzipped=command.gzip)
    check()
    if loader.rows:
        table = command.table
        target = (
            f"temp.main.{_quote(table.table)}"
            if temp
            else f"{_quote(table.schema or 'public')}.{_quote(table.table)}"
        )
        names = ", ".join(_quote(c.name) for c in columns)
        selects = ", ".join(f"unnest(?::VARCHAR[]){_CASTS[c.kind]}" for c in columns)
        params: list[object] = list(loader.values)
        run(f"INSERT INTO {target} ({names}) SELECT {selects}", params)
    return loader.rows


def _loaded_columns(run: Run, command: CopyCommand, temp: bool) -> list[Column]:
    table = command.table
    database, schema = ("temp", "main") if temp else (None, table.schema or "public")
    where = (
        "WHERE database_name = coalesce(?, current_database()) AND schema_name = ? "
        "AND table_name = ?"
    )
    params: list[object] = [database, schema, table.table]
    rows = run(
        f"SELECT column_name, data_type, is_nullable FROM duckdb_columns() {where} "
        "ORDER BY column_index",
        params,
    )
    if not rows:
        shown = table.table if table.schema is None else table.qualified()
        raise SqlError(f'relation "{shown}" does not exist')
    lengths: dict[str, tuple[str, int]] = {}
    for column_names, expression in run(
        f"SELECT constraint_column_names, expression FROM duckdb_constraints() {where} "
        "AND constraint_type = 'CHECK'",
        params,
    ):
        match = _LENGTH_CHECK.search(str(expression))
        if match and len(column_names) == 1:
            lengths[str(column_names[0]).lower()] = (match[1], int(match[2]))
    # DuckDB keeps names as the DDL spelt them; Redshift folds them to lower case.
    columns: dict[str, Column] = {}
    for duck_name, duck_type, nullable in rows:
        name = str(duck_name).lower()
        type_name, max_bytes = lengths.get(name, (str(duck_type).lower(), 0))
        kind = _KINDS.get(str(duck_type), "")
        type_name = "super" if kind == "super" else type_name
        columns[name] = Column(name, kind, type_name, max_bytes, bool(nullable))
    wanted = command.columns or tuple(columns)
    for name in wanted:
        if name not in columns:
            raise SqlError(f'column "{name}" of relation "{table.table}" does not exist')
        if not columns[name].kind:
            raise SqlError(
                f'emulator: COPY into column "{name}" of type {columns[name].type_name} '
                "is not supported (only VARCHAR, CHAR, TIMESTAMP and SUPER)"
            )
    return [columns[name] for name in wanted]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class JsonLoader:
    """Column values (as text, cast by DuckDB on insert) of every record added."""

    def __init__(self, columns: list[Column], *, ignorecase: bool, timeformat_auto: bool) -> None:
        self.columns = columns
        self.values: list[list[str | None]] = [[] for _ in columns]
        self.rows = 0
        self._ignorecase = ignorecase
        self._timestamp = _TIMESTAMP_AUTO if timeformat_auto else _TIMESTAMP
        self._decoder = json.JSONDecoder(parse_constant=_reject_constant)

    def add_file(self, file_name: str, body: bytes, *, gzipped: bool) -> None:
        if gzipped:
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError, zlib.error) as exc:
                raise _file_error(file_name, 1, BAD_JSON, f"Invalid gzip data: {exc}") from exc
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = body.count(b"\n", 0, exc.start) + 1
            bad = body[exc.start : exc.start + 4].hex()
            message = f"{BAD_UTF8[1]}. Bad UTF8 hex sequence: {bad}"
            raise _file_error(file_name, line, BAD_UTF8[0], message) from exc
        self._add_text(file_name, text)

    def _add_text(self, file_name: str, text: str) -> None:
        pos = _skip_whitespace(text, 0)
        while pos < len(text):
            try:
                record, end = self._decoder.raw_decode(text, pos)
            except (ValueError, RecursionError) as exc:  # JSONDecodeError, NaN, too deep
                at = exc.pos if isinstance(exc, json.JSONDecodeError) else pos
                line = text.count("\n", 0, at) + 1
                message = f"Invalid JSON: {getattr(exc, 'msg', str(exc))}"
                raise _file_error(file_name, line, BAD_JSON, message) from exc
            if not isinstance(record, dict):
                line = text.count("\n", 0, pos) + 1
                message = "Invalid JSON: with 'auto', each record must be a JSON object"
                raise _file_error(file_name, line, BAD_JSON, message)
            self._add_record(record, file_name, text, pos)
            pos = _skip_whitespace(text, end)

    def _add_record(self, record: dict[str, Any], file_name: str, text: str, pos: int) -> None:
        if self._ignorecase:
            record = {key.lower(): value for key, value in record.items()}
        row: list[str | None] = []
        try:
            for column in self.columns:
                row.append(_convert(column, record.get(column.name), self._timestamp))
        except _FieldError as exc:
            raise LoadError(
                LoadErrorDetail(
                    file_name=file_name,
                    line_number=text.count("\n", 0, pos) + 1,
                    column_name=column.name,
                    column_type=column.type_name,
                    column_length=column.max_bytes,
                    error_code=exc.code,
                    error_message=exc.message,
                    raw_field_value=exc.raw[:_RAW_VALUE_CHARS],
                )
            ) from exc
        for values, value in zip(self.values, row, strict=True):
            values.append(value)
        self.rows += 1


_super_text = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def _convert(column: Column, value: Any, timestamp: re.Pattern[str]) -> str | None:
    if value is None:
        if not column.nullable:
            raise _FieldError(NOT_NULL, "")
        return None
    if column.kind == "super":
        # An object or array is that JSON; a scalar (a string too) a SUPER scalar.
        text = _super_text(value)
        if len(_check_utf8(text)) > SUPER_MAX_BYTES:
            raise _FieldError(SUPER_TOO_BIG, "")
        return text
    if not isinstance(value, str):
        kind = "object or array" if isinstance(value, dict | list) else type(value).__name__
        raise SqlError(
            f"emulator: COPY of a JSON {kind} into {column.type_name} column "
            f'"{column.name}" is not supported (only strings and null)'
        )
    if column.kind == "varchar":
        if "\x00" in value:
            raise _FieldError((BAD_UTF8[0], f"{BAD_UTF8[1]}. Bad UTF8 hex sequence: 00"), value)
        size = len(value) if value.isascii() else len(_check_utf8(value))
        if column.max_bytes and size > column.max_bytes:
            raise _FieldError(TOO_LONG, value)
        return value
    return _timestamp(value, timestamp)


def _timestamp(value: str, pattern: re.Pattern[str]) -> str:
    match = pattern.fullmatch(value)
    if match:
        year, month, day, hour, minute, second = match.groups()
        try:
            dt.datetime(
                int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0)
            )
        except ValueError:
            pass
        else:
            return value
    raise _FieldError(BAD_TIMESTAMP, value)


def _check_utf8(text: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError as exc:  # a lone surrogate, from a \ud800 escape
        raise _FieldError(BAD_UTF8, text) from exc


def _skip_whitespace(text: str, pos: int) -> int:
    match = _WHITESPACE.match(text, pos)
    return match.end() if match else pos


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _file_error(file_name: str, line: int, code: int, message: str) -> LoadError:
    return LoadError(LoadErrorDetail(file_name, line, "", "", 0, code, message, ""))
