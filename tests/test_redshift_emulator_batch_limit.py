"""The emulator's two readings of the Data API's 100 KB limit on BatchExecuteStatement
(`Settings.batch_limit`), driven by boto3's `redshift-data` client.

AWS documents 100 KB per SQL text and at most 40 texts a batch (the model's
SqlList), not whether a batch's texts also count together. "total" (the
default) refuses a batch over 100 KB in all; "per_text" takes 40 texts of
100 KB each. A refusal has one shape either way: ValidationException,
"Cannot process query string larger than 100kB", as for one text too large.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.emulators.redshift_data import RedshiftDataEmulator, Settings
from tests.fixtures.redshift import (
    EMULATOR_SETTINGS,
    REDSHIFT_TARGET,
    alarm_after,
    make_redshift_data_client,
    start_emulator,
)
from tests.test_redshift_emulator import error_code, run_batch

TEST_TIME_LIMIT_S = 30
TOO_LARGE = "Cannot process query string larger than 100kB"
HEAD = "SELECT 1 -- "


@pytest.fixture(autouse=True)
def _time_limit() -> Iterator[None]:
    with alarm_after(TEST_TIME_LIMIT_S):
        yield


def text_of(size: int) -> str:
    """A statement of exactly ``size`` bytes of UTF-8."""
    return HEAD + "x" * (size - len(HEAD))


@pytest.fixture
def per_text() -> Iterator[RedshiftDataEmulator]:
    emu = start_emulator(dataclasses.replace(EMULATOR_SETTINGS, batch_limit="per_text"))
    try:
        yield emu
    finally:
        emu.close()
    assert not emu.crashes


def refused(client: Any, sqls: list[str]) -> ClientError:
    with pytest.raises(ClientError) as caught:
        client.batch_execute_statement(Sqls=sqls, **REDSHIFT_TARGET)
    assert error_code(caught) == "ValidationException"
    return caught.value


def test_the_default_is_total_and_other_values_are_refused() -> None:
    assert Settings().batch_limit == EMULATOR_SETTINGS.batch_limit == "total"
    assert Settings(batch_limit="per_text").batch_limit == "per_text"
    with pytest.raises(ValueError, match="batch_limit"):
        Settings(batch_limit="per_call")


def test_total_counts_the_texts_of_a_batch_together(redshift_data_client: Any) -> None:
    client = redshift_data_client
    assert run_batch(client, [text_of(50_000), text_of(50_000)])["Status"] == "FINISHED"
    too_large = refused(client, [text_of(50_000), text_of(50_001)])
    one_text = refused(client, [text_of(100_001)])
    assert TOO_LARGE in str(too_large) and TOO_LARGE in str(one_text)
    assert too_large.response["Error"]["Message"] == TOO_LARGE
    assert too_large.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_per_text_takes_40_texts_of_100_kb(per_text: RedshiftDataEmulator) -> None:
    client = make_redshift_data_client(per_text)
    described = run_batch(client, [text_of(100_000)] * 40)
    assert described["Status"] == "FINISHED"
    assert len(described["SubStatements"]) == 40
    assert per_text.calls["BatchExecuteStatement"] == 1


def test_per_text_still_limits_each_text_and_the_count(per_text: RedshiftDataEmulator) -> None:
    client = make_redshift_data_client(per_text)
    one_text = refused(client, [text_of(1_000), text_of(100_001)])
    assert one_text.response["Error"]["Message"] == TOO_LARGE
    assert "less than or equal to 40" in str(refused(client, [text_of(1_000)] * 41))
    with pytest.raises(ClientError) as single:
        client.execute_statement(Sql=text_of(100_001), **REDSHIFT_TARGET)
    assert TOO_LARGE in str(single.value)
    assert per_text.errors == {"ValidationException": 3}
