"""The embedded queue: an SQLite file with SQS-like semantics.

Messages have a visibility timeout, a receive count and a receipt handle that
changes on every receive; a send is durable when it returns (WAL with
synchronous=FULL). Dead letters live in a table of the same file. Several
processes may share the file (ingest-only and consumer-only roles).
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import trio

from afpipe.queue.base import MAX_BATCH_ENTRIES, DeadLetter, QueueSize, ReceivedMessage
from afpipe.sqlite import ThreadedConnection, connect, transaction

# Other processes' sends are seen by polling the file this often during a long poll.
CROSS_PROCESS_POLL_S = 0.1
# The embedded queue's own visibility timeout (SQS's default), when afpipe sets none.
DEFAULT_VISIBILITY_S = 30

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL,
    body TEXT NOT NULL,
    sent_at REAL NOT NULL,
    visible_at REAL NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt TEXT
);
CREATE INDEX IF NOT EXISTS messages_visible_at ON messages (visible_at);
CREATE TABLE IF NOT EXISTS dead_letters (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL,
    body TEXT NOT NULL,
    reason TEXT NOT NULL,
    receive_count INTEGER NOT NULL,
    dead_at REAL NOT NULL
);
"""


def _split_handle(handle: str) -> tuple[int, str]:
    seq, _, token = handle.partition(":")
    return int(seq), token


class EmbeddedQueue:
    name = "embedded"

    def __init__(self, path: Path) -> None:
        self.path = path
        conn = connect(path)
        conn.executescript(_SCHEMA)
        self._db = ThreadedConnection(conn, f"embedded queue {path}")
        self._arrived = trio.Event()

    async def send_batch(self, bodies: Sequence[str]) -> list[str]:
        assert 0 < len(bodies) <= MAX_BATCH_ENTRIES
        ids = [str(uuid.uuid4()) for _ in bodies]

        def insert(conn: sqlite3.Connection) -> None:
            now = time.time()
            conn.executemany(
                "INSERT INTO messages (message_id, body, sent_at, visible_at) VALUES (?,?,?,?)",
                [(mid, body, now, now) for mid, body in zip(ids, bodies, strict=True)],
            )

        await self._db.run(lambda conn: transaction(conn, insert))
        self._arrived.set()
        self._arrived = trio.Event()
        return ids

    async def receive(
        self, *, max_messages: int, wait_s: float, visibility_s: int | None
    ) -> list[ReceivedMessage]:
        if visibility_s is None:
            visibility_s = DEFAULT_VISIBILITY_S
        deadline = trio.current_time() + wait_s
        while True:
            arrived = self._arrived
            # Shielded, and no checkpoint before returning: claimed messages are never
            # lost to a cancellation (they would stay invisible for visibility_s).
            with trio.CancelScope(shield=True):
                messages = await self._db.run(
                    lambda conn: transaction(conn, lambda c: _claim(c, max_messages, visibility_s))
                )
            remaining = deadline - trio.current_time()
            if messages or remaining <= 0:
                return messages
            with trio.move_on_after(min(CROSS_PROCESS_POLL_S, remaining)):
                await arrived.wait()

    async def visibility_timeout_s(self) -> int:
        await trio.lowlevel.checkpoint()
        return DEFAULT_VISIBILITY_S

    async def delete(self, receipt_handles: Sequence[str]) -> None:
        keys = [_split_handle(h) for h in receipt_handles]

        def delete(conn: sqlite3.Connection) -> None:
            conn.executemany("DELETE FROM messages WHERE seq = ? AND receipt = ?", keys)

        await self._db.run(lambda conn: transaction(conn, delete))

    async def change_visibility(self, receipt_handles: Sequence[str], timeout_s: int) -> None:
        keys = [_split_handle(h) for h in receipt_handles]

        def change(conn: sqlite3.Connection) -> None:
            visible_at = time.time() + timeout_s
            conn.executemany(
                "UPDATE messages SET visible_at = ? WHERE seq = ? AND receipt = ?",
                [(visible_at, seq, token) for seq, token in keys],
            )

        await self._db.run(lambda conn: transaction(conn, change))
        if timeout_s == 0:
            self._arrived.set()
            self._arrived = trio.Event()

    async def dead_letter(self, message: ReceivedMessage, reason: str, body: str) -> bool:
        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO dead_letters (message_id, body, reason, receive_count, dead_at)"
                " VALUES (?,?,?,?,?)",
                (message.message_id, body, reason, message.receive_count, time.time()),
            )

        await self._db.run(lambda conn: transaction(conn, insert))
        return True

    async def peek_dead_letters(self, limit: int) -> list[DeadLetter]:
        rows = await self._db.run(
            lambda conn: conn.execute(
                "SELECT message_id, body, reason, receive_count, dead_at"
                " FROM dead_letters ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        )
        return [
            DeadLetter(message_id, body, reason, count, at_s, source_message_id=message_id)
            for message_id, body, reason, count, at_s in rows
        ]

    async def redrive(self, limit: int) -> int:
        """Move up to ``limit`` dead letters back onto the queue, oldest first."""

        def move(conn: sqlite3.Connection) -> int:
            now = time.time()
            rows = conn.execute(
                "SELECT seq, body FROM dead_letters ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
            conn.executemany(
                "INSERT INTO messages (message_id, body, sent_at, visible_at) VALUES (?,?,?,?)",
                [(str(uuid.uuid4()), body, now, now) for _, body in rows],
            )
            conn.executemany("DELETE FROM dead_letters WHERE seq = ?", [(s,) for s, _ in rows])
            return len(rows)

        return await self._db.run(lambda conn: transaction(conn, move))

    async def size(self) -> QueueSize:
        now = time.time()
        row = await self._db.run(
            lambda conn: conn.execute(
                "SELECT COALESCE(SUM(visible_at <= ?1), 0), COALESCE(SUM(visible_at > ?1), 0),"
                " MIN(sent_at), (SELECT COUNT(*) FROM dead_letters) FROM messages",
                (now,),
            ).fetchone()
        )
        # An empty queue's oldest message is 0 s old, as CloudWatch reports it for SQS:
        # the gauge falls back to 0 once the queue drains, not stuck at its last age.
        oldest_age_s = 0.0 if row[2] is None else max(0.0, now - float(row[2]))
        return QueueSize(
            visible=int(row[0]),
            in_flight=int(row[1]),
            dead_letters=int(row[3]),
            oldest_age_s=oldest_age_s,
        )

    async def ping(self) -> None:
        await self._db.run(lambda conn: conn.execute("SELECT 1").fetchone())

    async def aclose(self) -> None:
        await self._db.aclose()


def _claim(conn: sqlite3.Connection, limit: int, visibility_s: int) -> list[ReceivedMessage]:
    now = time.time()
    rows = conn.execute(
        "SELECT seq, message_id, body, receive_count, sent_at FROM messages"
        " WHERE visible_at <= ? ORDER BY seq LIMIT ?",
        (now, limit),
    ).fetchall()
    claimed = []
    for seq, message_id, body, count, sent_at in rows:
        token = uuid.uuid4().hex
        conn.execute(
            "UPDATE messages SET visible_at = ?, receive_count = ?, receipt = ? WHERE seq = ?",
            (now + visibility_s, count + 1, token, seq),
        )
        claimed.append(ReceivedMessage(message_id, f"{seq}:{token}", body, count + 1, sent_at))
    return claimed
