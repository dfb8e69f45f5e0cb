"""What the Data API answers about a statement: its state, and the rows it returned."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

Value = str | int | float | bool | None


class SubStatement(msgspec.Struct, frozen=True, rename="pascal"):
    id: str
    status: str
    result_rows: int = -1  # rows returned or affected; -1 when not known
    has_result_set: bool = False
    error: str = ""


class StatementResult(msgspec.Struct, frozen=True, rename="pascal"):
    """DescribeStatement's answer, the parts afpipe uses."""

    id: str
    status: str
    result_rows: int = -1
    has_result_set: bool = False
    error: str = ""
    sub_statements: list[SubStatement] = []


def field_value(field: Mapping[str, Any]) -> Value:
    """One GetStatementResult field as a Python value (SUPER and times come as text)."""
    if field.get("isNull"):
        return None
    for kind in ("stringValue", "longValue", "doubleValue", "booleanValue", "blobValue"):
        if kind in field:
            value: Value = field[kind]
            return value
    return None
