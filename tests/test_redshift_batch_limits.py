"""Several 100 KB SQL texts per BatchExecuteStatement when the Data API allows it (#13).

AWS documents 100 KB per SQL text, not whether the texts of one call count
together. The packing under either limit is pure (``load_sql``); the
warehouse starts with the per-text limit, falls back to the total one when the
Data API refuses a call of more than 100 KB for its size, and remembers it.
Against the emulator in both of its modes (``Settings.batch_limit``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import trio

from afpipe import admin
from afpipe.aws import AwsClient
from afpipe.aws.s3 import S3Client
from afpipe.aws.s3_api import S3Endpoint
from afpipe.errors import PermanentError, TransientError
from afpipe.event import Event, Row, to_row
from afpipe.warehouse.redshift import (
    RedshiftWarehouse,
    Stager,
    Staging,
    batch_limit,
    copy,
    load_sql,
    sql,
)
from afpipe.warehouse.redshift.batch_limit import PER_TEXT, TOTAL
from tests.emulators.redshift_data import RedshiftDataEmulator
from tests.fixtures.moto import MOTO_REGION
from tests.fixtures.redshift import EMULATOR_SETTINGS, checked, settings_with_s3, start_emulator
from tests.test_redshift_warehouse import counts, event, warehouse_on

TABLE = sql.table_name("appsflyer_events")
ROLE = "arn:aws:iam::123456789012:role/redshift-copy"
SIZE_REFUSAL = "redshift-data BatchExecuteStatement: ValidationException (HTTP 400): " + (
    "Cannot process query string larger than 100kB"
)


def big_event(n: int) -> Event:
    """About 1.3 KB of SQL once a VALUES tuple: 800 of them are ~1 MB."""
    return event(n, blob="x" * 1100)


def megabyte(start: int = 0) -> list[Event]:
    return [big_event(n) for n in range(start, start + 800)]


def rows_of(events: list[Event]) -> list[Row]:
    return [to_row(e) for e in events]


def sql_bytes(call: load_sql.StageCall) -> int:
    return sum(len(text.encode()) for text in call.sqls)


def staged(rows: list[Row], limits: sql.SqlLimits) -> list[load_sql.StageCall]:
    return load_sql.stage_calls(rows, [sql.create_stage_sql()], limits)


# --- the packing under either limit ----------------------------------------------------------


def test_per_text_limits_allow_40_texts_of_100_kb() -> None:
    assert sql.PER_TEXT_LIMITS.max_sql_bytes == sql.TOTAL_LIMITS.max_sql_bytes == 100_000
    assert sql.PER_TEXT_LIMITS.max_statements == 40  # SqlList's max in the service model
    assert sql.PER_TEXT_LIMITS.max_batch_sql_bytes == 40 * 100_000
    assert sql.TOTAL_LIMITS.max_batch_sql_bytes == 100_000
    assert sql.DATA_API_LIMITS == sql.TOTAL_LIMITS  # the pure functions' default: safe


def test_per_text_limits_stage_a_megabyte_in_one_call_of_several_full_inserts() -> None:
    rows = rows_of(megabyte())
    [call] = staged(rows, sql.PER_TEXT_LIMITS)
    inserts = call.sqls[1:]
    assert call.rows == rows
    assert call.sqls[0].startswith("CREATE TEMP TABLE")
    assert 10 <= len(inserts) <= 12
    assert all(90_000 < len(text.encode()) <= 100_000 for text in inserts[:-1])
    assert sql_bytes(call) > 1_000_000


def test_total_limits_stage_in_several_calls_of_at_most_100_kb() -> None:
    rows = rows_of(megabyte())
    plan = staged(rows, sql.TOTAL_LIMITS)
    assert len(plan) >= 11
    assert [row for call in plan for row in call.rows] == rows
    assert all(sql_bytes(call) <= 100_000 for call in plan)
    assert plan[0].sqls[0].startswith("CREATE") and all(len(c.sqls) == 1 for c in plan[1:])


def test_the_staging_decision_does_not_follow_the_limit() -> None:
    rows = rows_of(megabyte())
    assert not copy.fits_inline(rows, TABLE)  # one COPY beats 11 texts, either way
    assert copy.fits_inline(rows[:50], TABLE)


def test_only_a_size_refusal_of_a_call_over_100_kb_in_all_teaches_the_limit() -> None:
    [txn] = staged(rows_of(megabyte()), sql.PER_TEXT_LIMITS)
    [small] = staged(rows_of(megabyte()[:10]), sql.PER_TEXT_LIMITS)
    size = PermanentError(SIZE_REFUSAL, code="ValidationException")
    other = PermanentError("... Redshift endpoint doesn't exist", code="ValidationException")
    throttled = TransientError(SIZE_REFUSAL, code="ThrottlingException")
    assert batch_limit.refused_for_total_size(txn.sqls, size)
    assert not batch_limit.refused_for_total_size(small.sqls, size)  # within 100 KB in all
    one_text = ["SELECT '" + "x" * 100_001 + "'"]
    assert not batch_limit.refused_for_total_size(one_text, size)
    assert not batch_limit.refused_for_total_size(txn.sqls, other)
    assert not batch_limit.refused_for_total_size(txn.sqls, throttled)
    # A size refusal from in front of the Data API: retrying the same call cannot help.
    too_large = PermanentError("HTTP 413: Request Entity Too Large", code="HTTP413")
    assert batch_limit.refused_for_total_size(txn.sqls, too_large)


# --- the warehouse against the emulator, both modes ------------------------------------------


@pytest.fixture
def per_text_emulator(moto_endpoint: str) -> Iterator[RedshiftDataEmulator]:
    settings = dataclasses.replace(settings_with_s3(moto_endpoint), batch_limit="per_text")
    yield from checked(start_emulator(settings))


async def ready(emu: RedshiftDataEmulator, aws: AwsClient, **options: Any) -> RedshiftWarehouse:
    warehouse = warehouse_on(emu, aws, **options)
    await warehouse.ensure_table()
    emu.reset_counters()
    return warehouse


def limit_records(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "afpipe.redshift" and r.levelno == level and "batch limit" in r.getMessage()
    ]


async def test_per_text_mode_stages_a_megabyte_in_one_call(
    per_text_emulator: RedshiftDataEmulator,
    aws_client: AwsClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="afpipe.redshift")
    with trio.fail_after(60):
        warehouse = await ready(per_text_emulator, aws_client)
        assert warehouse.batch_limit is None  # not known before the first large call
        first = await warehouse.load(megabyte())
        second = await warehouse.load(megabyte(800))
    assert (first.loaded, second.loaded) == (800, 800)
    assert per_text_emulator.calls["BatchExecuteStatement"] == 4  # a stage and a merge each
    assert not per_text_emulator.errors
    assert counts(per_text_emulator) == (1600, 1600)
    assert warehouse.batch_limit == PER_TEXT
    [confirmed] = limit_records(caplog, logging.INFO)  # once, at the first large call
    assert "per SQL text" in confirmed
    assert not limit_records(caplog, logging.WARNING)


async def test_total_mode_falls_back_once_and_remembers(
    redshift_emulator: RedshiftDataEmulator,  # the emulator's default mode: "total"
    aws_client: AwsClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="afpipe.redshift")
    conservative = staged(rows_of(megabyte()), sql.TOTAL_LIMITS)
    with trio.fail_after(90):
        warehouse = await ready(redshift_emulator, aws_client)
        first = await warehouse.load(megabyte())
        after_first = redshift_emulator.calls["BatchExecuteStatement"]
        second = await warehouse.load(megabyte(800))
        again = await warehouse.load(megabyte())  # all known: nothing new
    assert (first.loaded, first.rejected, second.loaded, again.loaded) == (800, [], 800, 0)
    assert counts(redshift_emulator) == (1600, 1600)  # every event once, none dead-lettered
    # exactly one refused call, then the conservative plan and a merge, for this load
    # and the next
    assert redshift_emulator.errors == {"ValidationException": 1}
    assert after_first == 1 + len(conservative) + 1
    calls = redshift_emulator.calls["BatchExecuteStatement"]
    assert calls == after_first + 2 * (len(conservative) + 1)
    assert warehouse.batch_limit == TOTAL
    assert warehouse.limits == sql.TOTAL_LIMITS
    [warning] = limit_records(caplog, logging.WARNING)
    assert "all the SQL texts of a call together" in warning
    assert not limit_records(caplog, logging.INFO)


async def test_a_small_load_leaves_the_limit_unknown(
    redshift_emulator: RedshiftDataEmulator, aws_client: AwsClient
) -> None:
    with trio.fail_after(30):
        warehouse = await ready(redshift_emulator, aws_client)
        result = await warehouse.load(megabyte()[:20])
    assert result.loaded == 20
    assert redshift_emulator.calls["BatchExecuteStatement"] == 2  # a stage and a merge
    assert warehouse.batch_limit is None
    assert warehouse.limits == sql.PER_TEXT_LIMITS


async def test_a_refusal_for_another_reason_does_not_change_the_limit(
    moto_endpoint: str, aws_client: AwsClient
) -> None:
    settings = dataclasses.replace(
        EMULATOR_SETTINGS, batch_limit="per_text", clusters=frozenset({"another-cluster"})
    )
    emu = start_emulator(settings)
    try:
        warehouse = warehouse_on(emu, aws_client)
        with trio.fail_after(30), pytest.raises(TransientError) as refused:
            await warehouse.load(megabyte())
    finally:
        emu.close()
    assert refused.value.code == "ValidationException"
    assert "endpoint doesn't exist" in str(refused.value)
    assert emu.calls["BatchExecuteStatement"] == 1  # neither retried nor re-planned
    assert warehouse.batch_limit is None
    assert warehouse.limits == sql.PER_TEXT_LIMITS


async def test_configured_limits_are_not_detected(
    redshift_emulator: RedshiftDataEmulator, aws_client: AwsClient
) -> None:
    with trio.fail_after(30):
        warehouse = await ready(redshift_emulator, aws_client, limits=sql.PER_TEXT_LIMITS)
        with pytest.raises(TransientError):
            await warehouse.load(megabyte()[:200])
    assert redshift_emulator.calls["BatchExecuteStatement"] == 1
    assert warehouse.limits == sql.PER_TEXT_LIMITS
    assert counts(redshift_emulator) == (0, 0)


@pytest.mark.parametrize("mode", ["total", "per_text"])
async def test_with_staging_more_than_one_text_goes_through_copy_in_either_mode(
    redshift_emulator: RedshiftDataEmulator,
    per_text_emulator: RedshiftDataEmulator,
    aws_client: AwsClient,
    moto_s3_endpoint: S3Endpoint,
    s3_bucket: str,
    mode: str,
) -> None:
    """Several 100 KB INSERT texts cost a statement each; one COPY costs as much as one
    text: with staging, the batch limit never matters (nothing to learn, nothing refused)."""
    emu = redshift_emulator if mode == "total" else per_text_emulator
    staging = Staging(bucket=s3_bucket, prefix="loads/", iam_role=ROLE, region=MOTO_REGION)
    stager = Stager(S3Client(aws_client, moto_s3_endpoint), staging)
    with trio.fail_after(60):
        warehouse = await ready(emu, aws_client, stager=stager)
        first = await warehouse.load(megabyte())
        second = await warehouse.load(megabyte(800))
    assert (first.loaded, second.loaded) == (800, 800)
    assert counts(emu) == (1600, 1600)
    assert emu.errors == {}
    assert emu.calls["BatchExecuteStatement"] == 4  # a COPY and a merge per load
    assert warehouse.batch_limit is None


async def test_check_reports_the_batch_limit(
    redshift_emulator: RedshiftDataEmulator,
    aws_client: AwsClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with trio.fail_after(60):
        warehouse = await ready(redshift_emulator, aws_client)
        admin._report_batch_limit(warehouse)
        await warehouse.load(megabyte())
        admin._report_batch_limit(warehouse)
        admin._report_batch_limit(
            warehouse_on(redshift_emulator, aws_client, limits=sql.TOTAL_LIMITS)
        )
    unknown, learnt, configured = capsys.readouterr().out.splitlines()
    assert unknown.startswith("  batch limit: not known yet: detected at the first load")
    assert learnt == (
        "  batch limit: 100 KB for all the SQL texts of a call together (the Data API refused more)"
    )
    assert configured == "  batch limit: configured: 100000 bytes per SQL text, 100000 per call"


async def test_concurrent_loads_planned_before_the_fallback_both_load_once(
    redshift_emulator: RedshiftDataEmulator,
    aws_client: AwsClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two writers of one warehouse plan per text before either is refused: each
    refusal re-plans its own rows; the limit is learnt (and logged) once."""
    caplog.set_level(logging.INFO, logger="afpipe.redshift")
    loaded: list[int] = []

    async def load(batch: list[Event]) -> None:
        loaded.append((await warehouse.load(batch)).loaded)

    with trio.fail_after(90):
        warehouse = await ready(redshift_emulator, aws_client)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(load, megabyte())
            nursery.start_soon(load, megabyte(400))
    assert sorted(loaded) == [400, 800]
    assert counts(redshift_emulator) == (1200, 1200)
    assert 1 <= redshift_emulator.errors["ValidationException"] <= 2
    assert len(limit_records(caplog, logging.WARNING)) == 1
    assert warehouse.batch_limit == TOTAL
