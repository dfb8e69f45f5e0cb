"""Statements rendered as ExecuteStatement, DescribeStatement and ListStatements
answer them. Callers of describe() and describe_step() hold the statement's lock."""

from __future__ import annotations

from typing import Any

from tests.emulators.redshift.statements import Statement, Step

Json = dict[str, Any]


def submitted(statement: Statement, *, waited: bool) -> Json:
    """The answer to ExecuteStatement / BatchExecuteStatement. After WaitTimeSeconds
    it carries Status (terminal, or the status it has reached), RedshiftPid once the
    statement has started, and HasResultSet once it has ended: the service documents
    all three for that answer; what it sends for a statement still running is not
    documented, so the emulator sends only what is known."""
    with statement.lock:
        out: Json = {
            "Id": statement.id,
            "CreatedAt": statement.created_at,
            **statement.target.as_response(),
            **_session(statement),
        }
        if not waited:
            return out  # without WaitTimeSeconds, as before long polling existed
        out["Status"] = str(statement.status)
        if statement.started_at is not None:
            out["RedshiftPid"] = statement.pid
        if statement.status.terminal:
            out["HasResultSet"] = any(_has_result_set(step) for step in statement.steps)
        return out


def describe(statement: Statement) -> Json:
    out: Json = {
        "Id": statement.id,
        "Status": str(statement.status),
        "CreatedAt": statement.created_at,
        "UpdatedAt": statement.updated_at,
        "Duration": statement.duration_ns,
        "RedshiftPid": statement.pid,
        "QueryString": "; ".join(step.sql for step in statement.steps),
        **statement.target.as_response(),
        **_session(statement),
    }
    if statement.error is not None:
        out["Error"] = statement.error
    if statement.parameters is not None:
        out["QueryParameters"] = [{"name": k, "value": v} for k, v in statement.parameters.items()]
    if statement.is_batch:
        out["HasResultSet"] = any(_has_result_set(step) for step in statement.steps)
        out["ResultRows"] = -1
        out["ResultSize"] = -1
        out["SubStatements"] = [_sub_statement(step) for step in statement.steps]
    else:
        step = statement.steps[0]
        out.update(_results(step), RedshiftQueryId=step.query_id)
    return out


def describe_step(statement: Statement, step: Step) -> Json:
    """DescribeStatement of a sub-statement id (`<id>:<n>`)."""
    out = _sub_statement(step)
    out.update(RedshiftPid=statement.pid, **statement.target.as_response(), **_session(statement))
    return out


def list_item(statement: Statement) -> Json:
    with statement.lock:
        out: Json = {
            "Id": statement.id,
            "Status": str(statement.status),
            "CreatedAt": statement.created_at,
            "UpdatedAt": statement.updated_at,
            "IsBatchStatement": statement.is_batch,
        }
        if statement.is_batch:
            out["QueryStrings"] = [step.sql for step in statement.steps]
        else:
            out["QueryString"] = statement.steps[0].sql
        if statement.name is not None:
            out["StatementName"] = statement.name
        if statement.target.secret_arn is not None:
            out["SecretArn"] = statement.target.secret_arn
        out.update(_session(statement))
        return out


def _session(statement: Statement) -> Json:
    session = statement.session
    return {} if session is None else {"SessionId": session.id}


def _sub_statement(step: Step) -> Json:
    out: Json = {
        "Id": step.id,
        "Status": str(step.status),
        "CreatedAt": step.created_at,
        "UpdatedAt": step.updated_at,
        "Duration": step.duration_ns,
        "QueryString": step.sql,
        "RedshiftQueryId": step.query_id,
        **_results(step),
    }
    if step.error is not None:
        out["Error"] = step.error
    return out


def _results(step: Step) -> Json:
    outcome = step.outcome
    if outcome is None:
        return {"HasResultSet": False, "ResultRows": -1, "ResultSize": -1}
    size = outcome.result.size_bytes if outcome.result is not None else 0
    return {
        "HasResultSet": outcome.result is not None,
        "ResultRows": outcome.result_rows,
        "ResultSize": size,
    }


def _has_result_set(step: Step) -> bool:
    return step.outcome is not None and step.outcome.result is not None
