"""A thin, typed Redshift Data API client on ``AwsClient``.

The Data API is asynchronous: ExecuteStatement / BatchExecuteStatement return an
Id, DescribeStatement tells when it ended. ``RedshiftData.run`` submits, then
waits with DescribeStatement's long polling (``WaitTimeSeconds``: answered when
the statement ends or the wait elapses): a submit and one DescribeStatement. A
``held`` run puts the wait on the submit instead (staging calls): one that ends
within it costs no DescribeStatement; a failure's Error or a batch's
SubStatements still come from DescribeStatement, and a cancel while held learns
the Id by repeating the call with its ClientToken (idempotent). A service that
answers at once is polled with backoff. All within the statement timeout and
``max_wait_s`` seconds of waiting (REDSHIFT_MAX_RETRIES); a statement that
outlives them, or whose caller is cancelled (drain), is cancelled. A ``Session``
(``session``) keeps one connection across calls. A statement that did not
FINISH raises what ``errors.statement_error`` (or ``classify``) makes of it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import msgspec
import trio

from afpipe import drain
from afpipe.aws.client import AwsClient
from afpipe.aws.service import AwsService
from afpipe.errors import PermanentError, TransientError
from afpipe.warehouse.redshift.errors import (
    Classifier,
    StatementTimeout,
    lost_statement,
    statement_error,
)
from afpipe.warehouse.redshift.results import StatementResult, Value, field_value
from afpipe.warehouse.redshift.session import Session, Target

logger = logging.getLogger("afpipe.redshift")

FIRST_POLL_S = 0.05
# Polls at most this far apart: loads into one table run one after another, so the
# time between a statement's end and its discovery is time no load runs.
MAX_POLL_S = 0.25
# DescribeStatement's WaitTimeSeconds: the model allows 1..30 s, and the HTTP read
# timeout (afpipe.aws.client, 35 s) must stay above it. Capped by what is left of
# the statement's budget.
LONG_POLL_S = 20
CANCEL_TIMEOUT_S = 5.0  # a cancel on drain or timeout must not hold shutdown for long

_TERMINAL = frozenset({"FINISHED", "FAILED", "ABORTED"})

_T = TypeVar("_T")


class RedshiftData:
    """``await RedshiftData(aws, service, target, ...).run("SELECT 1")``."""

    def __init__(
        self,
        aws: AwsClient,
        service: AwsService,
        target: Target,
        *,
        statement_timeout_s: float,
        max_wait_s: float,
    ) -> None:
        self.aws = aws
        self.service = service
        self.target = target
        self.statement_timeout_s = statement_timeout_s
        # REDSHIFT_MAX_RETRIES counted polls of the old service's one-second cadence:
        # it bounds the waiting for one statement to that many seconds, however often
        # afpipe polls.
        self.max_wait_s = max_wait_s

    async def run(
        self,
        sql: str | Sequence[str],
        parameters: Mapping[str, str] | None = None,
        *,
        classify: Classifier = statement_error,
        session: Session | None = None,
        held: bool = False,
    ) -> StatementResult:
        """Run one SQL text (ExecuteStatement) or several in one transaction
        (BatchExecuteStatement), in ``session`` if given, and wait until it
        FINISHED; otherwise raise what ``classify`` makes of the failure.

        ``held``: the submit itself waits for the statement (WaitTimeSeconds),
        within the same budget; the statement's Id is not known until it answers,
        so a cancel meanwhile costs one more call (``_cancel_by_token``).
        Staging calls are held; a merge is not: its answer carries no
        SubStatements, whose last ResultRows a load reports."""
        token = str(uuid.uuid4())
        started, hold_s = trio.current_time(), self._hold_s(held)
        try:
            submitted = await self._submit(
                sql, parameters, client_token=token, session=session, hold_s=hold_s
            )
        except trio.Cancelled:
            if hold_s:  # cancelled while held: the Id was not answered yet
                await self._cancel_by_token(sql, parameters, token, session)
            raise
        if submitted.status == "FINISHED":  # held, and ended within the wait
            result = StatementResult(
                id=submitted.id, status="FINISHED", has_result_set=submitted.has_result_set
            )
        else:
            result = await self.wait(submitted.id, spent_s=trio.current_time() - started)
        if session is not None:
            session.ended()
        if result.status != "FINISHED":
            raise classify(result)
        return result

    async def query(
        self, sql: str, parameters: Mapping[str, str] | None = None
    ) -> list[list[Value]]:
        result = await self.run(sql, parameters)
        return await self.records(result.id) if result.has_result_set else []

    async def submit(
        self,
        sql: str | Sequence[str],
        parameters: Mapping[str, str] | None = None,
        *,
        client_token: str,
        session: Session | None = None,
    ) -> str:
        """Start a statement; its Id. The token makes a retried call start it once.
        In a ``session``, the first call opens it and names the target; later
        calls name only the session (the service refuses a target beside it)."""
        submitted = await self._submit(
            sql, parameters, client_token=client_token, session=session, hold_s=0
        )
        return submitted.id

    def _hold_s(self, held: bool) -> int:
        """WaitTimeSeconds for a held submit (0: not held), within the budget."""
        if not held:
            return 0
        hold_s = int(min(LONG_POLL_S, self.statement_timeout_s, self.max_wait_s))
        return hold_s if hold_s >= 1 else 0

    async def _submit(
        self,
        sql: str | Sequence[str],
        parameters: Mapping[str, str] | None,
        *,
        client_token: str,
        session: Session | None,
        hold_s: int,
    ) -> _Submitted:
        payload: dict[str, Any] = {"ClientToken": client_token}
        if hold_s:
            payload["WaitTimeSeconds"] = hold_s
        if session is None or session.fresh:
            payload.update(self.target.request_fields())
        else:
            payload["SessionId"] = session.id
        if session is not None and session.fresh:
            payload["SessionKeepAliveSeconds"] = session.keep_alive_s
        if isinstance(sql, str):
            operation, payload["Sql"] = "ExecuteStatement", sql
        else:
            operation, payload["Sqls"] = "BatchExecuteStatement", list(sql)
        if parameters:
            if not all(parameters.values()):  # the API has no NULL and rejects ""
                raise ValueError("Data API parameters must be non-empty strings")
            payload["Parameters"] = [{"name": k, "value": v} for k, v in parameters.items()]
        submitted = _convert(await self.aws.call(self.service, operation, payload), _Submitted)
        if session is not None and session.fresh:
            if not submitted.session_id:
                raise TransientError(
                    "the Data API opened no session (no SessionId in its answer)",
                    code="InvalidResponse",
                )
            session.id = submitted.session_id
        return submitted

    async def wait(self, statement_id: str, *, spent_s: float = 0.0) -> StatementResult:
        """Poll until the statement ends; cancel it when it takes too long (``spent_s``
        of its budget already gone) or the caller is cancelled (shielded, briefly:
        the cancel must reach Redshift)."""
        result: StatementResult | None = None
        try:
            # A held submit may have spent the whole budget (its answer comes a
            # little after its wait): then nothing is left, and it timed out.
            with trio.move_on_after(max(0.0, self.statement_timeout_s - spent_s)):
                result = await self._poll(statement_id, self.max_wait_s - spent_s)
        except BaseException:
            await self._cancel_quietly(statement_id)
            raise
        if result is None:
            await self._cancel_quietly(statement_id)
            raise StatementTimeout(
                f"Redshift statement {statement_id} still running after "
                f"{self.statement_timeout_s} s or {self.max_wait_s} s of polling; cancelled"
            )
        return result

    async def _poll(self, statement_id: str, budget_s: float) -> StatementResult | None:
        """Long-poll DescribeStatement until the statement ends; None when it
        outlives ``budget_s`` seconds of waiting."""
        delay_s = FIRST_POLL_S
        started = trio.current_time()
        while (spent_s := trio.current_time() - started) < budget_s:
            wait_s = min(LONG_POLL_S, int(budget_s - spent_s))
            asked = trio.current_time()
            result = await self.describe(statement_id, wait_s=wait_s)
            if result.status in _TERMINAL:
                return result
            # Not held (a service without long polling, or no whole second left): back off.
            if trio.current_time() - asked < max(wait_s / 2, delay_s):
                await trio.sleep(delay_s)
                delay_s = min(2 * delay_s, MAX_POLL_S)
        return None

    async def describe(self, statement_id: str, *, wait_s: int = 0) -> StatementResult:
        """The statement's state; with ``wait_s`` (1..30), once it ended or after
        that long, whichever comes first."""
        payload: dict[str, Any] = {"Id": statement_id}
        if wait_s >= 1:
            payload["WaitTimeSeconds"] = wait_s
        try:
            answer = await self.aws.call(self.service, "DescribeStatement", payload)
        except PermanentError as exc:
            lost = lost_statement(exc)
            if lost is None:
                raise
            raise lost from exc
        return _convert(answer, StatementResult)

    async def cancel(self, statement_id: str) -> bool:
        answer = await self.aws.call(self.service, "CancelStatement", {"Id": statement_id})
        return bool(answer.get("Status", False))

    async def _cancel_by_token(
        self,
        sql: str | Sequence[str],
        parameters: Mapping[str, str] | None,
        token: str,
        session: Session | None,
    ) -> None:
        """Cancel a statement whose held submit was cancelled before it answered: the
        same call with the same ClientToken answers that statement's Id (it starts
        nothing new), then CancelStatement. Shielded, briefly, as any cancel."""
        with drain.cleanup_scope(CANCEL_TIMEOUT_S):
            try:
                submitted = await self._submit(
                    sql, parameters, client_token=token, session=session, hold_s=0
                )
            except (TransientError, PermanentError) as exc:
                logger.info("could not learn a held statement's Id to cancel it: %s", exc)
                return
            await self._cancel_quietly(submitted.id)

    async def _cancel_quietly(self, statement_id: str) -> None:
        with drain.cleanup_scope(CANCEL_TIMEOUT_S):
            try:
                await self.cancel(statement_id)
            except (TransientError, PermanentError) as exc:  # e.g. it finished meanwhile
                logger.info("CancelStatement %s: %s", statement_id, exc)

    async def records(self, statement_id: str) -> list[list[Value]]:
        """Every row of a finished statement's result (GetStatementResult pages)."""
        rows: list[list[Value]] = []
        payload = {"Id": statement_id}
        while True:
            page = _convert(
                await self.aws.call(self.service, "GetStatementResult", payload), _ResultPage
            )
            rows += [[field_value(field) for field in record] for record in page.records]
            if not page.next_token:
                return rows
            payload = {"Id": statement_id, "NextToken": page.next_token}


class _Submitted(msgspec.Struct, frozen=True, rename="pascal"):
    id: str
    session_id: str = ""
    status: str = ""  # after WaitTimeSeconds only
    has_result_set: bool = False


class _ResultPage(msgspec.Struct, frozen=True, rename="pascal"):
    records: list[list[dict[str, Any]]] = []
    next_token: str = ""


def _convert(answer: dict[str, Any], shape: type[_T]) -> _T:
    try:
        return msgspec.convert(answer, shape)
    except msgspec.ValidationError as exc:
        raise TransientError(f"unexpected Data API answer: {exc}", code="InvalidResponse") from exc
