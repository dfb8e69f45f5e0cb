"""The Redshift warehouse: idempotent batch loads through the Data API.

A batch is staged into a temp table of a Data API session in as few calls as
the Data API's limits allow, then merged into the target in one call of that
session, idempotent on ``id`` (``load_sql``). A load that FAILED for a data
reason is bisected (``load_isolating``) down to the offending events, which
come back as ``Rejected`` with Redshift's error text; the rest commit. Every
merge first LOCKs afpipe's own lock table, so merges from any number of
processes run one after another and each dedups in a snapshot that sees the
previous load's rows: exactly once under SNAPSHOT and SERIALIZABLE isolation
alike (the argument is in ``load_sql``). Staging takes no lock: the writers
of this process and of others stage side by side, and only the merge (two
statements) is serialised. This process's writers also queue among themselves
before submitting a merge, so they wait here rather than in Redshift holding a
WLM slot. A serializable conflict with another writer of the target is retried
here with backoff, within the AWS client's retry budget.

A session that ended a load well is kept for the next load (its stage emptied);
one whose call failed or was cancelled closes by itself (``SESSION_KEEP_ALIVE_S``).

With a ``Stager`` (S3 staging on), rows that do not fit in one inline text of
100 KB are staged by one COPY from S3 instead (``copy``); each attempt
of the bisection chooses again, so halves that fit inline fail, if at all,
with Redshift's own reason for the row.

Whether the Data API's 100 KB limit counts the texts of a call together is
learnt from its answers (``batch_limit``), for as long as the warehouse object
lasts; a call it refused for that is re-planned at once, never bisected.
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
from afpipe.event import Event, Row
from afpipe.warehouse.base import LoadResult
from afpipe.warehouse.isolate import load_isolating
from afpipe.warehouse.redshift import copy, load_sql, sql
from afpipe.warehouse.redshift.batch import Batch
from afpipe.warehouse.redshift.batch_limit import BatchLimit
from afpipe.warehouse.redshift.data_api import RedshiftData
from afpipe.warehouse.redshift.errors import (
    RefusedRequest,
    StatementConflict,
    StatementDataError,
    UnclassifiedFailures,
    UnclassifiedStatementError,
    copy_statement_error,
)
from afpipe.warehouse.redshift.results import StatementResult
from afpipe.warehouse.redshift.session import Session, Target
from afpipe.warehouse.redshift.staging import Stager

logger = logging.getLogger("afpipe.redshift")

DEFAULT_DEDUP_WINDOW_S = 24 * 60 * 60.0
DEFAULT_MAX_UNCLASSIFIED_FAILURES = 5
# How long the Data API keeps a load's session open after its last statement: a
# writer's next load reuses it (and its stage) well within that; one left idle
# closes by itself. Sessions are used for 3/4 of it (data_api.Session).
SESSION_KEEP_ALIVE_S = 120


class RedshiftWarehouse:
    """The ``Warehouse`` protocol on Redshift.

    ``statement_timeout_s`` and ``max_wait_s`` bound each statement (settings
    REDSHIFT_STATEMENT_TIMEOUT / 1000 and REDSHIFT_MAX_RETRIES); ``table`` is
    ``table`` or ``schema.table``; ``dedup_window_s`` widens the event-time
    range the dedup looks at (``load_sql.insert_new_sql``); ``stager``
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
        max_wait_s: float = 30,
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
            aws, service, target, statement_timeout_s=statement_timeout_s, max_wait_s=max_wait_s
        )
        self.dedup_window_s = dedup_window_s
        self._batch_limit = BatchLimit(name, limits)  # learnt when limits is None
        self.stager = stager
        # A statement failing with a text afpipe does not know is retried this many
        # times (identical texts, across attempts), then treated as the rows' fault.
        self._unclassified = UnclassifiedFailures(max_unclassified_failures)
        self._transactions = trio.Lock()  # this process's merges queue here first (see above)
        self._sessions: list[Session] = []  # open, idle, each with a stage: newest last

    @property
    def limits(self) -> sql.SqlLimits:
        """The Data API's limits loads are planned with now."""
        return self._batch_limit.limits

    @property
    def batch_limit(self) -> str | None:
        """``batch_limit.PER_TEXT`` or ``TOTAL`` once learnt, else None."""
        return self._batch_limit.learnt

    def describe_batch_limit(self) -> str:
        """Which batch limit loads are planned with, and how afpipe knows (``afpipe check``)."""
        return self._batch_limit.describe()

    async def ensure_table(self) -> None:
        """The target and the lock table every load takes first, each created unless
        it is there. Only looked at when it is: even a CREATE ... IF NOT EXISTS writes
        the catalog, and of creators at once (processes starting together, or on a new
        database) all but one fail with a serializable conflict; they look again."""
        lock = sql.lock_table(self.table)
        await self._create_unless_there(self.table, sql.create_table_sql(self.table))
        await self._create_unless_there(lock, sql.create_lock_table_sql(self.table))

    async def _create_unless_there(self, table: sql.TableName, create: str) -> None:
        retry_index = 0
        while not await self._exists(table):
            try:
                await self.data.run(create)
                return
            except StatementConflict as exc:
                if not await self.data.aws.backoff(self.data.service, retry_index):
                    raise
                logger.info("%s: creating %s again after a conflict: %s", self.name, table, exc)
                retry_index += 1

    async def _exists(self, table: sql.TableName) -> bool:
        found = await self.data.query(
            "SELECT 1 FROM svv_columns WHERE table_schema = :schema AND table_name = :table",
            {"schema": table.schema, "table": table.table},
        )
        return bool(found)

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
        if not await self._exists(sql.lock_table(self.table)):
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
        batch = Batch(events, self._unstorable_reason)
        attempt = functools.partial(self._attempt, batch.rows())
        result = await load_isolating(batch.events(), attempt)
        self._unclassified.clear()
        return LoadResult(loaded=result.loaded, rejected=batch.rejected_with(result.rejected))

    def _unstorable_reason(self, row: Row) -> str | None:
        """Why ``row`` can never load the way this warehouse loads, or None."""
        if self.stager is None:
            return load_sql.unstorable_reason(row, self.table, self._batch_limit.row_limits)
        return copy.unstorable_reason(row)

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

    async def _load(self, rows: list[Row]) -> int:
        """Stage ``rows`` in a session, then merge them under the lock in one call
        of that session (``load_sql``): inline, or by COPY with staging on when
        they do not fit one 100 KB text. Only the merge queues behind other loads."""
        session = self._take_session()
        first = [sql.create_stage_sql() if session.fresh else sql.clear_stage_sql()]
        if self.stager is not None and not copy.fits_inline(rows, self.table):
            await self._stage_copy(self.stager, session, rows, first)
        else:
            await self._stage_inline(session, rows, first)
        merge = load_sql.merge_sqls(self.table, rows, self.dedup_window_s)
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
        calls = load_sql.stage_calls(rows, first, self.limits)
        while calls:
            sqls = calls[0].sqls
            try:
                await self.data.run(sqls, session=session, held=True)
            except PermanentError as exc:
                if not self._batch_limit.refused(sqls, exc):
                    raise
                rest = [row for call in calls for row in call.rows]
                calls = load_sql.stage_calls(rest, first, self.limits)  # as just learnt
                continue
            self._batch_limit.taken(sqls)
            calls, first = calls[1:], []

    async def _stage_copy(
        self, stager: Stager, session: Session, rows: list[Row], first: list[str]
    ) -> None:
        async with stager.staged(rows) as key:
            metrics.STAGED_LOADS.labels(self.name).inc()
            logger.debug("%s: staging %d rows by COPY from %s", self.name, len(rows), key)
            sqls = [*first, copy.copy_sql(stager.staging, key)]
            await self.data.run(sqls, classify=copy_statement_error, session=session, held=True)

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


def _inserted_rows(result: StatementResult) -> int:
    """ResultRows of the final INSERT ... SELECT (0 if the service did not say)."""
    if not result.sub_statements:
        return 0
    return max(0, result.sub_statements[-1].result_rows)
