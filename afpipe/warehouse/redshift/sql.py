"""Redshift SQL for the warehouse: DDL, literals and the idempotent load; pure, no I/O.

Values travel as string literals escaped for Redshift, which treats ``\\`` as an
escape character: both ``'`` and ``\\`` are doubled, so every other character
(newlines, control characters, emoji) reaches the column unchanged. NUL is the
exception: a Redshift VARCHAR cannot hold it, so a row with NUL in a text column
is rejected up front as a data error (``unstorable_reason``) and dead-lettered
with its reason, rather than silently altered. ``event_data`` never contains a
raw NUL: its canonical JSON escapes it as ``\\u0000``.

A load runs in a Data API session (one connection kept across calls, so its
temp table outlives a call) and takes two steps (each BatchExecuteStatement is
one transaction of at most 40 SQL texts, each at most 100 KB, and 100 KB in all
unless the Data API takes more: see ``SqlLimits``):

    -- 1. stage: as many calls as the rows need, never locked, so the loads of
    --    several writers and processes overlap here
    CREATE TEMP TABLE afpipe_stage (...)    -- or DELETE FROM afpipe_stage, in a
                                            -- session that staged a load before
    INSERT INTO afpipe_stage (...) VALUES (...), (...)      -- one or more

    -- 2. merge: one call, two statements, whatever the number of rows
    LOCK <schema>.afpipe_load_lock                          -- loaders queue here
    INSERT INTO <target> (...) SELECT ... FROM afpipe_stage
        WHERE NOT EXISTS (SELECT 1 FROM <target> AS known
                          WHERE known.id = afpipe_stage.id AND <event-time window>)

Loads still run one after another (point 2 below), but only for the merge: the
lock is held for two statements, not for one statement per 100 KB of rows. The
stage is the session's own: no other session sees it or waits on it.

Why this is exactly once, under SERIALIZABLE and under SNAPSHOT isolation, with
any number of afpipe processes, instances and retries:

1. Redshift does not enforce PRIMARY KEY, and under SNAPSHOT isolation two
   overlapping transactions that each see an id absent both insert it. So the
   anti-join alone is not enough: two loads of one id must never overlap.
2. Every afpipe load of a schema first takes ``LOCK`` on the small table
   ``afpipe_load_lock`` of that schema (``ensure_table`` creates it), which is
   ACCESS EXCLUSIVE until the transaction ends: afpipe loads into the schema
   run one after another, whichever process, instance or retry sends them.
   The target itself is never locked, so analysts' SELECTs never wait on a load.
3. A transaction's snapshot is taken at its first SELECT, DML or CREATE TABLE,
   not at LOCK. The LOCK comes first in the merge, so each merge's snapshot is
   taken after the previous merge committed (or rolled back): its anti-join sees
   every row any earlier load committed, and inserts only the ids nobody holds.
   The stage step commits nothing anyone else can see: a load that stops after
   it (crash, drain, an error) leaves only a temp table, gone with its session.
4. A merge whose answer was lost (kill -9, a dropped connection, a timeout whose
   CancelStatement lost the race) either still holds the lock - its retry waits,
   then finds its rows - or has not taken it yet - then it finds the retry's
   rows. Either order leaves one row per id. A retry stages again, in another
   session: a session whose call did not end well is never used again (only a
   merge refused for a serializable conflict, which rolled back, is retried in
   its session).
5. Under SERIALIZABLE, loads that run one after another cannot form a cycle;
   a conflict with another writer of the target (not afpipe) is retried.

The dedup and the insert are one statement (an anti-join): every statement
costs a round of the Data API. Rows are unique by id within a load
(``unique_rows``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta

import msgspec

from afpipe.errors import AfpipeError, ConfigError, PermanentError
from afpipe.event import Row

STAGE = "afpipe_stage"
LOCK_TABLE = "afpipe_load_lock"  # one per schema: what afpipe loads serialize on
COLUMNS = ("id", "event_time", "event_name", "app_id", "user_id", "device_id", "event_data")
_COLUMN_LIST = ", ".join(COLUMNS)
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

# The Data API's answer to a call whose SQL is too large ("Cannot process query
# string larger than 100kB", a ValidationException), or a size refusal in front of it.
_SIZE_REFUSAL = re.compile(r"larger than|too large|too long|exceed", re.I)


def refused_for_total_size(sqls: Sequence[str], exc: AfpipeError) -> bool:
    """Whether ``exc``, the Data API's refusal of a BatchExecuteStatement of
    ``sqls`` (more than 100 KB in all, each text within 100 KB), is to be taken
    for the 100 KB limit counting the texts together: any refusal that speaks of
    size, whatever its code (the Data API's ValidationException, or a 413 from in
    front of it). Broad on purpose: missing a size refusal would retry the same
    call for ever, while a wrong guess costs only smaller calls. A refusal that
    does not speak of size (a bad endpoint, say) teaches nothing; nor does a call
    within 100 KB in all."""
    if not isinstance(exc, PermanentError) or not _SIZE_REFUSAL.search(str(exc)):
        return False
    sizes = [len(text.encode()) for text in sqls]
    return (
        max(sizes, default=0) <= TOTAL_LIMITS.max_sql_bytes
        and sum(sizes) > TOTAL_LIMITS.max_batch_sql_bytes
    )


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


def unique_rows(rows: Sequence[Row]) -> list[Row]:
    """The first row of each id: a batch may carry one event twice."""
    seen: dict[str, Row] = {}
    for row in rows:
        seen.setdefault(row.id, row)
    return list(seen.values())


def _insert_stage_prefix() -> str:
    return f"INSERT INTO {STAGE} ({_COLUMN_LIST}) VALUES "


def create_stage_sql() -> str:
    return f"CREATE TEMP TABLE {STAGE} {_COLUMN_TYPES}\n)"


def clear_stage_sql() -> str:
    return f"DELETE FROM {STAGE}"


def _shifted(event_time: str, seconds: float) -> str:
    moment = datetime.fromisoformat(event_time)
    try:
        moment += timedelta(seconds=seconds)
    except OverflowError:
        moment = datetime.max if seconds > 0 else datetime.min
    return moment.isoformat(sep=" ", timespec="microseconds")


def _insert_new_sql(table: TableName, span: tuple[str, str] | None, has_null: bool) -> str:
    target = table.sql
    bounds: list[str] = []
    if span is not None:
        low, high = (f"CAST({literal(moment)} AS TIMESTAMP)" for moment in span)
        bounds.append(f"known.event_time BETWEEN {low} AND {high}")
    if has_null:
        bounds.append("known.event_time IS NULL")
    return (
        f"INSERT INTO {target} ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM {STAGE}"
        f" WHERE NOT EXISTS (SELECT 1 FROM {target} AS known WHERE known.id = {STAGE}.id"
        f" AND ({' OR '.join(bounds)}))"
    )


def insert_new_sql(table: TableName, rows: Sequence[Row], window_s: float) -> str:
    """Insert the stage's rows whose ids the target does not hold yet.

    A repeated event has the same payload, hence the same id *and* the same
    event_time, so a duplicate can only sit at one of the stage's own event
    times: looking only at target rows with event_time in [batch min -
    ``window_s``, batch max + ``window_s``] is exact, and with event_time as
    the sort key Redshift skips every block outside that range. The window
    only guards against a future change in how event_time is derived from
    the payload. Rows without an event_time (absent or unparseable) can only
    repeat rows without one: they are compared with all such rows, a lookup
    not bounded by time, which is why it is added only when the batch has them.
    """
    times = [row.event_time for row in rows if row.event_time is not None]
    span = (_shifted(min(times), -window_s), _shifted(max(times), window_s)) if times else None
    return _insert_new_sql(table, span, has_null=len(times) < len(rows))


def _fixed_bytes(table: TableName) -> int:
    """The SQL every load transaction carries besides its VALUES (longest form)."""
    widest = "0001-01-01 00:00:00.000000"
    fixed = [
        lock_sql(table),
        create_stage_sql(),
        _insert_new_sql(table, (widest, widest), has_null=True),
    ]
    return sum(len(sql.encode()) for sql in fixed)


def value_reason(row: Row) -> str | None:
    """Why ``row`` can never be loaded, whatever the way (inline SQL or COPY), or None."""
    if any("\x00" in (getattr(row, column) or "") for column in _TEXT_COLUMNS):
        return NUL_REASON
    if row.event_time is not None and not _EVENT_TIME.fullmatch(row.event_time):
        return f"event_time {row.event_time!r} is not a YYYY-MM-DD HH:MM:SS.ffffff timestamp"
    return None


def inline_size_reason(
    row: Row, table: TableName, limits: SqlLimits = DATA_API_LIMITS
) -> str | None:
    """Why ``row`` is too large to load as inline SQL through the Data API, or None."""
    statement_bytes = len(_insert_stage_prefix().encode()) + len(values_tuple(row).encode())
    limit_bytes = min(limits.max_sql_bytes, limits.max_batch_sql_bytes - _fixed_bytes(table))
    if statement_bytes > limit_bytes:
        return (
            f"row too large for the Redshift Data API: {statement_bytes} bytes of SQL, "
            f"at most {limit_bytes} fit in one statement"
        )
    return None


def unstorable_reason(
    row: Row, table: TableName, limits: SqlLimits = DATA_API_LIMITS
) -> str | None:
    """Why ``row`` can never be loaded as inline SQL through the Data API, or None."""
    return value_reason(row) or inline_size_reason(row, table, limits)


class StageCall(msgspec.Struct, frozen=True):
    rows: list[Row]
    sqls: list[str]  # for one BatchExecuteStatement in the load's session


def stage_calls(
    rows: Sequence[Row], first: Sequence[str] = (), limits: SqlLimits = DATA_API_LIMITS
) -> list[StageCall]:
    """The first step of a load: ``rows`` (unique ids, all storable) into the
    session's stage as few calls as the limits allow, ``first`` (the stage's
    CREATE or DELETE) at the head of the first call."""
    tuples = [values_tuple(row) for row in rows]
    sizes = [len(text.encode()) for text in tuples]
    head = list(first)
    out: list[StageCall] = []
    for groups in _pack(sizes, len(create_stage_sql().encode()), limits):
        inserts = [_insert_stage_prefix() + ",".join(tuples[i] for i in group) for group in groups]
        out.append(StageCall([rows[i] for group in groups for i in group], head + inserts))
        head = []
    return out


def merge_sqls(table: TableName, rows: Sequence[Row], window_s: float) -> list[str]:
    """The second step: the staged ``rows`` into the target, under the lock."""
    return [lock_sql(table), insert_new_sql(table, rows, window_s)]


def _pack(sizes: list[int], fixed_bytes: int, limits: SqlLimits) -> Iterator[list[list[int]]]:
    """Next fit: row indexes per INSERT statement, statements per transaction."""
    prefix_bytes = len(_insert_stage_prefix().encode())
    max_inserts = limits.max_statements - 1  # and the stage's CREATE or DELETE
    txn: list[list[int]] = []
    txn_bytes = statement_bytes = 0  # SQL so far in the transaction, in its last INSERT
    for index, size in enumerate(sizes):
        grown = 1 + size  # "," and the tuple
        if (
            txn
            and statement_bytes + grown <= limits.max_sql_bytes
            and (fixed_bytes + txn_bytes + grown <= limits.max_batch_sql_bytes)
        ):
            txn[-1].append(index)
            statement_bytes, txn_bytes = statement_bytes + grown, txn_bytes + grown
            continue
        statement_bytes = prefix_bytes + size
        if fixed_bytes + statement_bytes > limits.max_batch_sql_bytes or (
            statement_bytes > limits.max_sql_bytes
        ):
            raise ValueError(f"row {index} is too large to load (see unstorable_reason)")
        full = fixed_bytes + txn_bytes + statement_bytes > limits.max_batch_sql_bytes
        if txn and (full or len(txn) == max_inserts):
            yield txn
            txn, txn_bytes = [], 0
        txn.append([index])
        txn_bytes += statement_bytes
    if txn:
        yield txn
