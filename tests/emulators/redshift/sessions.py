"""Data API sessions: a DuckDB connection kept across calls, so that the temp tables
one call creates are there for the next (the point of sessions).

A call with SessionKeepAliveSeconds and no SessionId opens a session and runs in
it; a later call names it by SessionId (and names no target: checks.py) and may
carry SessionKeepAliveSeconds to change how long the session outlives that call.
Each call is still its own transaction, on the session's connection (engine.py).
What the service answers, and where that comes from:

- a session runs one statement at a time; a call while one runs is refused with
  ValidationException "Session is not available" (concurrent calls on one session
  fail so: https://github.com/awslabs/mcp/issues/4375);
- a session idle for longer than its keep-alive after its last statement ended is
  closed, its temp tables with it; a call on it is refused with the same
  ValidationException (https://github.com/awslabs/mcp/issues/4587, checked there
  against the service);
- an id that never named a session: ValidationException "Session with Id: <id> is
  invalid" (the same issue);
- a session is closed 24 hours after it opened, whatever its keep-alive (the
  model's documentation of SessionKeepAliveSeconds; the service then also ends a
  statement still running, which the emulator does not model);
- at most `max_sessions` sessions are open: the service allows 500 per cluster or
  workgroup, the emulator 500 in all (the strict reading); beyond,
  ActiveSessionsExceededException.

Undocumented, so strict: a keep-alive of 0 opens a session that closes as soon as
its statement ends (its SessionId is answered but cannot be used); a failed or
aborted statement leaves its session open.

Expiry is lazy: every session call first closes the expired sessions (at most
`max_sessions` to look at), so no reaper thread is needed and no more than
`max_sessions` connections are ever held.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable

import duckdb

from tests.emulators.redshift.database import Database
from tests.emulators.redshift.errors import ApiError, validation_error
from tests.emulators.redshift.statements import Statement, Target

MAX_SESSIONS = 500
NOT_AVAILABLE = "Session is not available"
_MAX_AGE_S = 86_400.0
# A statement that has just ended still holds its session's connection while its
# worker rolls back and lets go; a call that follows at once waits that long at most.
_RELEASE_WAIT_S = 5.0
_REMEMBERED_CLOSED = 10_000  # closed ids kept, to answer "not available", not "invalid"
_TEMP_TABLES_SQL = "SELECT table_name FROM duckdb_tables() WHERE database_name = 'temp'"


class Session:
    """One session: its connection and target, its keep-alive, and the statement it
    runs (or ran last). Changed only under the SessionStore's lock."""

    def __init__(
        self,
        connection: duckdb.DuckDBPyConnection,
        target: Target,
        keep_alive_s: int,
        opened_at: float,
    ) -> None:
        self.id = str(uuid.uuid4())
        self.connection = connection
        self.target = target
        self.keep_alive_s = keep_alive_s
        self.opened_at = opened_at
        self.current: Statement | None = None

    def temp_tables(self) -> set[str]:
        """Its temp tables now, asked of DuckDB when a transaction starts on it, so a
        rolled-back CREATE or a DROP is never remembered wrongly."""
        rows = self.connection.execute(_TEMP_TABLES_SQL).fetchall()
        return {str(row[0]) for row in rows}

    def busy(self) -> bool:
        return self.current is not None and not self.current.done.is_set()

    def expired(self, now: float) -> bool:
        if self.busy():
            return False
        idle_since = self.current.updated_at if self.current is not None else self.opened_at
        return now > idle_since + self.keep_alive_s or now > self.opened_at + _MAX_AGE_S


class SessionStore:
    def __init__(
        self,
        db: Database,
        max_sessions: int = MAX_SESSIONS,
        clock: Callable[[], float] = time.time,  # the clock of Statement.updated_at
    ) -> None:
        self._db = db
        self.max_sessions = max_sessions
        self._clock = clock
        self._lock = threading.Lock()
        self._live: dict[str, Session] = {}
        self._closed: OrderedDict[str, None] = OrderedDict()

    def new_statement(
        self,
        session_id: str | None,
        keep_alive_s: int | None,
        target: Target | None,
        build: Callable[[Target], Statement],
    ) -> Statement:
        """The statement `build` makes, bound to the session it runs in, if any: the
        one `session_id` names (`target` None: the session's), or one it opens
        (`keep_alive_s` without `session_id`)."""
        if session_id is not None:
            return self._join(session_id, keep_alive_s, build)
        assert target is not None, "a call outside a session names its target"
        statement = build(target)
        if keep_alive_s is not None:
            self._open(statement, keep_alive_s)
        return statement

    def _open(self, statement: Statement, keep_alive_s: int) -> None:
        """Open a session for `statement`, its first, which runs in it."""
        with self._lock:
            self._close_expired()
            if len(self._live) >= self.max_sessions:
                raise ApiError(
                    "ActiveSessionsExceededException",
                    f"The maximum number of active sessions ({self.max_sessions}) is exceeded.",
                )
            session = Session(self._db.connect(), statement.target, keep_alive_s, self._clock())
            self._live[session.id] = session
            _bind(session, statement)

    def _join(
        self, session_id: str, keep_alive_s: int | None, build: Callable[[Target], Statement]
    ) -> Statement:
        """The statement `build` makes for the target of session `session_id`, bound
        to run in it; `keep_alive_s`, if given, replaces the session's keep-alive."""
        self._await_release(session_id)
        with self._lock:
            self._close_expired()
            session = self._live.get(session_id)
            if session is None:
                if session_id in self._closed:
                    raise validation_error(NOT_AVAILABLE)
                raise validation_error(f"Session with Id: {session_id} is invalid")
            if session.busy():
                raise validation_error(NOT_AVAILABLE)
            if keep_alive_s is not None:
                session.keep_alive_s = keep_alive_s
            statement = build(session.target)
            _bind(session, statement)
            return statement

    def open_count(self) -> int:
        with self._lock:
            self._close_expired()
            return len(self._live)

    def close_all(self) -> None:
        """Close every session (their statements must have ended: emulator reset, close)."""
        with self._lock:
            for session in list(self._live.values()):
                self._close(session)

    def _await_release(self, session_id: str) -> None:
        with self._lock:
            session = self._live.get(session_id)
            current = session.current if session is not None else None
        if current is not None and current.status.terminal:
            current.done.wait(_RELEASE_WAIT_S)

    def _close_expired(self) -> None:
        now = self._clock()
        for session in [s for s in self._live.values() if s.expired(now)]:
            self._close(session)

    def _close(self, session: Session) -> None:
        del self._live[session.id]
        self._closed[session.id] = None
        while len(self._closed) > _REMEMBERED_CLOSED:
            self._closed.popitem(last=False)
        with contextlib.suppress(duckdb.Error):  # closing drops its temp tables
            session.connection.close()


def _bind(session: Session, statement: Statement) -> None:
    session.current = statement
    statement.session = session
