"""Table names as Redshift resolves them (case-folded, default schema `public`)."""

from __future__ import annotations

from typing import NamedTuple

from tests.emulators.redshift.errors import SqlError
from tests.emulators.redshift.lexer import Kind, Token


class TableName(NamedTuple):
    schema: str | None  # None: unqualified (a temp table of the session, else public)
    table: str

    def qualified(self) -> str:
        return f"{self.schema or 'public'}.{self.table}"


def read_name(sig: list[Token], start: int) -> tuple[TableName, int]:
    """Read `[db.][schema.]table` from significant tokens; Redshift folds even quoted
    identifiers to lower case (enable_case_sensitive_identifier is off by default)."""
    parts: list[str] = []
    i = start
    while i < len(sig) and sig[i].kind in (Kind.WORD, Kind.IDENT):
        parts.append(sig[i].value.lower())
        i += 1
        if i < len(sig) and sig[i].value == "." and len(parts) < 3:
            i += 1
        else:
            break
    if not parts:
        near = sig[start].text if start < len(sig) else "end of input"
        raise SqlError(f'syntax error at or near "{near}"')
    schema = parts[-2] if len(parts) >= 2 else None
    return TableName(schema, parts[-1]), i
