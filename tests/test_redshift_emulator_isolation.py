"""Concurrency in the Redshift Data API emulator, both isolation levels, driven by
boto3's `redshift-data` client: SNAPSHOT lets two check-then-insert transactions
both commit, SERIALIZABLE fails the later one with error 1023, `LOCK` serializes
them under either level and blocks readers, and the snapshot is taken at the
first statement other than LOCK.

Overlap is made certain with the emulator's latency, which each statement spends
inside its open transaction; every wait is bounded (wait_statement's timeout, the alarm)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.emulators.redshift_data import RedshiftDataEmulator, Settings
from tests.fixtures.redshift import (
    EMULATOR_SETTINGS,
    REDSHIFT_TARGET,
    alarm_after,
    checked,
    make_redshift_data_client,
    start_emulator,
)
from tests.fixtures.redshift import wait_statement as wait

TEST_TIME_LIMIT_S = 15
LATENCY_S = 0.15  # per statement, spent inside the transaction
CONFLICT = "ERROR: 1023 DETAIL: Serializable isolation violation on table"

CHECK_THEN_INSERT = [
    "CREATE TEMP TABLE s (id VARCHAR(8))",
    "INSERT INTO s VALUES ('k')",
    "INSERT INTO t SELECT id FROM s WHERE NOT EXISTS (SELECT 1 FROM t WHERE t.id = s.id)",
]
BOTH_LEVELS = pytest.mark.parametrize("emu", ["snapshot", "serializable"], indirect=True)


@pytest.fixture(autouse=True)
def _time_limit() -> Iterator[None]:
    """Bound every test: SIGALRM interrupts even a blocked socket read."""
    with alarm_after(TEST_TIME_LIMIT_S):
        yield


@pytest.fixture
def emu(request: pytest.FixtureRequest) -> Iterator[RedshiftDataEmulator]:
    """An emulator at the isolation level given by indirect parametrization
    (the default, SNAPSHOT, otherwise)."""
    isolation = str(getattr(request, "param", "snapshot"))
    yield from checked(start_emulator(dataclasses.replace(EMULATOR_SETTINGS, isolation=isolation)))


@pytest.fixture
def client(emu: RedshiftDataEmulator) -> Any:
    return make_redshift_data_client(emu)


# -- helpers ---------------------------------------------------------------------


def submit(client: Any, sqls: list[str], **target: str) -> str:
    submitted = client.batch_execute_statement(Sqls=sqls, **{**REDSHIFT_TARGET, **target})
    return str(submitted["Id"])


def status(client: Any, statement_id: str) -> str:
    return str(client.describe_statement(Id=statement_id)["Status"])


def run_ok(client: Any, *sqls: str) -> dict[str, Any]:
    described = wait(client, submit(client, list(sqls)))
    assert described["Status"] == "FINISHED", described.get("Error")
    return described


def select(client: Any, sql: str, **kwargs: Any) -> list[list[Any]]:
    submitted = client.execute_statement(Sql=sql, **REDSHIFT_TARGET, **kwargs)
    described = wait(client, submitted["Id"])
    assert described["Status"] == "FINISHED", described.get("Error")
    records = client.get_statement_result(Id=submitted["Id"])["Records"]
    return [[next(iter(field.values())) for field in record] for record in records]


def ids_in_t(client: Any) -> list[str]:
    return [row[0] for row in select(client, "SELECT id FROM t ORDER BY id")]


def holding(client: Any, sqls: list[str]) -> str:
    """Submit `sqls` (a LOCK first) and return once its LOCK has been granted."""
    statement_id = submit(client, sqls)
    wait(client, f"{statement_id}:1", ("FINISHED",))  # a step ends after its latency
    return statement_id


# -- the isolation levels ------------------------------------------------------------------


def test_isolation_is_snapshot_unless_set() -> None:
    assert Settings().isolation == "snapshot"
    assert Settings(isolation="serializable").isolation == "serializable"
    with pytest.raises(ValueError, match="isolation"):
        Settings(isolation="read committed")


def test_snapshot_lets_two_check_then_inserts_both_commit(
    emu: RedshiftDataEmulator, client: Any
) -> None:
    run_ok(client, "CREATE TABLE t (id VARCHAR(8))")
    emu.set_latency(LATENCY_S)  # both take their snapshot before either commits
    loads = [submit(client, CHECK_THEN_INSERT) for _ in range(2)]
    assert [wait(client, load)["Status"] for load in loads] == ["FINISHED", "FINISHED"]
    assert ids_in_t(client) == ["k", "k"]  # PRIMARY KEY or not, a duplicate


@pytest.mark.parametrize("emu", ["serializable"], indirect=True)
def test_serializable_fails_the_later_check_then_insert(
    emu: RedshiftDataEmulator, client: Any
) -> None:
    run_ok(client, "CREATE TABLE t (id VARCHAR(8))")
    emu.set_latency(LATENCY_S)
    loads = [submit(client, CHECK_THEN_INSERT) for _ in range(2)]
    described = sorted((wait(client, load) for load in loads), key=lambda d: str(d["Status"]))
    assert [d["Status"] for d in described] == ["FAILED", "FINISHED"]
    assert described[0]["Error"].startswith(f"Query #3 failed with {CONFLICT} - ")
    assert "(public.t)" in described[0]["Error"]
    assert ids_in_t(client) == ["k"]


@BOTH_LEVELS
def test_lock_first_serializes_check_then_inserts(emu: RedshiftDataEmulator, client: Any) -> None:
    run_ok(client, "CREATE TABLE t (id VARCHAR(8))", "CREATE TABLE lk (held_by VARCHAR(8))")
    emu.set_latency(LATENCY_S)
    loads = [submit(client, ["LOCK lk", *CHECK_THEN_INSERT]) for _ in range(2)]
    described = [wait(client, load) for load in loads]
    assert [d["Status"] for d in described] == ["FINISHED", "FINISHED"]
    assert ids_in_t(client) == ["k"]
    # The second load's snapshot was taken after the first committed: it saw the row.
    inserted = {d["SubStatements"][3]["ResultRows"]: d for d in described}
    first, second = inserted[1], inserted[0]
    assert second["SubStatements"][0]["UpdatedAt"] >= first["UpdatedAt"]


@pytest.mark.parametrize(
    ("first", "sees_later_commit"),
    [
        ("LOCK filler", True),
        ("CREATE TEMP TABLE s (x INT)", False),
        ("SELECT count(*) FROM other", False),
        ("INSERT INTO other VALUES (1)", False),
    ],
)
def test_snapshot_is_taken_at_the_first_statement_but_lock(
    emu: RedshiftDataEmulator, client: Any, first: str, sees_later_commit: bool
) -> None:
    run_ok(
        client,
        "CREATE TABLE t (id VARCHAR(8))",
        "CREATE TABLE other (x INT)",
        "CREATE TABLE filler (x INT)",
    )
    emu.set_latency(LATENCY_S)
    # The reader runs `first` at once and counts t's rows 3 latencies later; the
    # writer, submitted once the reader has started, commits after 1 latency. The
    # fillers between take no snapshot (LOCK) or read no table (SELECT 1: in DuckDB
    # it would not take one either).
    filler = "LOCK filler" if sees_later_commit else "SELECT 1"
    reader = submit(client, [first, filler, filler, "SELECT count(*) FROM t"])
    wait(client, f"{reader}:1", ("STARTED", "FINISHED"))
    writer = submit(client, ["INSERT INTO t VALUES ('w')"])
    assert wait(client, writer)["Status"] == "FINISHED"
    assert wait(client, reader)["Status"] == "FINISHED"
    counted = client.get_statement_result(Id=f"{reader}:4")["Records"]
    assert counted == [[{"longValue": 1 if sees_later_commit else 0}]]


def test_snapshot_fails_the_later_writer_of_the_same_rows(
    emu: RedshiftDataEmulator, client: Any
) -> None:
    run_ok(client, "CREATE TABLE t (id VARCHAR(8))", "INSERT INTO t VALUES ('a'), ('b')")
    emu.set_latency(LATENCY_S)
    same = [submit(client, ["DELETE FROM t WHERE id = 'a'", "SELECT 1"]) for _ in range(2)]
    described = sorted((wait(client, s) for s in same), key=lambda d: str(d["Status"]))
    assert [d["Status"] for d in described] == ["FAILED", "FINISHED"]
    assert described[0]["Error"].startswith(f"Query #1 failed with {CONFLICT} - ")
    different = [
        submit(client, ["DELETE FROM t WHERE id = 'b'", "SELECT 1"]),
        submit(client, ["INSERT INTO t VALUES ('c')", "UPDATE t SET id = 'd' WHERE id = 'c'"]),
    ]
    assert [wait(client, s)["Status"] for s in different] == ["FINISHED", "FINISHED"]
    assert ids_in_t(client) == ["d"]


# -- LOCK ------------------------------------------------------------------------------------


def test_lock_blocks_reads_and_writes_of_the_table_until_commit(
    emu: RedshiftDataEmulator, client: Any
) -> None:
    run_ok(client, "CREATE TABLE lk (id VARCHAR(8))", "CREATE TABLE other (id VARCHAR(8))")
    emu.set_latency(LATENCY_S)
    holder = holding(client, ["LOCK lk", "INSERT INTO lk VALUES ('held')", *["SELECT 1"] * 6])
    blocked_read = submit(client, ["SELECT count(*) FROM public.lk"])
    blocked_write = submit(client, ["INSERT INTO \"LK\" VALUES ('w')"])
    other_read = submit(client, ["SELECT count(*) FROM other"])
    # A temp table of the same name is the session's own: not the locked one.
    temp_read = submit(
        client,
        [
            "CREATE TEMP TABLE lk (id VARCHAR(8))",
            "INSERT INTO lk VALUES ('mine')",
            "SELECT count(*) FROM lk",
        ],
    )
    assert wait(client, other_read)["Status"] == "FINISHED"
    assert wait(client, temp_read)["Status"] == "FINISHED"
    assert status(client, holder) == "STARTED"
    assert status(client, blocked_read) == status(client, blocked_write) == "STARTED"
    held = wait(client, holder)
    read = wait(client, blocked_read)
    assert held["Status"] == read["Status"] == "FINISHED"
    assert wait(client, blocked_write)["Status"] == "FINISHED"
    assert read["UpdatedAt"] > held["UpdatedAt"]
    # Its snapshot was taken after the holder committed.
    assert client.get_statement_result(Id=f"{blocked_read}:1")["Records"] == [[{"longValue": 1}]]


def test_lock_waits_for_transactions_that_read_the_table(
    emu: RedshiftDataEmulator, client: Any
) -> None:
    run_ok(client, "CREATE TABLE lk (id VARCHAR(8))")
    emu.set_latency(LATENCY_S)
    reader = submit(client, ["SELECT count(*) FROM lk", *["SELECT 1"] * 3])
    wait(client, f"{reader}:1", ("FINISHED",))
    locker = submit(client, ["LOCK lk"])
    read = wait(client, reader)
    locked = wait(client, locker)
    assert read["Status"] == locked["Status"] == "FINISHED"
    # Granted only when the reader's transaction ended (else it would have ended first).
    assert locked["UpdatedAt"] > read["UpdatedAt"]


def test_a_lock_wait_can_be_cancelled(emu: RedshiftDataEmulator, client: Any) -> None:
    run_ok(client, "CREATE TABLE lk (id VARCHAR(8))")
    emu.set_latency(LATENCY_S)
    holder = holding(client, ["LOCK lk", *["SELECT 1"] * 7])
    waiter = submit(client, ["LOCK lk", "SELECT 1"])
    wait(client, waiter, ("STARTED",))
    assert client.cancel_statement(Id=waiter)["Status"] is True
    assert status(client, waiter) == "ABORTED"
    assert status(client, holder) == "STARTED"  # the cancel did not wait for the lock
    assert wait(client, holder)["Status"] == "FINISHED"
    run_ok(client, "LOCK lk")  # nothing left behind


def test_deadlocks_are_detected(emu: RedshiftDataEmulator, client: Any) -> None:
    run_ok(client, "CREATE TABLE a (x INT)", "CREATE TABLE b (x INT)")
    emu.set_latency(LATENCY_S)  # each holds its first table when it asks for the second
    pair = [submit(client, ["LOCK a", "LOCK b"]), submit(client, ["LOCK TABLE b", "LOCK a"])]
    described = sorted((wait(client, s) for s in pair), key=lambda d: str(d["Status"]))
    assert [d["Status"] for d in described] == ["FAILED", "FINISHED"]
    assert "ERROR: deadlock detected" in described[0]["Error"]


@pytest.mark.parametrize(
    ("sql", "error"),
    [
        ("LOCK nosuch", 'ERROR: relation "nosuch" does not exist'),
        ("LOCK TABLE lk, public.nosuch", 'ERROR: relation "public.nosuch" does not exist'),
        ("LOCK v", 'ERROR: "v" is not a table'),
        ("LOCK lk IN EXCLUSIVE MODE", 'ERROR: syntax error at or near "IN"'),
        ("LOCK", "ERROR: syntax error"),
    ],
)
def test_lock_needs_existing_tables(client: Any, sql: str, error: str) -> None:
    run_ok(client, "CREATE TABLE lk (id VARCHAR(8))", "CREATE VIEW v AS SELECT 1 AS one")
    run_ok(client, 'LOCK TABLE "LK", public.lk, dev.public.LK')
    described = wait(client, submit(client, [sql]))
    assert described["Status"] == "FAILED"
    assert described["Error"].startswith(f"Query #1 failed with {error}")


# -- STV_DB_ISOLATION_LEVEL, the process flag ----------------------------------------------


@pytest.mark.parametrize(
    ("emu", "level"),
    [("snapshot", "Snapshot Isolation"), ("serializable", "Serializable")],
    indirect=["emu"],
)
def test_stv_db_isolation_level(client: Any, level: str) -> None:
    assert select(client, "SELECT db_name, isolation_level FROM stv_db_isolation_level") == [
        [REDSHIFT_TARGET["Database"], level]
    ]
    by_name = (
        "SELECT isolation_level FROM pg_catalog.STV_DB_ISOLATION_LEVEL WHERE db_name = :database"
    )
    parameters = [{"name": "database", "value": "analytics"}]
    elsewhere = {**REDSHIFT_TARGET, "Database": "analytics"}
    submitted = client.execute_statement(Sql=by_name, Parameters=parameters, **elsewhere)
    assert wait(client, submitted["Id"])["Status"] == "FINISHED"
    records = client.get_statement_result(Id=submitted["Id"])["Records"]
    assert records == [[{"stringValue": level}]]


def test_isolation_flag_of_the_process() -> None:
    command = [sys.executable, "-m", "tests.emulators.redshift_data", "--port", "0"]
    command += ["--access-key", EMULATOR_SETTINGS.access_key]
    command += ["--secret-key", EMULATOR_SETTINGS.secret_key, "--isolation", "serializable"]
    root = Path(__file__).resolve().parent.parent
    process = subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        client = make_redshift_data_client(process.stdout.readline().strip())
        level = select(client, "SELECT isolation_level FROM stv_db_isolation_level")
        assert level == [["Serializable"]]
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
        if process.stdout is not None:
            process.stdout.close()


# -- a cancel that comes too late ---------------------------------------------------------------


def test_a_cancel_can_lose_the_race_and_the_statement_commits(
    emu: RedshiftDataEmulator, client: Any
) -> None:
    run_ok(client, "CREATE TABLE t (id VARCHAR(8))")
    emu.set_latency(LATENCY_S)
    emu.set_cancel_loses_race(True)
    late = submit(client, ["INSERT INTO t VALUES ('late')", "SELECT 1"])
    wait(client, late, ("STARTED",))
    assert client.cancel_statement(Id=late)["Status"] is False
    assert wait(client, late)["Status"] == "FINISHED"
    assert ids_in_t(client) == ["late"]
    with pytest.raises(ClientError) as finished:
        client.cancel_statement(Id=late)
    assert finished.value.response["Error"]["Code"] == "ValidationException"
    assert "already in FINISHED state" in finished.value.response["Error"]["Message"]
    emu.set_cancel_loses_race(False)
    emu.hang_next_statements(1)
    hanging = submit(client, ["SELECT 1"])
    wait(client, hanging, ("STARTED",))
    assert client.cancel_statement(Id=hanging)["Status"] is True
