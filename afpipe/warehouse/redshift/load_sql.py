"""The idempotent load's SQL: stage the rows, merge them under the lock; pure, no I/O.

A load runs in a Data API session (one connection kept across calls, so its
temp table outlives a call) and takes two steps (each BatchExecuteStatement is
one transaction of at most 40 SQL texts, each at most 100 KB, and 100 KB in all
unless the Data API takes more: see ``sql.SqlLimits``):

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

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta

import msgspec

from afpipe.event import Row
from afpipe.warehouse.redshift.sql import (
    COLUMN_LIST,
    DATA_API_LIMITS,
    STAGE,
    SqlLimits,
    TableName,
    create_stage_sql,
    literal,
    lock_sql,
    value_reason,
    values_tuple,
)


def unique_rows(rows: Sequence[Row]) -> list[Row]:
    """The first row of each id: a batch may carry one event twice."""
    seen: dict[str, Row] = {}
    for row in rows:
        seen.setdefault(row.id, row)
    return list(seen.values())


def _insert_stage_prefix() -> str:
    return f"INSERT INTO {STAGE} ({COLUMN_LIST}) VALUES "


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
        f"INSERT INTO {target} ({COLUMN_LIST}) SELECT {COLUMN_LIST} FROM {STAGE}"
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
