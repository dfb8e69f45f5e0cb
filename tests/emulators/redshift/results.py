"""DuckDB rows as Data API records: typed fields and ColumnMetadata."""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

Field = dict[str, Any]

_INT64 = range(-(2**63), 2**63)
_TYPE_NAMES = {
    "VARCHAR": "varchar",
    "JSON": "super",
    "SMALLINT": "int2",
    "INTEGER": "int4",
    "BIGINT": "int8",
    "HUGEINT": "numeric",
    "FLOAT": "float4",
    "DOUBLE": "float8",
    "BOOLEAN": "bool",
    "DATE": "date",
    "TIME": "time",
    "TIMESTAMP": "timestamp",
    "TIMESTAMP WITH TIME ZONE": "timestamptz",
    "INTERVAL": "interval",
    '"NULL"': "unknown",
}
_SIGNED = frozenset({"int2", "int4", "int8", "float4", "float8", "numeric"})
_DECIMAL = re.compile(r"DECIMAL\((\d+),(\d+)\)")


@dataclass(frozen=True, slots=True)
class ResultSet:
    columns: list[dict[str, Any]]
    records: list[list[Field]]
    size_bytes: int


def result_set(description: Sequence[Sequence[Any]], rows: list[tuple[Any, ...]]) -> ResultSet:
    columns = [_column(str(d[0]), str(d[1])) for d in description]
    records = [[field(value) for value in row] for row in rows]
    size = sum(len(json.dumps(record)) for record in records)
    return ResultSet(columns, records, size)


def _column(name: str, duck_type: str) -> dict[str, Any]:
    decimal = _DECIMAL.fullmatch(duck_type)
    type_name = "numeric" if decimal else _TYPE_NAMES.get(duck_type, duck_type.lower())
    return {
        "name": name,
        "label": name,
        "typeName": type_name,
        "nullable": 1,
        "isSigned": type_name in _SIGNED,
        "isCaseSensitive": type_name in ("varchar", "super"),
        "isCurrency": False,
        "precision": int(decimal[1]) if decimal else 0,
        "scale": int(decimal[2]) if decimal else 0,
        "length": 0,
        "schemaName": "",
        "tableName": "",
    }


def field(value: object) -> Field:
    # bool before int: bool is an int subclass.
    if value is None:
        return {"isNull": True}
    if isinstance(value, bool):
        return {"booleanValue": value}
    if isinstance(value, int):
        return {"longValue": value} if value in _INT64 else {"stringValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value} if math.isfinite(value) else {"stringValue": str(value)}
    if isinstance(value, bytes):
        return {"blobValue": base64.b64encode(value).decode()}
    return {"stringValue": _text(value)}


def _text(value: object) -> str:
    if isinstance(value, dt.datetime):
        return _timestamp(value)
    if isinstance(value, dt.date | dt.time | Decimal | uuid.UUID | str):
        return str(value)
    return json.dumps(value, default=str)


def _timestamp(value: dt.datetime) -> str:
    """PostgreSQL's output: fraction without trailing zeros, `+00` for UTC."""
    suffix = ""
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
        suffix = "+00"
    text = value.strftime("%Y-%m-%d %H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + suffix
