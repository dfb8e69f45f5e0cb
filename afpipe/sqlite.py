"""One SQLite connection used from trio: every call runs in a worker thread.

Blocking SQLite calls never run on the event loop. A CapacityLimiter of one
serialises this connection's use; cancellation waits for the running call to
finish (``abandon_on_cancel=False``) so a transaction is never left half done.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import trio

from afpipe.errors import PermanentError, TransientError

T = TypeVar("T")

BUSY_TIMEOUT_MS = 5000


def connect(path: Path, *, synchronous: str = "FULL") -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
    )
    _set_wal(conn)
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return conn


def _set_wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL. Two processes doing so at once on a new file (AFPIPE_WORKERS, or
    ingest and consumer started together) can get "database is locked" at once,
    without SQLite's busy handler: retry for up to the busy timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.05)  # startup only, before the event loop uses the connection


class ThreadedConnection:
    """Run functions of one ``sqlite3.Connection`` in a worker thread."""

    def __init__(self, conn: sqlite3.Connection, what: str) -> None:
        self.conn = conn
        self._what = what
        self._limiter = trio.CapacityLimiter(1)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return await trio.to_thread.run_sync(fn, self.conn, limiter=self._limiter)
        except (sqlite3.DataError, sqlite3.IntegrityError) as exc:
            # the data itself is refused: retrying cannot help
            raise PermanentError(f"{self._what}: {exc}", code=type(exc).__name__) from exc
        except sqlite3.Error as exc:
            # locked, disk full, read-only, I/O error: the caller retries later (503)
            raise TransientError(f"{self._what}: {exc}", code=type(exc).__name__) from exc

    async def aclose(self) -> None:
        await trio.to_thread.run_sync(self.conn.close, limiter=self._limiter)


def transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``fn`` inside BEGIN IMMEDIATE ... COMMIT (ROLLBACK on any error)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result
