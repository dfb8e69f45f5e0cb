"""Redshift SQL for the warehouse: names, DDL, literals, the Data API's limits; pure.

Values travel as string literals escaped for Redshift, which treats ``\\`` as an
escape character: both ``'`` and ``\\`` are doubled, so every other character
(newlines, control characters, emoji) reaches the column unchanged. NUL is the
exception: a Redshift VARCHAR cannot hold it, so a row with NUL in a text column
is rejected up front as a data error (``value_reason``) and dead-lettered with
its reason, rather than silently altered. ``event_data`` never contains a
raw NUL: its canonical JSON escapes it as ``\\u0000``.

The load's own SQL (stage, merge) and why it is exactly once: ``load_sql``.
"""

from __future__ import annotations

import re

import msgspec

from afpipe.errors import ConfigError
from afpipe.event import Row

STAGE = "afpipe_stage"
LOCK_TABLE = "afpipe_load_lock"  # one per schema: what afpipe loads serialize on
COLUMNS = ("id", "event_time", "event_name", "app_id", "user_id", "device_id", "event_data")
COLUMN_LIST = ", ".join(COLUMNS)
_TEXT_COLUMNS = ("id", "event_name", "app_id", "user_id", "device_id")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,126}")
_EVENT_TIME = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}", re.ASCII
)  # as event.to_row writes it
NUL_REASON = 'invalid byte sequence for encoding "UTF8": 0x00 (Redshift VARCHAR cannot hold NUL)'

# What `afpipe check` expects of the target, as svv_columns names the types.
EXPECTED_COLUMNS = [
    ("id", "character varying(255)"),
    ("event_time", "timestamp without time zone"),
    ("event_name", "character varying(255)"),
    ("app_id", "character varying(255)"),
    ("user_id", "character varying(255)"),
    ("device_id", "character varying(255)"),
    ("event_data", "super"),
    ("created_at", "timestamp without time zone"),
]

_COLUMN_TYPES = """(
    id VARCHAR(255) NOT NULL,
    event_time TIMESTAMP,
    event_name VARCHAR(255),
    app_id VARCHAR(255),
    user_id VARCHAR(255),
    device_id VARCHAR(255),
    event_data SUPER"""


class SqlLimits(msgspec.Struct, frozen=True):
    """The Data API's limits on what one call may carry."""

    max_sql_bytes: int = 100_000  # one SQL text, UTF-8
    # All the texts of one BatchExecuteStatement together: AWS documents the 100 KB
    # per text and does not say whether a call's texts also count together, so the
    # warehouse learns which applies from the Data API's answers (PER_TEXT_LIMITS).
    max_batch_sql_bytes: int = 100_000
    max_statements: int = 40  # per BatchExecuteStatement (SqlList's max in the model)


# 100 KB for all the texts of a call together: always accepted, ~80 events a call.
TOTAL_LIMITS = SqlLimits()
# 100 KB for each text, 40 texts a call: the model sets no other bound on Sqls.
PER_TEXT_LIMITS = SqlLimits(
    max_batch_sql_bytes=TOTAL_LIMITS.max_statements * TOTAL_LIMITS.max_sql_bytes
)
DATA_API_LIMITS = TOTAL_LIMITS  # what the pure functions assume unless told otherwise


class TableName(msgspec.Struct, frozen=True):
    schema: str  # lower case: Redshift folds identifiers, even quoted ones
    table: str

    @property
    def sql(self) -> str:
        return f'"{self.schema}"."{self.table}"'


def table_name(name: str) -> TableName:
    """``table`` or ``schema.table`` (default schema ``public``); nothing else passes."""
    parts = name.split(".")
    if len(parts) > 2 or not all(_IDENTIFIER.fullmatch(part) for part in parts):
        raise ConfigError(f"not a plain table name (table or schema.table): {name!r}")
    lowered = [part.lower() for part in parts]
    return TableName("public", lowered[0]) if len(lowered) == 1 else TableName(*lowered)


def literal(value: str | None) -> str:
    """A Redshift string literal for ``value`` (``NULL`` for None)."""
    if value is None:
        return "NULL"
    if "\x00" in value:
        raise ValueError(NUL_REASON)
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def create_table_sql(table: TableName) -> str:
    # PRIMARY KEY documents the key; Redshift does not enforce it (the load
    # deduplicates). SORTKEY event_time lets the dedup window skip blocks.
    return (
        f"CREATE TABLE IF NOT EXISTS {table.sql} {_COLUMN_TYPES},\n"
        "    created_at TIMESTAMP DEFAULT GETDATE(),\n    PRIMARY KEY (id)\n)\n"
        "DISTKEY (id) SORTKEY (event_time)"
    )


def lock_table(table: TableName) -> TableName:
    """The table every afpipe load into ``table``'s schema LOCKs first."""
    return TableName(table.schema, LOCK_TABLE)


def create_lock_table_sql(table: TableName) -> str:
    # Never written or read: it exists to be LOCKed. Small, so LOCK is cheap.
    return f"CREATE TABLE IF NOT EXISTS {lock_table(table).sql} (held_by VARCHAR(64))"


def lock_sql(table: TableName) -> str:
    return f"LOCK {lock_table(table).sql}"


def values_tuple(row: Row) -> str:
    texts = [literal(value) for value in row[:-1]]
    return f"({', '.join(texts)}, JSON_PARSE({literal(row.event_data)}))"


def create_stage_sql() -> str:
    return f"CREATE TEMP TABLE {STAGE} {_COLUMN_TYPES}\n)"


def clear_stage_sql() -> str:
    return f"DELETE FROM {STAGE}"


def value_reason(row: Row) -> str | None:
    """Why ``row`` can never be loaded, whatever the way (inline SQL or COPY), or None."""
    if any("\x00" in (getattr(row, column) or "") for column in _TEXT_COLUMNS):
        return NUL_REASON
    if row.event_time is not None and not _EVENT_TIME.fullmatch(row.event_time):
        return f"event_time {row.event_time!r} is not a YYYY-MM-DD HH:MM:SS.ffffff timestamp"
    return None
