"""Loads in two steps, in a Data API session: stage without the lock, merge under it.

A load stages its rows into a temp table of its session (as many calls as the
rows need), then LOCKs afpipe's lock table and merges them in one more call of
that session (``load_sql``). So the lock is held for two statements
whatever the batch's size, and the writers of one process, and of several,
stage side by side. A session that ended a load well is kept for the next one
(its stage emptied); one whose call did not end well is never used again.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.testing

from afpipe.aws import AwsClient
from afpipe.errors import TransientError
from afpipe.event import Event
from afpipe.warehouse.redshift import RedshiftWarehouse
from afpipe.warehouse.redshift import warehouse as redshift_module
from afpipe.warehouse.redshift.session import Session
from tests.emulators.redshift_data import RedshiftDataEmulator
from tests.fixtures.redshift import TERMINAL, alarm_after, wait_statement
from tests.test_redshift_emulator_isolation import holding
from tests.test_redshift_warehouse import counts, event, warehouse_on

TEST_TIME_LIMIT_S = 60


@pytest.fixture(autouse=True)
def _time_limit() -> Iterator[None]:
    with alarm_after(TEST_TIME_LIMIT_S):
        yield


async def ready(emu: RedshiftDataEmulator, aws: AwsClient, **options: Any) -> RedshiftWarehouse:
    warehouse = warehouse_on(emu, aws, **options)
    await warehouse.ensure_table()
    emu.reset_counters()
    return warehouse


def on_day(day: int, count: int, start: int = 0) -> list[Event]:
    """Events of 2024-03-<day>: far outside another day's dedup window of 60 s."""
    return [
        event(n, event_time=f"2024-03-{day:02d} 12:00:{n % 60:02d}.000")
        for n in range(start, start + count)
    ]


async def test_a_load_stages_while_another_holds_the_lock(
    redshift_emulator: RedshiftDataEmulator,
    aws_client: AwsClient,
    redshift_data_client: Any,
) -> None:
    """Only the merge waits for the lock: the staging call runs to its end while
    another transaction holds it (before, the load's first statement was LOCK,
    so it did nothing at all until the holder ended)."""
    warehouse = await ready(redshift_emulator, aws_client)
    redshift_emulator.set_latency(0.2)
    holder_sqls = ["LOCK public.afpipe_load_lock", *["SELECT 1"] * 15]  # ~3 s
    holder = await trio.to_thread.run_sync(holding, redshift_data_client, holder_sqls)
    redshift_emulator.reset_counters()
    loaded: list[int] = []

    async def load() -> None:
        loaded.append((await warehouse.load(on_day(2, 30))).loaded)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(load)
        held = await trio.to_thread.run_sync(
            wait_statement, redshift_data_client, holder, TERMINAL, 30.0
        )
        calls_while_held = redshift_emulator.calls.get("BatchExecuteStatement", 0)
    assert held["Status"] == "FINISHED"
    assert calls_while_held == 2  # the stage ended, the merge was waiting on the lock
    assert loaded == [30]
    assert counts(redshift_emulator) == (30, 30)


async def test_a_writer_reuses_its_session_and_empties_its_stage(
    redshift_emulator: RedshiftDataEmulator, aws_client: AwsClient
) -> None:
    """The second load runs in the first one's session: its stage is emptied, not
    created again (which would fail), and none of the first load's rows is merged
    again - they lie days outside the second load's dedup window, so a stage left
    full would have duplicated them."""
    warehouse = await ready(redshift_emulator, aws_client, dedup_window_s=60.0)
    first = await warehouse.load(on_day(2, 40))
    second = await warehouse.load(on_day(9, 40, start=40))
    assert (first.loaded, second.loaded) == (40, 40)
    assert counts(redshift_emulator) == (80, 80)
    assert redshift_emulator.open_sessions() == 1
    assert redshift_emulator.calls["BatchExecuteStatement"] == 4  # stage and merge, twice
    assert not redshift_emulator.errors


async def test_a_failed_load_leaves_its_session_and_loads_exactly_once(
    redshift_emulator: RedshiftDataEmulator, aws_client: AwsClient
) -> None:
    """A row Redshift refuses fails its stage; the bisection stages again in other
    sessions, the good rows land once, the bad one comes back with the reason."""
    warehouse = await ready(redshift_emulator, aws_client)
    events = on_day(2, 8)
    redshift_emulator.fail_statements_containing(
        events[5].id, "ERROR: invalid input syntax for type timestamp"
    )
    result = await warehouse.load(events)
    redshift_emulator.fail_statements_containing(events[5].id, None)
    assert result.loaded == 7
    assert [item.event.id for item in result.rejected] == [events[5].id]
    assert "invalid input syntax" in result.rejected[0].reason
    again = await warehouse.load(events)  # the bad row alone is new now
    assert again.loaded == 1
    assert counts(redshift_emulator) == (8, 8)


async def test_a_session_near_its_keep_alive_is_not_used_again(
    redshift_emulator: RedshiftDataEmulator,
    aws_client: AwsClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(redshift_module, "SESSION_KEEP_ALIVE_S", 2)
    warehouse = await ready(redshift_emulator, aws_client)
    await warehouse.load(on_day(2, 5))
    await trio.sleep(1.6)  # past 3/4 of the keep-alive: afpipe opens another
    assert (await warehouse.load(on_day(2, 5, start=5))).loaded == 5
    assert not redshift_emulator.errors
    assert counts(redshift_emulator) == (10, 10)


async def test_a_session_the_service_closed_fails_one_load_and_is_dropped(
    redshift_emulator: RedshiftDataEmulator,
    aws_client: AwsClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Were the service to close a session earlier than afpipe reckons, the load
    fails as a transient error (its batch is retried) and the next one opens a
    new session instead of meeting the closed one for ever."""
    monkeypatch.setattr(redshift_module, "SESSION_KEEP_ALIVE_S", 1)
    monkeypatch.setattr(Session, "usable", lambda self: True)
    warehouse = await ready(redshift_emulator, aws_client)
    await warehouse.load(on_day(2, 5))
    await trio.sleep(1.5)  # the emulator closes it; afpipe is told to think otherwise
    with pytest.raises(TransientError, match="Session is not available"):
        await warehouse.load(on_day(2, 5, start=5))
    assert (await warehouse.load(on_day(2, 5, start=5))).loaded == 5
    assert counts(redshift_emulator) == (10, 10)


async def test_a_load_cancelled_while_staging_commits_nothing(
    redshift_emulator: RedshiftDataEmulator, aws_client: AwsClient
) -> None:
    warehouse = await ready(redshift_emulator, aws_client)
    redshift_emulator.hang_next_statements(1)  # the stage's first statement
    with trio.move_on_after(2) as scope:
        await warehouse.load(on_day(2, 5))
    assert scope.cancelled_caught
    assert redshift_emulator.calls["CancelStatement"] == 1
    assert counts(redshift_emulator) == (0, 0)
    assert (await warehouse.load(on_day(2, 5))).loaded == 5  # in another session
    assert counts(redshift_emulator) == (5, 5)


async def test_a_session_is_usable_for_three_quarters_of_its_keep_alive(
    autojump_clock: trio.testing.MockClock,
) -> None:
    session = Session(keep_alive_s=100)
    assert session.fresh and session.usable()
    session.id = "opened"
    session.ended()
    await trio.sleep(74.9)
    assert session.usable()
    await trio.sleep(0.2)
    assert not session.usable()
    with pytest.raises(ValueError, match="keep-alive"):
        Session(keep_alive_s=0)
