"""The Redshift warehouse: idempotent batch loads through the Data API.

A batch is staged into a temp table of a Data API session in as few calls as
the Data API's limits allow, then merged into the target in one call of that
session, idempotent on ``id`` (``sql``). A load that FAILED for a data
reason is bisected (``load_isolating``) down to the offending events, which
come back as ``Rejected`` with Redshift's error text; the rest commit. Every
merge first LOCKs afpipe's own lock table, so merges from any number of
processes run one after another and each dedups in a snapshot that sees the
previous load's rows: exactly once under SNAPSHOT and SERIALIZABLE isolation
alike (the argument is in ``sql``). Staging takes no lock: the writers
of this process and of others stage side by side, and only the merge (two
statements) is serialised. This process's writers also queue among themselves
before submitting a merge, so they wait here rather than in Redshift holding a
WLM slot. A serializable conflict with another writer of the target is retried
here with backoff, within the AWS client's retry budget.

A session that ended a load well is kept for this process's next load (its
stage is emptied, not created again); one whose call failed, timed out or was
cancelled is left to close by itself (``SESSION_KEEP_ALIVE_S``).

With a ``Stager`` (S3 staging on), rows that do not fit in one inline text of
100 KB are staged by one COPY from S3 instead (``copy``); each attempt
of the bisection chooses again, so halves that fit inline fail, if at all,
with Redshift's own reason for the row.

AWS documents the Data API's 100 KB limit per SQL text, not whether the texts
of one BatchExecuteStatement also count together. A warehouse starts with the
per-text reading (up to 40 texts of 100 KB a call, so ~39 x 80 events a
call) and learns which applies from the first call over 100 KB in all:
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
from afpipe.aws.service import AwsService
from afpipe.errors import PermanentError
from afpipe.event import Event, Row, to_row
from afpipe.warehouse.base import LoadResult, Rejected
from afpipe.warehouse.isolate import load_isolating
from afpipe.warehouse.redshift import copy, sql
from afpipe.warehouse.redshift.data_api import RedshiftData, Session, Target
from afpipe.warehouse.redshift.errors import (
    RefusedRequest,
    StatementConflict,
    StatementDataError,
    UnclassifiedFailures,
    UnclassifiedStatementError,
    copy_statement_error,
)
from afpipe.warehouse.redshift.results import StatementResult
from afpipe.warehouse.redshift.staging import Stager

logger = logging.getLogger("afpipe.redshift")

DEFAULT_DEDUP_WINDOW_S = 24 * 60 * 60.0
DEFAULT_MAX_UNCLASSIFIED_FAILURES = 5
# RedshiftWarehouse.batch_limit once the Data API's answers told which applies:
PER_TEXT = "per_text"  # 100 KB for each SQL text, up to 40 texts a call
TOTAL = "total"  # 100 KB for all the SQL texts of a call together
# How long the Data API keeps a load's session open after its last statement: a
# writer's next load reuses it (and its stage) well within that; one left idle
# closes by itself. Sessions are used for 3/4 of it (data_api.Session).
SESSION_KEEP_ALIVE_S = 120


class RedshiftWarehouse:
    """The ``Warehouse`` protocol on Redshift.

    ``statement_timeout_s`` and ``max_polls`` bound each statement (settings
    REDSHIFT_STATEMENT_TIMEOUT / 1000 and REDSHIFT_MAX_RETRIES); ``table`` is
    ``table`` or ``schema.table``; ``dedup_window_s`` widens the event-time
    range the dedup looks at (``sql.insert_new_sql``); ``stager``
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
        self._unclassified = UnclassifiedFailures(max_unclassified_failures)
        self._transactions = trio.Lock()  # this process's merges queue here first (see above)
        self._sessions: list[Session] = []  # open, idle, each with a stage: newest last

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
        (compare with ``sql.EXPECTED_COLUMNS``); empty if no table."""
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
        result = await load_isolating([event for event, _ in batch.stored.values()], attempt)
        self._unclassified.clear()
        rejected = batch.rejected + result.rejected
        return LoadResult(
            loaded=result.loaded, rejected=rejected + _twins_of(rejected, batch.twins)
        )

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
            verdict = self._unclassified.verdict(exc)
            if verdict is None:
                raise
            logger.warning(
                "%s: the same unclassified failure %d times; taking it to be the rows': %s",
                self.name,
                self._unclassified.limit,
                exc.detail,
            )
            raise verdict from exc
        except PermanentError as exc:  # a refused request: keep the batch queued
            raise RefusedRequest.of(exc) from exc

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
        """Stage ``rows`` in a session, then merge them under the lock in one call
        of that session (``sql``): inline, or by COPY with staging on when
        they do not fit one 100 KB text. Only the merge queues behind other loads."""
        session = self._take_session()
        first = [sql.create_stage_sql() if session.fresh else sql.clear_stage_sql()]
        if self.stager is not None and not copy.fits_inline(rows, self.table):
            await self._stage_copy(self.stager, session, rows, first)
        else:
            await self._stage_inline(session, rows, first)
        merge = sql.merge_sqls(self.table, rows, self.dedup_window_s)
        result = await self._run_retrying_conflicts(merge, session=session)
        self._sessions.append(session)  # ended well: its stage is there for the next
        return _inserted_rows(result)

    def _take_session(self) -> Session:
        """The session that staged a load last and is still open, or a new one."""
        while self._sessions:
            session = self._sessions.pop()
            if session.usable():
                return session
        return Session(SESSION_KEEP_ALIVE_S)

    async def _stage_inline(self, session: Session, rows: list[Row], first: list[str]) -> None:
        """``rows`` into the session's stage, as few calls as the limits in force
        allow; planned again when the Data API refused a call for the total size
        of its texts. Such a call never ran (the refusal comes before any statement
        starts), so the stage holds the earlier calls' rows and no more."""
        calls = sql.stage_calls(rows, first, self.limits)
        while calls:
            sqls = calls[0].sqls
            try:
                await self.data.run(sqls, session=session)
            except PermanentError as exc:
                if not (self.detects_batch_limit and sql.refused_for_total_size(sqls, exc)):
                    raise  # another refusal: not the batch limit's doing, nothing learnt
                self._learn_total(sqls, exc)
                calls = sql.stage_calls([row for call in calls for row in call.rows], first)
                continue
            self._learn_per_text(sqls)
            calls, first = calls[1:], []

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

    async def _stage_copy(
        self, stager: Stager, session: Session, rows: list[Row], first: list[str]
    ) -> None:
        async with stager.staged(rows) as key:
            metrics.STAGED_LOADS.labels(self.name).inc()
            logger.debug("%s: staging %d rows by COPY from %s", self.name, len(rows), key)
            sqls = [*first, copy.copy_sql(stager.staging, key)]
            await self.data.run(sqls, classify=copy_statement_error, session=session)

    async def _run_retrying_conflicts(
        self, sqls: list[str], *, session: Session
    ) -> StatementResult:
        """The merge, when this process's other loads have merged; again after a
        serializable conflict, which rolled it back and left the stage as it was."""
        retry_index = 0
        while True:
            try:
                async with self._transactions:
                    return await self.data.run(sqls, session=session)
            except StatementConflict as exc:
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
