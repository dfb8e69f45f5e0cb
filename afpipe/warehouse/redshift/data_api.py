"""A thin, typed Redshift Data API client on ``AwsClient``.

The Data API is asynchronous: ExecuteStatement / BatchExecuteStatement return
an Id, DescribeStatement tells when it ended. ``RedshiftData.run`` submits and
waits with DescribeStatement's long polling (``WaitTimeSeconds``: the service
holds the answer until the statement ends or the wait elapses), so a statement
that ends within the wait costs its submit and one DescribeStatement. The wait
is on DescribeStatement, not on the submit (which accepts it too), because the
submit's answer has neither a failure's Error nor a batch's SubStatements, and
because a drain cancelling a held submit would not know the Id to cancel. A
service that answers at once is polled with backoff, as before long polling.
Both are bounded by the statement timeout and by ``max_wait_s`` seconds of
waiting (REDSHIFT_MAX_RETRIES); a statement that outlives them, or whose caller
is cancelled (drain), is cancelled with CancelStatement. A ``Session``
(SessionKeepAliveSeconds, then SessionId) runs calls on one connection, so a
temp table one call fills is there for the next. A statement that did not
FINISH raises what ``errors.statement_error`` (or the caller's ``classify``)
makes of it; the answers' shapes are in ``results``.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import msgspec
import trio

from afpipe import drain
from afpipe.aws.client import AwsClient
from afpipe.aws.service import AwsService
from afpipe.errors import ConfigError, PermanentError, TransientError
from afpipe.warehouse.redshift.errors import (
    Classifier,
    StatementTimeout,
    lost_statement,
    statement_error,
)
from afpipe.warehouse.redshift.results import StatementResult, Value, field_value

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


class Target(msgspec.Struct, frozen=True, kw_only=True):
    """Where statements run and as whom.

    Provisioned: ``cluster_identifier`` with ``db_user`` (temporary credentials),
    ``secret_arn``, or neither (the caller's IAM identity). Serverless:
    ``workgroup_name`` with ``secret_arn`` or neither (IAM).
    """

    database: str
    cluster_identifier: str = ""
    workgroup_name: str = ""
    db_user: str = ""
    secret_arn: str = ""

    def __post_init__(self) -> None:
        if bool(self.cluster_identifier) == bool(self.workgroup_name):
            raise ConfigError("Redshift: set a cluster identifier or a workgroup name (one)")
        if self.db_user and (self.secret_arn or self.workgroup_name):
            raise ConfigError("Redshift: a database user goes with a cluster and no secret")
        if not self.database:
            raise ConfigError("Redshift: the database name is empty")

    def request_fields(self) -> dict[str, str]:
        fields = {
            "ClusterIdentifier": self.cluster_identifier,
            "WorkgroupName": self.workgroup_name,
            "Database": self.database,
            "DbUser": self.db_user,
            "SecretArn": self.secret_arn,
        }
        return {name: value for name, value in fields.items() if value}


class Session:
    """A Data API session, used by one task at a time: its first call opens it
    (``SessionKeepAliveSeconds``), later calls name it (``SessionId``) and so share
    its connection and temp tables. The service closes it ``keep_alive_s`` after
    its last statement ended; ``usable`` leaves a quarter of that as margin, so a
    call never meets a session closed for idleness. ``fresh`` until a call opened it."""

    def __init__(self, keep_alive_s: int) -> None:
        if not 1 <= keep_alive_s <= 86_400:  # the model's range; 0 closes it at once
            raise ValueError("a session's keep-alive is 1..86400 seconds")
        self.keep_alive_s = keep_alive_s
        self.id = ""  # the service's, from the first call's answer
        self._usable_until = -math.inf

    @property
    def fresh(self) -> bool:
        return not self.id

    def usable(self) -> bool:
        return self.fresh or trio.current_time() < self._usable_until

    def ended(self) -> None:
        """A statement in it ended now (or a little earlier: that is the margin)."""
        self._usable_until = trio.current_time() + 0.75 * self.keep_alive_s


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
    ) -> StatementResult:
        """Run one SQL text (ExecuteStatement) or several in one transaction
        (BatchExecuteStatement), in ``session`` if given, and wait until it
        FINISHED; otherwise raise what ``classify`` makes of the failure."""
        token = str(uuid.uuid4())
        statement_id = await self.submit(sql, parameters, client_token=token, session=session)
        result = await self.wait(statement_id)
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
        payload: dict[str, Any] = {"ClientToken": client_token}
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
        return submitted.id

    async def wait(self, statement_id: str) -> StatementResult:
        """Poll until the statement ends; cancel it when it takes too long or the
        caller is cancelled (shielded, briefly: the cancel must reach Redshift)."""
        result: StatementResult | None = None
        try:
            with trio.move_on_after(self.statement_timeout_s):
                result = await self._poll(statement_id)
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

    async def _poll(self, statement_id: str) -> StatementResult | None:
        """Long-poll DescribeStatement until the statement ends; None when it
        outlives ``max_wait_s`` seconds of waiting."""
        delay_s, budget_s = FIRST_POLL_S, self.max_wait_s
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


class _ResultPage(msgspec.Struct, frozen=True, rename="pascal"):
    records: list[list[dict[str, Any]]] = []
    next_token: str = ""


def _convert(answer: dict[str, Any], shape: type[_T]) -> _T:
    try:
        return msgspec.convert(answer, shape)
    except msgspec.ValidationError as exc:
        raise TransientError(f"unexpected Data API answer: {exc}", code="InvalidResponse") from exc
