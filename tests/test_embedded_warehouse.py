"""afpipe.warehouse: idempotent embedded loads and bisecting isolation of bad rows."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import trio

from afpipe.errors import PermanentError, TransientError
from afpipe.event import Event, to_row
from afpipe.warehouse.embedded import EmbeddedWarehouse
from afpipe.warehouse.isolate import load_isolating
from tests.events import from_payload

TIMEOUT_S = 10


def events(count: int, **extra: Any) -> list[Event]:
    return [from_payload({"event_name": "install", "n": n, **extra}) for n in range(count)]


def table_rows(path: Path, table: str = "appsflyer_events") -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(path)) as conn:
        columns = "id, event_time, event_name, app_id, user_id, device_id, event_data"
        return conn.execute(f'SELECT {columns} FROM "{table}" ORDER BY id').fetchall()


async def test_load_writes_the_row_columns(
    embedded_warehouse: EmbeddedWarehouse, tmp_path: Path
) -> None:
    event = from_payload(
        {
            "event_name": "af_purchase",
            "event_time": "2024-03-02 12:00:01.123",
            "app_id": "id1",
            "customer_user_id": "u-1",
            "idfv": "IDFV",
            "note": "ünïcødé 😀",
        }
    )
    with trio.fail_after(TIMEOUT_S):
        result = await embedded_warehouse.load([event])
    assert (result.loaded, result.rejected) == (1, [])
    assert table_rows(tmp_path / "warehouse.db") == [tuple(to_row(event))]


async def test_same_events_twice_give_one_row_each(
    embedded_warehouse: EmbeddedWarehouse,
) -> None:
    batch = events(5)
    with trio.fail_after(TIMEOUT_S):
        first = await embedded_warehouse.load(batch)
        second = await embedded_warehouse.load(batch)
        overlapping = await embedded_warehouse.load(batch[3:] + events(7)[5:])
        assert await embedded_warehouse.count() == 7
    assert first.loaded == 5
    assert second.loaded == 0  # only new rows count
    assert overlapping.loaded == 2


async def test_duplicate_within_one_batch_is_one_row(
    embedded_warehouse: EmbeddedWarehouse,
) -> None:
    (event,) = events(1)
    with trio.fail_after(TIMEOUT_S):
        result = await embedded_warehouse.load([event, event, event])
        assert await embedded_warehouse.count() == 1
    assert result.loaded == 1


async def test_empty_load(embedded_warehouse: EmbeddedWarehouse) -> None:
    with trio.fail_after(TIMEOUT_S):
        result = await embedded_warehouse.load([])
        assert await embedded_warehouse.count() == 0
    assert (result.loaded, result.rejected) == (0, [])


async def test_schema_qualified_table_name_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "wh.db"
    with trio.fail_after(TIMEOUT_S):
        first = EmbeddedWarehouse(path, "analytics.events")
        await first.ensure_table()
        await first.load(events(2))
        await first.aclose()
        second = EmbeddedWarehouse(path, "analytics.events")
        try:
            await second.ensure_table()  # idempotent
            await second.ping()
            assert (await second.load(events(3))).loaded == 1
            assert await second.count() == 3
        finally:
            await second.aclose()
    assert len(table_rows(path, "events")) == 3


async def test_missing_table_is_transient(tmp_path: Path) -> None:
    warehouse = EmbeddedWarehouse(tmp_path / "wh.db", "appsflyer_events")
    try:
        with trio.fail_after(TIMEOUT_S), pytest.raises(TransientError, match="no such table"):
            await warehouse.load(events(1))
    finally:
        await warehouse.aclose()


class Attempts:
    """A fake all-or-nothing load: PermanentError if any event is bad."""

    def __init__(self, bad: dict[str, str]) -> None:
        self.bad = bad
        self.committed: list[str] = []
        self.calls = 0

    async def __call__(self, batch: Sequence[Event]) -> int:
        self.calls += 1
        await trio.lowlevel.checkpoint()
        for event in batch:
            if event.id in self.bad:
                raise PermanentError(self.bad[event.id])
        self.committed.extend(e.id for e in batch)
        return len(batch)


@pytest.mark.parametrize("bad_positions", [[], [0], [63], [5, 6], [0, 17, 40, 63], list(range(64))])
async def test_load_isolating_sets_aside_exactly_the_bad_events(bad_positions: list[int]) -> None:
    batch = events(64)
    bad = {batch[i].id: f"bad row {i}" for i in bad_positions}
    attempt = Attempts(bad)
    with trio.fail_after(TIMEOUT_S):
        result = await load_isolating(batch, attempt)
    assert {r.event.id: r.reason for r in result.rejected} == bad
    assert [r.event for r in result.rejected] == [batch[i] for i in bad_positions]
    good = [e.id for e in batch if e.id not in bad]
    assert sorted(attempt.committed) == sorted(good)  # every good event once
    assert result.loaded == len(good)
    if len(bad_positions) == 1:
        assert attempt.calls <= 1 + 2 * 6  # O(k log n) attempts, not n
    if not bad_positions:
        assert attempt.calls == 1


async def test_load_isolating_propagates_transient_errors() -> None:
    batch = events(8)
    calls: list[int] = []

    async def attempt(part: Sequence[Event]) -> int:
        calls.append(len(part))
        await trio.lowlevel.checkpoint()
        if len(part) == 8:
            raise PermanentError("one bad row somewhere")
        raise TransientError("throttled")

    with trio.fail_after(TIMEOUT_S), pytest.raises(TransientError, match="throttled"):
        await load_isolating(batch, attempt)
    assert calls == [8, 4]  # stopped at the first transient failure


async def test_embedded_load_isolates_rows_the_database_refuses(
    embedded_warehouse: EmbeddedWarehouse, tmp_path: Path
) -> None:
    # A trigger refusing some rows stands in for a data error of the warehouse.
    with closing(sqlite3.connect(tmp_path / "warehouse.db")) as conn:
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON appsflyer_events"
            " WHEN NEW.event_name = 'bad' BEGIN SELECT RAISE(ABORT, 'refused row'); END"
        )
    good = events(6)
    bad = [from_payload({"event_name": "bad", "n": n}) for n in range(2)]
    batch = [good[0], bad[0], *good[1:4], bad[1], *good[4:]]
    with trio.fail_after(TIMEOUT_S):
        result = await embedded_warehouse.load(batch)
        assert await embedded_warehouse.count() == 6
    assert result.loaded == 6
    assert [r.event for r in result.rejected] == bad
    assert all("refused row" in r.reason for r in result.rejected)
