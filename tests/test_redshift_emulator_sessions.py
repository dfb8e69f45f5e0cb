"""Long polling (WaitTimeSeconds) and sessions (SessionKeepAliveSeconds, SessionId)
in the Redshift Data API emulator, driven by boto3's `redshift-data` client as a
real client drives the service.

Slow statements are made with the emulator's latency; every wait is bounded
(WaitTimeSeconds, POLL_TIMEOUT_S, the alarm), and the keep-alives that must run
out are the smallest the API allows (1 s)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.emulators.redshift.database import Database
from tests.emulators.redshift.errors import ApiError
from tests.emulators.redshift.sessions import NOT_AVAILABLE, SessionStore
from tests.emulators.redshift.statements import Statement, Target
from tests.emulators.redshift_data import TEST_CLUSTER, RedshiftDataEmulator
from tests.fixtures.redshift import (
    REDSHIFT_TARGET,
    alarm_after,
    checked,
    make_redshift_data_client,
    start_emulator,
)
from tests.fixtures.redshift import wait_statement as wait

TEST_TIME_LIMIT_S = 20
POLL_TIMEOUT_S = 10.0
WAIT_S = 10  # WaitTimeSeconds of calls expected to end well within it
SLOW_S = 2.0  # latency of a statement that outlasts a 1 s wait
BRIEF_S = 0.5  # latency of a statement that is still running when the next call comes
QUICK_S = 0.5  # an answer that does not wait takes less than this
EXPIRY_MARGIN_S = 0.5  # slept past a 1 s keep-alive


@pytest.fixture(autouse=True)
def _time_limit() -> Iterator[None]:
    """Bound every test: SIGALRM interrupts even a blocked socket read."""
    with alarm_after(TEST_TIME_LIMIT_S):
        yield


@pytest.fixture
def emu() -> Iterator[RedshiftDataEmulator]:
    yield from checked(start_emulator())


@pytest.fixture
def client(emu: RedshiftDataEmulator) -> Any:
    return make_redshift_data_client(emu)


@pytest.fixture
def raw_client(emu: RedshiftDataEmulator) -> Any:
    """A client that skips botocore's own validation: the emulator must refuse."""
    return make_redshift_data_client(emu, parameter_validation=False)


# -- helpers ---------------------------------------------------------------------


def refused(caught: pytest.ExceptionInfo[ClientError]) -> tuple[str, str]:
    error = caught.value.response["Error"]
    return str(error["Code"]), str(error["Message"])


def rows(client: Any, statement_id: str) -> list[list[Any]]:
    records = client.get_statement_result(Id=statement_id)["Records"]
    return [[next(iter(field.values())) for field in record] for record in records]


def open_session(client: Any, sql: str, keep_alive_s: int = 60) -> dict[str, Any]:
    """Run `sql` in a new session (waiting for it); the answer carries SessionId."""
    opened: dict[str, Any] = client.execute_statement(
        Sql=sql, SessionKeepAliveSeconds=keep_alive_s, WaitTimeSeconds=WAIT_S, **REDSHIFT_TARGET
    )
    assert opened["Status"] == "FINISHED", client.describe_statement(Id=opened["Id"]).get("Error")
    return opened


def in_session(client: Any, session_id: str, sql: str, **kwargs: Any) -> dict[str, Any]:
    """Run `sql` in the session and wait for it to end."""
    answer: dict[str, Any] = client.execute_statement(
        Sql=sql, SessionId=session_id, WaitTimeSeconds=WAIT_S, **kwargs
    )
    assert answer["SessionId"] == session_id
    return answer


# -- long polling ------------------------------------------------------------------


def test_a_waited_call_answers_the_end_and_whether_there_is_a_result(client: Any) -> None:
    selected = client.execute_statement(
        Sql="SELECT 41 + 1", WaitTimeSeconds=WAIT_S, **REDSHIFT_TARGET
    )
    assert selected["Status"] == "FINISHED"
    assert selected["HasResultSet"] is True
    assert selected["RedshiftPid"] > 0
    assert selected["ClusterIdentifier"] == TEST_CLUSTER
    assert rows(client, selected["Id"]) == [[42]]  # no polling needed
    created = client.execute_statement(
        Sql="CREATE TABLE t (id INT)", WaitTimeSeconds=WAIT_S, **REDSHIFT_TARGET
    )
    assert (created["Status"], created["HasResultSet"]) == ("FINISHED", False)
    failed = client.execute_statement(
        Sql="SELECT * FROM missing", WaitTimeSeconds=WAIT_S, **REDSHIFT_TARGET
    )
    assert (failed["Status"], failed["HasResultSet"]) == ("FAILED", False)


def test_a_waited_batch_answers_for_the_whole_batch(client: Any) -> None:
    batch = client.batch_execute_statement(
        Sqls=["CREATE TEMP TABLE s (id INT)", "INSERT INTO s VALUES (7)", "SELECT id FROM s"],
        WaitTimeSeconds=WAIT_S,
        **REDSHIFT_TARGET,
    )
    assert (batch["Status"], batch["HasResultSet"]) == ("FINISHED", True)
    assert rows(client, f"{batch['Id']}:3") == [[7]]


def test_a_slow_statement_answers_its_current_status_after_the_wait(
    emu: RedshiftDataEmulator, client: Any
) -> None:
    emu.set_latency(SLOW_S)
    started_s = time.monotonic()
    answer = client.execute_statement(Sql="SELECT 1", WaitTimeSeconds=1, **REDSHIFT_TARGET)
    assert 1.0 <= time.monotonic() - started_s < SLOW_S
    assert answer["Status"] == "STARTED"
    assert "HasResultSet" not in answer  # not known before the statement ends
    assert answer["RedshiftPid"] > 0
    described = client.describe_statement(Id=answer["Id"], WaitTimeSeconds=WAIT_S)
    assert described["Status"] == "FINISHED"  # DescribeStatement long-polls too
    assert time.monotonic() - started_s < WAIT_S  # answered at the end, not the wait's


def test_without_wait_time_the_answer_is_at_once_and_has_no_status(
    emu: RedshiftDataEmulator, client: Any
) -> None:
    emu.set_latency(SLOW_S)
    started_s = time.monotonic()
    answer = client.execute_statement(Sql="SELECT 1", **REDSHIFT_TARGET)
    assert time.monotonic() - started_s < QUICK_S
    assert not {"Status", "HasResultSet", "RedshiftPid", "SessionId"} & set(answer)


def test_a_long_poll_does_not_hold_up_other_requests(
    emu: RedshiftDataEmulator, client: Any
) -> None:
    emu.set_latency(SLOW_S)
    waited: list[dict[str, Any]] = []
    polling = make_redshift_data_client(emu)  # made here: boto3 makes clients unsafely in threads
    poller = threading.Thread(
        target=lambda: waited.append(
            polling.execute_statement(Sql="SELECT 1", WaitTimeSeconds=WAIT_S, **REDSHIFT_TARGET)
        )
    )
    poller.start()
    deadline = time.monotonic() + POLL_TIMEOUT_S
    while not client.list_statements()["Statements"]:  # the poller's call is in
        assert time.monotonic() < deadline
        time.sleep(0.01)
    answered_s = time.monotonic()
    listed = client.list_statements()["Statements"]
    client.describe_statement(Id=listed[0]["Id"])
    assert time.monotonic() - answered_s < QUICK_S
    poller.join(POLL_TIMEOUT_S)
    assert [answer["Status"] for answer in waited] == ["FINISHED"]


def test_a_retry_with_the_same_client_token_waits_for_the_first_statement(
    emu: RedshiftDataEmulator, client: Any
) -> None:
    emu.set_latency(BRIEF_S)
    first = client.execute_statement(Sql="SELECT 1", ClientToken="retry-1", **REDSHIFT_TARGET)
    assert "Status" not in first
    retried = client.execute_statement(
        Sql="SELECT 1", ClientToken="retry-1", WaitTimeSeconds=WAIT_S, **REDSHIFT_TARGET
    )
    assert (retried["Id"], retried["Status"]) == (first["Id"], "FINISHED")
    assert len(client.list_statements()["Statements"]) == 1  # it ran once


def test_get_statement_result_waits_for_the_result(emu: RedshiftDataEmulator, client: Any) -> None:
    emu.set_latency(BRIEF_S)
    answer = client.execute_statement(Sql="SELECT 'late'", **REDSHIFT_TARGET)
    page = client.get_statement_result(Id=answer["Id"], WaitTimeSeconds=WAIT_S)
    assert [[next(iter(field.values())) for field in r] for r in page["Records"]] == [["late"]]


@pytest.mark.parametrize("wait_s", [0, 31])
@pytest.mark.parametrize(
    ("operation", "sql"),
    [
        ("execute_statement", {"Sql": "SELECT 1"}),
        ("batch_execute_statement", {"Sqls": ["SELECT 1"]}),
    ],
)
def test_wait_time_out_of_range_is_refused(
    raw_client: Any, wait_s: int, operation: str, sql: dict[str, Any]
) -> None:
    with pytest.raises(ClientError) as caught:
        getattr(raw_client, operation)(WaitTimeSeconds=wait_s, **sql, **REDSHIFT_TARGET)
    code, message = refused(caught)
    assert code == "ValidationException"
    assert "'waitTimeSeconds' failed to satisfy constraint" in message
    assert raw_client.list_statements()["Statements"] == []


# -- sessions ---------------------------------------------------------------------


def test_temp_tables_live_on_in_their_session(client: Any) -> None:
    opened = open_session(client, "CREATE TEMP TABLE stage (id INT)")
    session_id = opened["SessionId"]
    assert opened["ClusterIdentifier"] == TEST_CLUSTER
    in_session(client, session_id, "INSERT INTO stage VALUES (1), (2)")
    batch = client.batch_execute_statement(
        Sqls=["INSERT INTO stage VALUES (3)", "SELECT count(*) FROM stage"],
        SessionId=session_id,
        WaitTimeSeconds=WAIT_S,
    )
    assert (batch["Status"], batch["SessionId"]) == ("FINISHED", session_id)
    assert rows(client, f"{batch['Id']}:2") == [[3]]
    described = client.describe_statement(Id=batch["Id"])
    assert described["SessionId"] == session_id
    assert described["Database"] == REDSHIFT_TARGET["Database"]  # the session's target
    assert {item.get("SessionId") for item in client.list_statements()["Statements"]} == {
        session_id
    }
    elsewhere = client.execute_statement(
        Sql="SELECT count(*) FROM stage", WaitTimeSeconds=WAIT_S, **REDSHIFT_TARGET
    )
    assert elsewhere["Status"] == "FAILED"  # another connection: no such table
    other = client.execute_statement(
        Sql="SELECT count(*) FROM stage",
        SessionKeepAliveSeconds=60,
        WaitTimeSeconds=WAIT_S,
        **REDSHIFT_TARGET,
    )
    assert other["Status"] == "FAILED"
    assert other["SessionId"] != session_id


def test_each_call_in_a_session_is_its_own_transaction(client: Any) -> None:
    session_id = open_session(client, "CREATE TEMP TABLE stage (id INT)")["SessionId"]
    failed = client.batch_execute_statement(
        Sqls=[
            "INSERT INTO stage VALUES (1)",
            "CREATE TEMP TABLE other (id INT)",
            "SELECT * FROM missing",
        ],
        SessionId=session_id,
        WaitTimeSeconds=WAIT_S,
    )
    assert failed["Status"] == "FAILED"
    counted = in_session(client, session_id, "SELECT count(*) FROM stage")
    assert rows(client, counted["Id"]) == [[0]]  # rolled back with its batch
    assert in_session(client, session_id, "SELECT * FROM other")["Status"] == "FAILED"
    assert in_session(client, session_id, "CREATE TEMP TABLE other (id INT)")["Status"] == (
        "FINISHED"
    )


@pytest.mark.parametrize(
    "target",
    [
        {"ClusterIdentifier": TEST_CLUSTER},
        {"WorkgroupName": "wg1"},
        {"Database": "dev"},
        {"DbUser": "u"},
        {"SecretArn": "arn:aws:secretsmanager:us-east-1:1:secret:s"},
    ],
)
def test_a_call_in_a_session_names_no_target(client: Any, target: dict[str, str]) -> None:
    session_id = open_session(client, "SELECT 1")["SessionId"]
    with pytest.raises(ClientError) as caught:
        client.execute_statement(Sql="SELECT 1", SessionId=session_id, **target)
    code, message = refused(caught)
    assert code == "ValidationException"
    assert f"{next(iter(target))} cannot be given with SessionId" in message


def test_an_unknown_session_is_refused(client: Any) -> None:
    unknown = str(uuid.uuid4())
    with pytest.raises(ClientError) as caught:
        client.execute_statement(Sql="SELECT 1", SessionId=unknown)
    assert refused(caught) == ("ValidationException", f"Session with Id: {unknown} is invalid")


def test_a_busy_session_is_refused_until_its_statement_ends(
    emu: RedshiftDataEmulator, client: Any
) -> None:
    emu.hang_next_statements(1)
    opened = client.execute_statement(Sql="SELECT 1", SessionKeepAliveSeconds=60, **REDSHIFT_TARGET)
    session_id = opened["SessionId"]
    wait(client, opened["Id"], ("STARTED",))
    with pytest.raises(ClientError) as busy:
        client.execute_statement(Sql="SELECT 2", SessionId=session_id)
    assert refused(busy) == ("ValidationException", NOT_AVAILABLE)
    with pytest.raises(ClientError) as busy_batch:
        client.batch_execute_statement(Sqls=["SELECT 2"], SessionId=session_id)
    assert refused(busy_batch) == ("ValidationException", NOT_AVAILABLE)
    assert client.cancel_statement(Id=opened["Id"])["Status"] is True
    assert in_session(client, session_id, "SELECT 2")["Status"] == "FINISHED"


def test_a_retried_call_in_a_busy_session_answers_with_its_statement(
    emu: RedshiftDataEmulator, client: Any
) -> None:
    session_id = open_session(client, "SELECT 1")["SessionId"]
    emu.hang_next_statements(1)
    joined = client.execute_statement(Sql="SELECT 2", SessionId=session_id, ClientToken="t-1")
    wait(client, joined["Id"], ("STARTED",))
    retried = client.execute_statement(Sql="SELECT 2", SessionId=session_id, ClientToken="t-1")
    assert (retried["Id"], retried["SessionId"]) == (joined["Id"], session_id)
    with pytest.raises(ClientError) as busy:
        client.execute_statement(Sql="SELECT 2", SessionId=session_id, ClientToken="t-2")
    assert refused(busy) == ("ValidationException", NOT_AVAILABLE)
    client.cancel_statement(Id=joined["Id"])


def test_an_expired_session_is_closed_and_refused(emu: RedshiftDataEmulator, client: Any) -> None:
    session_id = open_session(client, "CREATE TEMP TABLE stage (id INT)", keep_alive_s=1)[
        "SessionId"
    ]
    assert emu.open_sessions() == 1
    time.sleep(1 + EXPIRY_MARGIN_S)
    with pytest.raises(ClientError) as caught:
        client.execute_statement(Sql="SELECT count(*) FROM stage", SessionId=session_id)
    assert refused(caught) == ("ValidationException", NOT_AVAILABLE)
    assert emu.open_sessions() == 0


def test_keep_alive_counts_from_the_end_of_the_last_statement_and_can_change(
    emu: RedshiftDataEmulator, client: Any
) -> None:
    emu.set_latency(1 + EXPIRY_MARGIN_S)  # runs longer than its keep-alive
    session_id = open_session(client, "SELECT 1", keep_alive_s=1)["SessionId"]
    emu.set_latency(0)
    in_session(client, session_id, "SELECT 2", SessionKeepAliveSeconds=60)  # still open
    time.sleep(1 + EXPIRY_MARGIN_S)
    assert in_session(client, session_id, "SELECT 3")["Status"] == "FINISHED"


def test_keep_alive_zero_closes_the_session_with_its_statement(
    emu: RedshiftDataEmulator, client: Any
) -> None:
    session_id = open_session(client, "SELECT 1", keep_alive_s=0)["SessionId"]
    time.sleep(0.01)  # past its end, by the clock the keep-alive counts on
    with pytest.raises(ClientError) as caught:
        client.execute_statement(Sql="SELECT 1", SessionId=session_id)
    assert refused(caught) == ("ValidationException", NOT_AVAILABLE)
    assert emu.open_sessions() == 0


def test_the_number_of_open_sessions_is_capped(emu: RedshiftDataEmulator, client: Any) -> None:
    emu.set_max_sessions(2)
    for _ in range(2):
        open_session(client, "SELECT 1")
    with pytest.raises(ClientError) as caught:
        client.execute_statement(Sql="SELECT 1", SessionKeepAliveSeconds=60, **REDSHIFT_TARGET)
    assert refused(caught)[0] == "ActiveSessionsExceededException"
    assert len(client.list_statements()["Statements"]) == 2  # the refused one never ran
    assert emu.open_sessions() == 2
    emu.reset()  # closes them all
    assert emu.open_sessions() == 0
    open_session(client, "SELECT 1")


@pytest.mark.parametrize(
    ("member", "value", "constraint"),
    [
        ("SessionKeepAliveSeconds", -1, "greater than or equal to 0"),
        ("SessionKeepAliveSeconds", 86_401, "less than or equal to 86400"),
        ("SessionId", "not-a-session", "regular expression pattern"),
    ],
)
def test_malformed_session_members_are_refused(
    raw_client: Any, member: str, value: object, constraint: str
) -> None:
    target = {} if member == "SessionId" else REDSHIFT_TARGET
    with pytest.raises(ClientError) as caught:
        raw_client.execute_statement(Sql="SELECT 1", **{member: value}, **target)
    code, message = refused(caught)
    assert code == "ValidationException"
    assert constraint in message


def test_a_session_closes_24_hours_after_it_opened_whatever_its_keep_alive() -> None:
    offset_s = [0.0]
    db = Database()
    store = SessionStore(db, clock=lambda: time.time() + offset_s[0])
    target = Target(cluster_identifier=TEST_CLUSTER, database="dev")

    def build(where: Target) -> Statement:
        now = time.time()
        return Statement(
            id="s",
            steps=[],
            is_batch=False,
            target=where,
            name=None,
            parameters=None,
            created_at=now,
            updated_at=now,
        )

    statement = store.new_statement(None, 86_400, target, build)
    assert statement.session is not None
    statement.done.set()
    statement.updated_at = time.time() + 86_000  # its last statement ended late
    offset_s[0] = 86_000
    assert store.open_count() == 1
    offset_s[0] = 86_401
    assert store.open_count() == 0
    with pytest.raises(ApiError, match=NOT_AVAILABLE):
        store.new_statement(statement.session.id, None, None, build)
    db.close()
