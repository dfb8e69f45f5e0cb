"""The emulator's outage knobs, seen by boto3 as a real client sees the service."""

from __future__ import annotations

import time
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.emulators.redshift_data import RedshiftDataEmulator
from tests.fixtures.redshift import REDSHIFT_TARGET
from tests.fixtures.redshift import wait_statement as wait_done


def test_unavailable_answers_503_to_every_call_until_it_is_back(
    redshift_emulator: RedshiftDataEmulator, redshift_data_client: Any
) -> None:
    redshift_emulator.set_unavailable(True)
    with pytest.raises(ClientError) as caught:
        redshift_data_client.execute_statement(Sql="SELECT 1", **REDSHIFT_TARGET)
    error = caught.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert error["Error"]["Code"] == "ServiceUnavailableException"
    redshift_emulator.set_unavailable(False)
    started = redshift_data_client.execute_statement(Sql="SELECT 1", **REDSHIFT_TARGET)
    assert wait_done(redshift_data_client, started["Id"])["Status"] == "FINISHED"


def test_a_statement_holding_a_needle_fails_with_its_text_and_changes_nothing(
    redshift_emulator: RedshiftDataEmulator, redshift_data_client: Any
) -> None:
    redshift_emulator.query("CREATE TABLE public.t (v VARCHAR)")
    redshift_emulator.fail_statements_containing("poison", "ERROR: XX000: something odd")
    batch = redshift_data_client.batch_execute_statement(
        Sqls=["INSERT INTO t VALUES ('fine')", "INSERT INTO t VALUES ('poison')"],
        **REDSHIFT_TARGET,
    )
    described = wait_done(redshift_data_client, batch["Id"])
    assert described["Status"] == "FAILED"
    assert "XX000: something odd" in described["Error"]
    assert redshift_emulator.query("SELECT count(*) FROM t") == [(0,)]  # all or nothing
    redshift_emulator.fail_statements_containing("poison", None)
    again = redshift_data_client.execute_statement(
        Sql="INSERT INTO t VALUES ('poison')", **REDSHIFT_TARGET
    )
    assert wait_done(redshift_data_client, again["Id"])["Status"] == "FINISHED"


def test_a_slow_cancel_answers_late_and_then_aborts(
    redshift_emulator: RedshiftDataEmulator, redshift_data_client: Any
) -> None:
    redshift_emulator.hang_next_statements(1)
    redshift_emulator.set_cancel_delay(0.5)
    started = redshift_data_client.execute_statement(Sql="SELECT 1", **REDSHIFT_TARGET)
    before = time.monotonic()
    answer = redshift_data_client.cancel_statement(Id=started["Id"])
    assert time.monotonic() - before >= 0.5
    assert answer["Status"] is True
    assert wait_done(redshift_data_client, started["Id"])["Status"] == "ABORTED"
