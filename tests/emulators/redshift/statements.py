"""Statements as the Data API tracks them, and the store that finds them by id.

Every state change happens under the statement's lock, so that DescribeStatement
(HTTP threads) sees a consistent picture while a worker thread runs it.
"""

from __future__ import annotations

import enum
import itertools
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tests.emulators.redshift.control import Control
from tests.emulators.redshift.engine import Outcome
from tests.emulators.redshift.errors import ApiError

if TYPE_CHECKING:
    from tests.emulators.redshift.sessions import Session

_query_ids = itertools.count(100_000)


class Status(enum.StrEnum):
    SUBMITTED = "SUBMITTED"
    PICKED = "PICKED"
    STARTED = "STARTED"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    ABORTED = "ABORTED"

    @property
    def terminal(self) -> bool:
        return self in (Status.FINISHED, Status.FAILED, Status.ABORTED)


@dataclass(frozen=True, slots=True)
class Target:
    """Where and as whom a statement runs, echoed back as the API does."""

    cluster_identifier: str | None = None
    workgroup_name: str | None = None
    database: str | None = None
    db_user: str | None = None
    secret_arn: str | None = None

    def as_response(self) -> dict[str, str]:
        fields = {
            "ClusterIdentifier": self.cluster_identifier,
            "WorkgroupName": self.workgroup_name,
            "Database": self.database,
            "DbUser": self.db_user,
            "SecretArn": self.secret_arn,
        }
        return {key: value for key, value in fields.items() if value is not None}


@dataclass(slots=True)
class Step:
    """One SQL text: the only step of ExecuteStatement, or a batch's sub-statement."""

    id: str
    sql: str
    created_at: float
    updated_at: float
    status: Status = Status.SUBMITTED
    error: str | None = None
    started_at: float | None = None
    duration_ns: int = 0
    outcome: Outcome | None = None
    query_id: int = field(default_factory=lambda: next(_query_ids))


@dataclass(slots=True)
class Statement:
    id: str
    steps: list[Step]
    is_batch: bool
    target: Target
    name: str | None
    parameters: dict[str, str] | None
    created_at: float
    updated_at: float
    status: Status = Status.SUBMITTED
    error: str | None = None
    started_at: float | None = None
    duration_ns: int = 0
    pid: int = 0
    session: Session | None = None  # the Data API session it runs in (sessions.py)
    control: Control = field(default_factory=Control)
    done: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def mark(self, status: Status) -> None:
        with self.lock:
            now = time.time()
            self.status, self.updated_at = status, now
            if status is Status.STARTED:
                self.started_at = now

    def begin_step(self, step: Step) -> None:
        with self.lock:
            now = time.time()
            step.status, step.started_at, step.updated_at = Status.STARTED, now, now

    def finish_step(self, step: Step, outcome: Outcome) -> None:
        with self.lock:
            _end(step, Status.FINISHED)
            step.outcome = outcome

    def finish(self) -> None:
        with self.lock:
            _end(self, Status.FINISHED)

    def fail(self, step: Step, error: str) -> None:
        with self.lock:
            _end(step, Status.FAILED)
            step.error = error
            self._abort_rest()
            _end(self, Status.FAILED)
            number = self.steps.index(step) + 1
            self.error = f"Query #{number} failed with {error}" if self.is_batch else error

    def abort(self) -> None:
        with self.lock:
            self._abort_rest()
            _end(self, Status.ABORTED)

    def _abort_rest(self) -> None:
        for step in self.steps:
            if not step.status.terminal:
                _end(step, Status.ABORTED)


def _end(item: Statement | Step, status: Status) -> None:
    now = time.time()
    item.status, item.updated_at = status, now
    if item.started_at is not None:
        item.duration_ns = int((now - item.started_at) * 1e9)


class StatementStore:
    def __init__(self, max_retained: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._by_id: OrderedDict[str, Statement] = OrderedDict()
        self._by_token: dict[str, str] = {}
        self._max_retained = max_retained

    def add(self, statement: Statement, client_token: str | None) -> None:
        with self._lock:
            self._by_id[statement.id] = statement
            if client_token is not None:
                self._by_token[client_token] = statement.id
            self._evict()

    def by_client_token(self, client_token: str | None) -> Statement | None:
        with self._lock:
            known = self._by_token.get(client_token) if client_token else None
            return self._by_id.get(known) if known else None

    def find(self, statement_id: str) -> tuple[Statement, Step | None]:
        """The statement and, for an id like `<id>:2`, its sub-statement."""
        base, _, number = statement_id.partition(":")
        with self._lock:
            statement = self._by_id.get(base)
        if statement is None:
            raise ApiError("ResourceNotFoundException", "Query does not exist.")
        if not number:
            return statement, None
        index = int(number) - 1 if number.isdigit() else -1
        if not statement.is_batch or not 0 <= index < len(statement.steps):
            raise ApiError("ResourceNotFoundException", "Query does not exist.")
        return statement, statement.steps[index]

    def newest_first(self) -> list[Statement]:
        with self._lock:
            return list(reversed(self._by_id.values()))

    def active_count(self) -> int:
        with self._lock:
            return sum(1 for s in self._by_id.values() if not s.status.terminal)

    def clear(self) -> None:
        with self._lock:
            self._by_id.clear()
            self._by_token.clear()

    def _evict(self) -> None:
        while len(self._by_id) > self._max_retained:
            oldest = next(iter(self._by_id))
            if not self._by_id[oldest].status.terminal:
                break
            del self._by_id[oldest]
