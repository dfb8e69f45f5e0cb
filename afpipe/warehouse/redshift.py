"""The Redshift warehouse: idempotent batch loads through the Data API.

A batch becomes as few BatchExecuteStatement transactions as the Data API's
limits allow (see ``redshift_sql``), each idempotent on ``id``. A transaction
that FAILED for a data reason is bisected (``load_isolating``) down to the
offending events, which come back as ``Rejected`` with Redshift's error text;
the rest commit. Every load transaction first LOCKs afpipe's own lock table, so
loads from any number of processes run one after another and each dedups in a
snapshot that sees the previous load's rows: exactly once under SNAPSHOT and
SERIALIZABLE isolation alike (the argument is in ``redshift_sql``). This
process's writers also queue among themselves before submitting (what they do
before, such as staging to S3, overlaps), so they wait here rather than in
Redshift holding a WLM slot. A serializable conflict with another writer of the
target is retried here with backoff, within the AWS client's retry budget.

With a ``Stager`` (S3 staging on), rows that do not fit in one inline
transaction are loaded as one COPY transaction from S3 instead
(``redshift_copy``); each attempt of the bisection chooses again, so halves
that fit inline fail, if at all, with Redshift's own reason for the row.

AWS documents the Data API's 100 KB limit per SQL text, not whether the texts
of one BatchExecuteStatement also count together. A warehouse starts with the
per-text reading (up to 40 texts of 100 KB a call, so ~37 x 80 events a
transaction) and learns which applies from the first call over 100 KB in all:
taken, per-text is confirmed (info); refused with the size ValidationException,
the total limit applies (warning) and the refused call's rows are re-planned
at once, never bisected nor dead-lettered. What is learnt lasts as long as the
warehouse object (``batch_limit``); ``afpipe check`` reports it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

import trio

from afpipe import metrics
from afpipe.aws.client import AwsClient
from afpipe.aws.redshift_data import (
    CONFLICT,
    FAILED,
    Classifier,
    RedshiftData,
    StatementDataError,
    StatementResult,
    Target,
    UnclassifiedStatementError,
    statement_error,
)
from afpipe.aws.service import AwsService
from afpipe.errors import PermanentError, TransientError
from afpipe.event import Event, Row, to_row
from afpipe.warehouse import redshift_copy as copy
from afpipe.warehouse import redshift_sql as sql
from afpipe.warehouse.base import LoadResult, Rejected
from afpipe.warehouse.isolate import load_isolating
from afpipe.warehouse.s3_staging import Stager

logger = logging.getLogger("afpipe.redshift")

DEFAULT_DEDUP_WINDOW_S = 24 * 60 * 60.0
DEFAULT_MAX_UNCLASSIFIED_FAILURES = 5
# RedshiftWarehouse.batch_limit once the Data API's answers told which applies:
PER_TEXT = "per_text"  # 100 KB for each SQL text, up to 40 texts a call
TOTAL = "total"  # 100 KB for all the SQL texts of a call together
_MAX_UNCLASSIFIED_TEXTS = 64  # bounds the memory of failure texts


class RedshiftWarehouse:
    """The ``Warehouse`` protocol on Redshift.

    ``statement_timeout_s`` and ``max_polls`` bound each statement (settings
    REDSHIFT_STATEMENT_TIMEOUT / 1000 and REDSHIFT_MAX_RETRIES); ``table`` is
    ``table`` or ``schema.table``; ``dedup_window_s`` widens the event-time
    range the dedup looks at (``redshift_sql.insert_new_sql``); ``stager``
    turns on COPY from S3 for what does not fit one inline transaction;
    ``limits`` fixes the Data API's limits instead of learning its batch limit.
    """

    def __init__(
        self,
        aws: AwsClient,
        service: AwsService,
        target: Target,
        table: str,
        *,
        name: str = "primary",
        statement_timeout_s: float = 60.0,
        max_polls: int = 30,
        dedup_window_s: float = DEFAULT_DEDUP_WINDOW_S,
        limits: sql.SqlLimits | None = None,
        stager: Stager | None = None,
        max_unclassified_failures: int = DEFAULT_MAX_UNCLASSIFIED_FAILURES,
    ) -> None:
        if dedup_window_s < 0:
            raise ValueError("dedup_window_s must not be negative")
        self.name = name
        self.table = sql.table_name(table)  # raises ConfigError unless a plain name
        self.data = RedshiftData(
            aws, service, target, statement_timeout_s=statement_timeout_s, max_polls=max_polls
        )
        self.dedup_window_s = dedup_window_s
        # Without given limits, the batch limit is learnt from the Data API's answers:
        # optimistic until a call over 100 KB in all is refused (module docstring).
        self.detects_batch_limit = limits is None
        self.limits = limits or sql.PER_TEXT_LIMITS  # what loads are planned with now
        self.batch_limit: str | None = None  # PER_TEXT or TOTAL once learnt
        # Which rows can never load inline must not change with what is learnt: a row
        # that fits under the total limit fits under either.
        self._row_limits = limits or sql.TOTAL_LIMITS
        self.stager = stager
        # A statement failing with a text afpipe does not know is retried this many
        # times (identical texts, across attempts), then treated as the rows' fault.
        self.max_unclassified_failures = max_unclassified_failures
        self._unclassified: dict[str, int] = {}  # Redshift's text -> failures seen
        self._transactions = trio.Lock()  # this process's loads queue here first (see above)

    async def ensure_table(self) -> None:
        """The target and the lock table every load takes first (both idempotent)."""
        await self.data.run(sql.create_table_sql(self.table))
        await self.data.run(sql.create_lock_table_sql(self.table))

    async def isolation_level(self) -> str:
        """The database's isolation level as STV_DB_ISOLATION_LEVEL names it
        (``Serializable`` or ``Snapshot Isolation``); "" when it shows no row."""
        records = await self.data.query(
            "SELECT isolation_level FROM stv_db_isolation_level WHERE db_name = :database",
            {"database": self.data.target.database},
        )
        return str(records[0][0]).strip() if records else ""

    async def check_lock(self) -> bool:
        """Take (and at once release) the load lock, as a load does; False when the
        lock table does not exist yet (``ensure_table`` creates it)."""
        lock = sql.lock_table(self.table)
        found = await self.data.query(
            "SELECT 1 FROM svv_columns WHERE table_schema = :schema AND table_name = :table",
            {"schema": lock.schema, "table": lock.table},
        )
        if not found:
            return False
        await self.data.run([sql.lock_sql(self.table), "SELECT 1"])
        return True

    async def ping(self) -> None:
        await self.data.run("SELECT 1")

    async def columns(self) -> list[tuple[str, str]]:
        """The target's columns in order, types as ``svv_columns`` names them
        (compare with ``redshift_sql.EXPECTED_COLUMNS``); empty if no table."""
        records = await self.data.query(
            "SELECT column_name, data_type, character_maximum_length FROM svv_columns"
            " WHERE table_schema = :schema AND table_name = :table ORDER BY ordinal_position",
            {"schema": self.table.schema, "table": self.table.table},
        )
        out: list[tuple[str, str]] = []
        for name, data_type, length in records:
            suffix = f"({length})" if isinstance(length, int) and length > 0 else ""
            out.append((str(name), f"{data_type}{suffix}"))
        return out

    async def aclose(self) -> None:
        """Nothing to release: the AwsClient belongs to the caller."""

    async def load(self, events: Sequence[Event]) -> LoadResult:
        """Commit ``events`` idempotently on id; ``loaded`` counts rows newly inserted
        (the final INSERT's ResultRows), so repeats of committed ids count 0."""
        batch = self._prepare(events)
        rows = {event.id: row for event, row in batch.stored.values()}
        attempt = functools.partial(self._attempt, rows)
        loaded, rejected = 0, batch.rejected
        for group in self._groups(list(rows.values())):
            result = await load_isolating([batch.stored[row.id][0] for row in group], attempt)
            loaded += result.loaded
            rejected += result.rejected
        self._unclassified.clear()  # a load went through: count afresh
        return LoadResult(loaded=loaded, rejected=rejected + _twins_of(rejected, batch.twins))

    def _groups(self, rows: list[Row]) -> list[list[Row]]:
        """What is loaded (and bisected) as a whole: one inline transaction's rows,
        or with staging the whole batch (one transaction, inline or COPY)."""
        if self.stager is not None:
            return [rows]
        plan = sql.load_transactions(rows, self.table, self.dedup_window_s, self.limits)
        return [txn.rows for txn in plan]

    def _prepare(self, events: Sequence[Event]) -> _Batch:
        batch = _Batch()
        for event in events:
            row = to_row(event)
            if self.stager is None:
                reason = sql.unstorable_reason(row, self.table, self._row_limits)
            else:
                reason = copy.unstorable_reason(row)
            if reason is not None:
                batch.rejected.append(Rejected(event, reason))
            elif row.id in batch.stored:
                batch.twins.append(event)
            else:
                batch.stored[row.id] = (event, row)
        return batch

    async def _attempt(self, rows: dict[str, Row], events: Sequence[Event]) -> int:
        """Load ``events``; rows newly inserted. Raises StatementDataError only when
        the rows are at fault (bisect them)."""
        try:
            return await self._load([rows[event.id] for event in events])
        except StatementDataError:
            raise
        except UnclassifiedStatementError as exc:
            if self._count_unclassified(exc.detail) < self.max_unclassified_failures:
                raise
            logger.warning(
                "%s: the same unclassified failure %d times; taking it to be the rows': %s",
                self.name,
                self.max_unclassified_failures,
                exc.detail,
            )
            raise StatementDataError(exc.detail, code=FAILED, request_id=exc.request_id) from exc
        except PermanentError as exc:
            # Refused as a request (validation, access, S3 denied): no row is at fault,
            # so bisecting would dead-letter good events. Keep them queued instead.
            raise TransientError(str(exc), code=exc.code, request_id=exc.request_id) from exc

    def _count_unclassified(self, detail: str) -> int:
        """Failures with ``detail`` so far, this one included."""
        seen = self._unclassified.get(detail, 0) + 1
        if detail in self._unclassified or len(self._unclassified) < _MAX_UNCLASSIFIED_TEXTS:
            self._unclassified[detail] = seen
        return seen

    def describe_batch_limit(self) -> str:
        """Which batch limit loads are planned with, and how afpipe knows (``afpipe check``)."""
        if not self.detects_batch_limit:
            return (
                f"configured: {self.limits.max_sql_bytes} bytes per SQL text,"
                f" {self.limits.max_batch_sql_bytes} per call"
            )
        if self.batch_limit == PER_TEXT:
            return "100 KB per SQL text, up to 40 texts a call (the Data API took a larger call)"
        if self.batch_limit == TOTAL:
            return "100 KB for all the SQL texts of a call together (the Data API refused more)"
        return (
            "not known yet: detected at the first load of more than 100 KB of SQL (afpipe"
            " tries 100 KB per SQL text, up to 40 a call, and falls back to 100 KB a call"
            " if the Data API refuses it)"
        )

    async def _load(self, rows: list[Row]) -> int:
        """One transaction: inline if the rows fit one, else COPY from S3; without
        staging, as many inline transactions as needed (normally one). Planned again
        when the Data API refused a call for the total size of its texts."""
        inserted, todo = 0, rows
        while todo:  # at most twice: a refusal leaves the total limit in force
            done, todo = await self._load_planned(todo)
            inserted += done
        return inserted

    async def _load_planned(self, rows: list[Row]) -> tuple[int, list[Row]]:
        """Load ``rows`` as the limits in force plan them: (rows inserted, rows to
        plan again), the latter those of a call refused for its total size and of
        the calls after it."""
        if self.stager is None:
            plan = sql.load_transactions(rows, self.table, self.dedup_window_s, self.limits)
        else:
            # With staging, inline only what one INSERT text carries: several 100 KB
            # texts cost a statement each, one COPY the same as one text (so the batch
            # limit never matters here).
            txn = copy.inline_transaction(rows, self.table, self.dedup_window_s, sql.TOTAL_LIMITS)
            if txn is None:
                return _inserted_rows(await self._load_staged(self.stager, rows)), []
            plan = [txn]
        inserted = 0
        for index, txn in enumerate(plan):
            result = await self._run_inline(txn.sqls)
            if result is None:
                return inserted, [row for later in plan[index:] for row in later.rows]
            inserted += _inserted_rows(result)
        return inserted, []

    async def _run_inline(self, sqls: list[str]) -> StatementResult | None:
        """One inline transaction; None when the Data API refused it for the total
        size of its texts. Such a call never ran (the refusal comes before any
        statement starts), so planning its rows again under the total limit is
        safe: nothing of it committed, and each new transaction begins with LOCK,
        so exactly once holds as for any load."""
        try:
            result = await self._run_retrying_conflicts(sqls)
        except PermanentError as exc:
            if not (self.detects_batch_limit and sql.refused_for_total_size(sqls, exc)):
                raise  # another refusal: not the batch limit's doing, nothing learnt
            self._learn_total(sqls, exc)
            return None
        self._learn_per_text(sqls)
        return result

    def _learn_total(self, sqls: list[str], exc: PermanentError) -> None:
        if self.batch_limit != TOTAL:
            logger.warning(
                "%s: batch limit: 100 KB for all the SQL texts of a call together: the Data"
                " API refused a BatchExecuteStatement of %d bytes in %d texts of at most"
                " 100 KB each (%s); loading at most 100 KB a call from now on",
                self.name,
                _sql_bytes(sqls),
                len(sqls),
                exc,
            )
        self.batch_limit, self.limits = TOTAL, sql.TOTAL_LIMITS

    def _learn_per_text(self, sqls: list[str]) -> None:
        """A call over 100 KB in all was taken: the limit is on each text."""
        if self.batch_limit is not None or not self.detects_batch_limit:
            return
        if _sql_bytes(sqls) <= sql.TOTAL_LIMITS.max_batch_sql_bytes:
            return
        self.batch_limit = PER_TEXT
        logger.info(
            "%s: batch limit: 100 KB per SQL text, up to 40 texts a call: the Data API took"
            " a BatchExecuteStatement of %d bytes in %d texts",
            self.name,
            _sql_bytes(sqls),
            len(sqls),
        )

    async def _load_staged(self, stager: Stager, rows: list[Row]) -> StatementResult:
        async with stager.staged(rows) as key:
            metrics.STAGED_LOADS.labels(self.name).inc()
            logger.debug("%s: loading %d rows by COPY from %s", self.name, len(rows), key)
            txn = copy.copy_transaction(rows, self.table, self.dedup_window_s, stager.staging, key)
            return await self._run_retrying_conflicts(txn.sqls, copy.copy_statement_error)

    async def _run_retrying_conflicts(
        self, sqls: list[str], classify: Classifier = statement_error
    ) -> StatementResult:
        retry_index = 0
        while True:
            try:
                async with self._transactions:
                    return await self.data.run(sqls, classify=classify)
            except TransientError as exc:
                if exc.code != CONFLICT:
                    raise
                if not await self.data.aws.backoff(self.data.service, retry_index):
                    raise
                logger.info("%s: retrying a load after a conflict: %s", self.name, exc)
                retry_index += 1


class _Batch:
    """A batch sorted out before any SQL: what to load, what can never load."""

    def __init__(self) -> None:
        self.stored: dict[str, tuple[Event, Row]] = {}  # by id, first event of each id
        self.twins: list[Event] = []  # later events with an id already stored
        self.rejected: list[Rejected] = []


def _inserted_rows(result: StatementResult) -> int:
    """ResultRows of the final INSERT ... SELECT (0 if the service did not say)."""
    if not result.sub_statements:
        return 0
    return max(0, result.sub_statements[-1].result_rows)


def _sql_bytes(sqls: list[str]) -> int:
    return sum(len(text.encode()) for text in sqls)


def _twins_of(rejected: list[Rejected], twins: list[Event]) -> list[Rejected]:
    """A repeat shares its id, hence its payload, with a rejected event: same fate."""
    reasons = {item.event.id: item.reason for item in rejected}
    return [Rejected(event, reasons[event.id]) for event in twins if event.id in reasons]
