"""The embedded warehouse: an SQLite file with the appsflyer_events columns.

Loads are idempotent on ``id`` (a unique key plus ``ON CONFLICT DO NOTHING``),
so a redelivered or repeated event never makes a second row.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from afpipe.event import Event, to_row
from afpipe.sqlite import ThreadedConnection, connect, transaction
from afpipe.warehouse.base import LoadResult
from afpipe.warehouse.isolate import load_isolating

_COLUMNS = "id, event_time, event_name, app_id, user_id, device_id, event_data"


def _schema(table: str) -> str:
    return f"""
CREATE TABLE IF NOT EXISTS "{table}" (
    id TEXT NOT NULL PRIMARY KEY,
    event_time TEXT,
    event_name TEXT,
    app_id TEXT,
    user_id TEXT,
    device_id TEXT,
    event_data TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now'))
);
CREATE INDEX IF NOT EXISTS "{table}_event_time" ON "{table}" (event_time);
"""


class EmbeddedWarehouse:
    def __init__(self, path: Path, table: str, name: str = "primary") -> None:
        # A validated identifier (config); "schema.table" has no schema here.
        self.table = table.rpartition(".")[2]
        self.name = name
        self.path = path
        self._db = ThreadedConnection(connect(path), f"embedded warehouse {path}")
        self._insert = (
            f'INSERT INTO "{self.table}" ({_COLUMNS}) VALUES (?,?,?,?,?,?,?)'
            " ON CONFLICT (id) DO NOTHING"
        )

    async def ensure_table(self) -> None:
        schema = _schema(self.table)
        await self._db.run(lambda conn: conn.executescript(schema))

    async def load(self, events: Sequence[Event]) -> LoadResult:
        return await load_isolating(events, self._attempt)

    async def _attempt(self, events: Sequence[Event]) -> int:
        rows = [to_row(event) for event in events]

        def insert(conn: sqlite3.Connection) -> int:
            before = conn.total_changes
            conn.executemany(self._insert, rows)
            return conn.total_changes - before

        return await self._db.run(lambda conn: transaction(conn, insert))

    async def count(self) -> int:
        row = await self._db.run(
            lambda conn: conn.execute(f'SELECT COUNT(*) FROM "{self.table}"').fetchone()
        )
        return int(row[0])

    async def ping(self) -> None:
        await self._db.run(lambda conn: conn.execute("SELECT 1").fetchone())

    async def aclose(self) -> None:
        await self._db.aclose()
