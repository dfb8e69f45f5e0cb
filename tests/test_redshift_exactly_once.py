"""Exactly one row per event with any number of loaders, under both isolation levels.

Each ``RedshiftWarehouse`` here stands for another afpipe process (its own
in-process queue of loads), all loading one table of one emulator whose
concurrency behaves like Redshift's: SNAPSHOT (today's default) lets two
overlapping ``INSERT ... WHERE NOT EXISTS`` of one id both commit, SERIALIZABLE
fails the later one with 1023. The loads' LOCK of afpipe's lock table must make
both harmless.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
import trio

from afpipe import admin
from afpipe.aws import AwsClient
from afpipe.event import Event, to_row
from afpipe.warehouse.redshift import RedshiftWarehouse, load_sql, sql
from afpipe.warehouse.redshift.errors import StatementTimeout
from tests.emulators.redshift_data import RedshiftDataEmulator
from tests.fixtures.redshift import EMULATOR_SETTINGS, make_redshift_data_client, start_emulator
from tests.test_redshift_emulator_isolation import holding
from tests.test_redshift_warehouse import counts, event, warehouse_on

LEVELS = ["snapshot", "serializable"]


@pytest.fixture(params=LEVELS)
def emulator(request: pytest.FixtureRequest) -> Iterator[RedshiftDataEmulator]:
    emu = start_emulator(dataclasses.replace(EMULATOR_SETTINGS, isolation=request.param))
    try:
        yield emu
    finally:
        emu.close()
    assert not emu.crashes


async def load_all(loads: list[tuple[RedshiftWarehouse, list[Event]]]) -> list[int]:
    loaded: list[int] = []

    async def load(warehouse: RedshiftWarehouse, batch: list[Event]) -> None:
        loaded.append((await warehouse.load(batch)).loaded)

    async with trio.open_nursery() as nursery:
        for warehouse, batch in loads:
            nursery.start_soon(load, warehouse, batch)
    return loaded


async def test_overlapping_loads_from_several_processes_make_one_row_per_id(
    emulator: RedshiftDataEmulator, aws_client: AwsClient
) -> None:
    """Three loaders, overlapping batches in flight at once (each statement spends
    its latency inside the open transaction): one row per id, and under
    SERIALIZABLE no conflict to retry either, since the loads take turns."""
    loaders = [warehouse_on(emulator, aws_client, name=f"p{n}") for n in range(3)]
    events = [event(n) for n in range(90)]
    with trio.fail_after(60):
        await loaders[0].ensure_table()
        emulator.set_latency(0.05)
        emulator.reset_counters()
        loaded = await load_all(
            [(loaders[0], events[:50]), (loaders[1], events[20:70]), (loaders[2], events[40:])]
        )
    assert counts(emulator) == (90, 90)
    assert sum(loaded) == 90
    assert emulator.calls["BatchExecuteStatement"] == 6  # stage and merge each: no retry
    assert not emulator.errors


async def test_a_load_committed_after_its_caller_gave_up_is_not_loaded_twice(
    emulator: RedshiftDataEmulator, aws_client: AwsClient
) -> None:
    """The merge outlives its caller's timeout (it waits for a lock another
    transaction holds), and the CancelStatement loses the race: the merge commits
    on the server while afpipe retries the load (here from another process, as
    after a redelivery). Still one row per event."""
    impatient = warehouse_on(emulator, aws_client, statement_timeout_s=0.6)
    retry = warehouse_on(emulator, aws_client, name="retry")
    events = [event(n) for n in range(30)]
    client = make_redshift_data_client(emulator)
    with trio.fail_after(60):
        await impatient.ensure_table()
        emulator.set_latency(0.1)  # the stage: two statements, ~0.2 s
        emulator.set_cancel_loses_race(True)
        holder_sqls = ["LOCK public.afpipe_load_lock", *["SELECT 1"] * 15]  # ~1.6 s
        await trio.to_thread.run_sync(holding, client, holder_sqls)
        with pytest.raises(StatementTimeout):
            await impatient.load(events)
        assert counts(emulator) == (0, 0)  # its merge still waits for the lock
        again = await retry.load(events)
        while emulator.active_statements():
            await trio.sleep(0.05)
    assert counts(emulator) == (30, 30)
    # Both merges waited for the holder; whichever took the lock next inserted every
    # row, the other none (the emulator's lock queue, unlike Redshift's, is not FIFO).
    assert again.loaded in (0, 30)


async def test_ensure_table_creates_the_lock_table_and_check_reports_the_level(
    emulator: RedshiftDataEmulator, aws_client: AwsClient, capsys: pytest.CaptureFixture[str]
) -> None:
    warehouse = warehouse_on(emulator, aws_client, table="analytics.events")
    emulator.query("CREATE SCHEMA analytics")
    with trio.fail_after(20):
        assert await warehouse.check_lock() is False
        await warehouse.ensure_table()
        await warehouse.ensure_table()  # idempotent
        level = await warehouse.isolation_level()
        await admin._check_isolation(warehouse)
    assert emulator.query(f"SELECT count(*) FROM analytics.{sql.LOCK_TABLE}") == [(0,)]
    expected = {"snapshot": "Snapshot Isolation", "serializable": "Serializable"}
    assert level == expected[emulator.settings.isolation]
    out = capsys.readouterr().out
    assert f"isolation level: {level}" in out
    assert "LOCK analytics.afpipe_load_lock taken: loads are exactly once" in out


def test_every_merge_locks_first_and_staging_never_touches_the_target() -> None:
    table = sql.table_name("analytics.events")
    rows = [to_row(event(n)) for n in range(3)]
    lock, merge = load_sql.merge_sqls(table, rows, 60.0)
    assert lock == 'LOCK "analytics"."afpipe_load_lock"'
    assert merge.startswith('INSERT INTO "analytics"."events"')  # the snapshot point
    [call] = load_sql.stage_calls(rows, [sql.create_stage_sql()])
    assert not any("analytics" in text for text in call.sqls)  # the session's temp table
