"""The Data API operations: request dict in, response dict out (or ApiError).

Each request runs on its own HTTP thread (http.py), so a long poll
(WaitTimeSeconds, at most 30 s by the model) waits there without holding up
other requests; closing the emulator cancels the statements, which ends the waits.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from tests.emulators.redshift import checks
from tests.emulators.redshift.errors import ApiError, validation_error
from tests.emulators.redshift.faults import Faults
from tests.emulators.redshift.paging import decode_token, encode_token
from tests.emulators.redshift.runner import Runner
from tests.emulators.redshift.sessions import SessionStore
from tests.emulators.redshift.settings import Settings
from tests.emulators.redshift.statements import Statement, StatementStore, Status, Step, Target
from tests.emulators.redshift.validation import validate_input
from tests.emulators.redshift.views import describe, describe_step, list_item, submitted

Json = dict[str, Any]
_CANCEL_WAIT_S = 5.0  # CancelStatement answers once the statement is ABORTED


class Api:
    def __init__(
        self,
        settings: Settings,
        store: StatementStore,
        runner: Runner,
        faults: Faults,
        sessions: SessionStore,
    ):
        self._settings = settings
        self._store = store
        self._sessions = sessions
        self._runner = runner
        self._faults = faults
        self._handlers: dict[str, Callable[[Json], Json]] = {
            "ExecuteStatement": self._execute_statement,
            "BatchExecuteStatement": self._batch_execute_statement,
            "DescribeStatement": self._describe_statement,
            "GetStatementResult": self._get_statement_result,
            "CancelStatement": self._cancel_statement,
            "ListStatements": self._list_statements,
        }

    def handle(self, operation: str, params: Json) -> Json:
        handler = self._handlers.get(operation)
        if handler is None:
            raise ApiError("UnknownOperationException", f"emulator: {operation} is not supported")
        validate_input(operation, params)
        return handler(params)

    def _execute_statement(self, params: Json) -> Json:
        checks.check_unsupported(params)
        sql: str = params["Sql"]
        checks.check_sql_sizes([sql], self._settings)
        target = self._target(params)
        bound = checks.parameters(params, sql)
        return self._submit(params, [sql], bound, target, is_batch=False)

    def _batch_execute_statement(self, params: Json) -> Json:
        checks.check_unsupported(params)
        if "Parameters" in params:
            raise validation_error(
                "emulator: Parameters are not supported by BatchExecuteStatement here; "
                "use ExecuteStatement, or literals escaped for Redshift"
            )
        sqls: list[str] = params["Sqls"]
        checks.check_sql_sizes(sqls, self._settings)
        target = self._target(params)
        return self._submit(params, sqls, None, target, is_batch=True)

    def _target(self, params: Json) -> Target | None:
        """The call's target; None for a call in a session, which has one."""
        if "SessionId" in params:
            checks.no_target_in_session(params)
            return None
        return checks.target(params, self._settings)

    def _submit(
        self,
        params: Json,
        sqls: list[str],
        parameters: dict[str, str] | None,
        target: Target | None,
        *,
        is_batch: bool,
    ) -> Json:
        # A retried call carries the same ClientToken: answer with the first one (its
        # session is busy with it, or has moved on: no session check applies).
        statement = self._store.by_client_token(params.get("ClientToken"))
        if statement is None:
            checks.active_statements(self._store.active_count(), self._faults.max_active_statements)

            def build(where: Target) -> Statement:
                return _new_statement(params, sqls, parameters, where, is_batch)

            statement = self._sessions.new_statement(
                params.get("SessionId"), params.get("SessionKeepAliveSeconds"), target, build
            )
            self._store.add(statement, params.get("ClientToken"))
            self._runner.start(statement)
        _wait(statement, params)
        return submitted(statement, waited="WaitTimeSeconds" in params)

    def _describe_statement(self, params: Json) -> Json:
        statement, step = self._store.find(params["Id"])
        _wait(statement, params)
        with statement.lock:
            return describe(statement) if step is None else describe_step(statement, step)

    def _get_statement_result(self, params: Json) -> Json:
        statement, step = self._store.find(params["Id"])
        if step is None and statement.is_batch:
            raise validation_error(
                "A batch statement has no result of its own; use a sub-statement Id (<Id>:<n>)."
            )
        step = step or statement.steps[0]
        _wait(statement, params)
        with statement.lock:
            status, error, outcome = step.status, step.error, step.outcome
        if status is Status.FAILED:
            raise validation_error(f"The query failed: {error}")
        if status is not Status.FINISHED or outcome is None:
            raise validation_error(f"Query has not finished; its status is {status}.")
        if outcome.result is None:
            raise validation_error(
                "Query does not have result. Please check query status with DescribeStatement."
            )
        records = outcome.result.records
        start = decode_token(params.get("NextToken"), step.id)
        end = start + self._settings.result_page_rows
        page: Json = {
            "Records": records[start:end],
            "ColumnMetadata": outcome.result.columns,
            "TotalNumRows": len(records),
        }
        if end < len(records):
            page["NextToken"] = encode_token(step.id, end)
        return page

    def _cancel_statement(self, params: Json) -> Json:
        statement, step = self._store.find(params["Id"])
        if step is not None:
            raise validation_error("Cancel a batch by its own Id, not a sub-statement's.")
        with statement.lock:
            status = statement.status
        if status.terminal:
            raise validation_error(f"Could not cancel a query that is already in {status} state.")
        time.sleep(self._faults.cancel_delay_s)  # a slow answer (this request's own thread)
        if self._faults.cancel_loses_race:  # past cancelling: it runs on and commits
            return {"Status": False}
        statement.control.cancel()
        statement.done.wait(_CANCEL_WAIT_S)
        return {"Status": statement.status is Status.ABORTED}

    def _list_statements(self, params: Json) -> Json:
        wanted = params.get("Status", "ALL")
        prefix = params.get("StatementName", "")
        matching: list[Statement] = []
        for statement in self._store.newest_first():
            if wanted not in ("ALL", statement.status):
                continue
            if prefix and not (statement.name or "").startswith(prefix):
                continue
            matching.append(statement)
        start = decode_token(params.get("NextToken"), "list")
        end = start + (params.get("MaxResults") or 100)
        page: Json = {"Statements": [list_item(s) for s in matching[start:end]]}
        if end < len(matching):
            page["NextToken"] = encode_token("list", end)
        return page


def _wait(statement: Statement, params: Json) -> None:
    """Long polling: up to WaitTimeSeconds for the statement to end. For the Id of a
    sub-statement the wait is for the whole batch: it may end later than that
    sub-statement, never later than the wait."""
    wait_s: int | None = params.get("WaitTimeSeconds")
    if wait_s is not None:
        statement.done.wait(wait_s)


def _new_statement(
    params: Json,
    sqls: list[str],
    parameters: dict[str, str] | None,
    target: Target,
    is_batch: bool,
) -> Statement:
    statement_id = str(uuid.uuid4())
    now = time.time()
    steps = [
        Step(f"{statement_id}:{n}" if is_batch else statement_id, sql, now, now)
        for n, sql in enumerate(sqls, start=1)
    ]
    return Statement(
        id=statement_id,
        steps=steps,
        is_batch=is_batch,
        target=target,
        name=params.get("StatementName"),
        parameters=parameters,
        created_at=now,
        updated_at=now,
    )
