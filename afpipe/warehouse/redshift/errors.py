"""Why a Redshift load failed, as classes callers catch; every classification is here.

A FAILED or ABORTED statement is classified once, when the Data API client sees it
end (``statement_error``, or ``copy_statement_error`` for a transaction that COPYs):

- ``StatementDataError`` (a PermanentError): the values of the rows are at fault;
  the warehouse bisects them and dead-letters the offenders with Redshift's text;
- ``ConfigError``: the database user lacks a privilege (an operator must grant it:
  exit 2);
- a known ``TransientError``: ``StatementConflict`` (a serializable conflict, which
  the warehouse retries in its session), ``StatementAborted``,
  ``StatementSystemError`` (the system's state: relations, disk, connections),
  ``CopySourceError`` (COPY could not read the staged object: bucket, role, region);
- an ``UnclassifiedStatementError``: a text afpipe does not know, retried a bounded
  number of times (``UnclassifiedFailures``), then taken to be the rows' fault.

The client also raises ``StatementTimeout`` (it cancelled a statement that ran too
long) and ``StatementNotFound`` (DescribeStatement lost track of it), and the
warehouse turns a request refused during a load (validation, access, S3) into a
``RefusedRequest``: no row is at fault, so the batch stays queued, not bisected.
Each class keeps the ``code`` string logs and metrics showed before it existed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import ClassVar

from afpipe.errors import AfpipeError, ConfigError, PermanentError, TransientError
from afpipe.warehouse.redshift.results import StatementResult

# The .code of each class below
CONFLICT = "SerializableIsolationViolation"
TIMED_OUT = "StatementTimeout"
ABORTED = "StatementAborted"
FAILED = "StatementFailed"
COPY_SOURCE = "CopySourceFailed"
NOT_FOUND = "ResourceNotFoundException"  # the Data API's own code, kept as it was

_CONFLICT = re.compile(
    r"\b1023 DETAIL|serializable isolation violation|conflict with concurrent transaction"
    r"|deadlock detected",
    re.I,
)
# Redshift error texts caused by the values of the rows, not by the system.
_DATA = re.compile(
    r"value too long|invalid input syntax|json parsing error|invalid byte sequence"
    r"|out of range|numeric field overflow|cannot insert a null|invalid json"
    r"|super value exceeds|invalid escape|invalid character|invalid timestamp",
    re.I,
)
# The database user may not do this: an operator must grant it (exit 2).
_PRIVILEGE = re.compile(r"permission denied|must be owner of|not authorized to", re.I)
# Known to be the system's state, not the rows: retried for ever, never dead-lettered.
_SYSTEM = re.compile(
    r"relation \S+ does not exist|could not open relation|disk full|out of memory"
    r"|terminating connection|connection reset|canceled on user's request",
    re.I,
)
# A COPY that failed for these reasons failed before any row was read: not the rows' fault.
_NOT_THE_ROWS = re.compile(
    r"S3ServiceException|S3CurlException|access ?denied|not authorized to assume"
    r"|assume ?role|IAM role|S3 prefix .* does not exist|specified (?:bucket|key) does not exist"
    r"|NoSuchBucket|NoSuchKey|different region",
    re.I,
)
# Redshift's answer when COPY rejected a row (details in sys_load_error_detail).
_LOAD_ERROR = re.compile(r"Load into table '[^']*' failed|sys_load_error_detail|stl_load_errors")
_MAX_UNCLASSIFIED_TEXTS = 64  # bounds the memory of failure texts


class StatementDataError(PermanentError):
    """A statement FAILED because of the values it carried; the message is Redshift's."""

    def __init__(self, message: str, *, request_id: str = "") -> None:
        super().__init__(message, code=FAILED, request_id=request_id)


class _StatementTransient(TransientError):
    """A statement did not end well for a reason a later attempt may not meet."""

    CODE: ClassVar[str]

    def __init__(self, message: str, *, request_id: str = "") -> None:
        super().__init__(message, code=self.CODE, request_id=request_id)


class StatementConflict(_StatementTransient):
    """A serializable conflict with another transaction; it rolled back."""

    CODE = CONFLICT


class StatementAborted(_StatementTransient):
    """The statement was ABORTED (cancelled, by afpipe or by someone else)."""

    CODE = ABORTED


class StatementTimeout(_StatementTransient):
    """The statement outlived its timeout or the polling budget; afpipe cancelled it."""

    CODE = TIMED_OUT


class StatementSystemError(_StatementTransient):
    """The statement FAILED for the system's state (a missing relation, disk, a
    connection), known not to be the rows' fault."""

    CODE = FAILED


class StatementNotFound(_StatementTransient):
    """DescribeStatement does not know the statement (lost, or not caught up yet)."""

    CODE = NOT_FOUND


class CopySourceError(_StatementTransient):
    """COPY could not read the staged object (missing, denied, role, region)."""

    CODE = COPY_SOURCE


class UnclassifiedStatementError(_StatementTransient):
    """A statement FAILED with a text afpipe does not recognise (``detail``)."""

    CODE = FAILED

    def __init__(self, message: str, *, detail: str, request_id: str = "") -> None:
        super().__init__(message, request_id=request_id)
        self.detail = detail


class RefusedRequest(TransientError):
    """A service refused a load's request (validation, access, S3 denied): no row is
    at fault, so bisecting would dead-letter good events; the batch stays queued."""

    @classmethod
    def of(cls, exc: PermanentError) -> RefusedRequest:
        return cls(str(exc), code=exc.code, request_id=exc.request_id)


Classifier = Callable[[StatementResult], AfpipeError]


def statement_error(result: StatementResult) -> AfpipeError:
    """The error a FAILED or ABORTED statement stands for."""
    text = f"Redshift statement {result.id} {result.status}: {result.error or 'no detail'}"
    if result.status == "ABORTED":
        return StatementAborted(text)
    if _CONFLICT.search(result.error):
        return StatementConflict(text)
    if _DATA.search(result.error):
        return StatementDataError(result.error, request_id=result.id)
    if _PRIVILEGE.search(result.error):
        return ConfigError(
            f"the Redshift database user (REDSHIFT_DB_USER / REDSHIFT_SECRET_ARN, or the IAM"
            f" identity) lacks a privilege on REDSHIFT_TABLE_NAME's schema: {result.error}"
        )
    if _SYSTEM.search(result.error):
        return StatementSystemError(text)
    # Not known to be the rows' fault: retrying is safe (loads are idempotent), and
    # the warehouse bounds how often before it bisects (UnclassifiedFailures).
    return UnclassifiedStatementError(text, detail=result.error, request_id=result.id)


def copy_statement_error(result: StatementResult) -> AfpipeError:
    """The error a FAILED or ABORTED COPY transaction stands for.

    The rows are at fault only when COPY says it rejected a row; a COPY that
    could not read the object (missing, denied, role not assumable, wrong
    region) leaves the batch queued for a retry instead of dead-lettering it.
    """
    if result.status == "FAILED":
        if _NOT_THE_ROWS.search(result.error):
            text = f"Redshift COPY {result.id} could not read the staged object: {result.error}"
            return CopySourceError(text, request_id=result.id)
        if _LOAD_ERROR.search(result.error):
            return StatementDataError(result.error, request_id=result.id)
    return statement_error(result)


def lost_statement(exc: PermanentError) -> StatementNotFound | None:
    """What DescribeStatement's refusal ``exc`` stands for when the service lost track
    of the statement (or has not caught up): try the load again. None otherwise."""
    if exc.code != NOT_FOUND:
        return None
    return StatementNotFound(str(exc), request_id=exc.request_id)


class UnclassifiedFailures:
    """How often each unclassified text failed since a load last went through: after
    ``limit`` failures with one text (across attempts), it is taken to be the rows'."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: dict[str, int] = {}  # Redshift's text -> failures seen

    def verdict(self, exc: UnclassifiedStatementError) -> StatementDataError | None:
        """Count ``exc``; the data error it now stands for, or None: retry it."""
        seen = self._seen.get(exc.detail, 0) + 1
        if exc.detail in self._seen or len(self._seen) < _MAX_UNCLASSIFIED_TEXTS:
            self._seen[exc.detail] = seen
        if seen < self.limit:
            return None
        return StatementDataError(exc.detail, request_id=exc.request_id)

    def clear(self) -> None:
        """A load went through: count afresh."""
        self._seen.clear()
