"""The Redshift warehouse with S3 staging: what goes inline, what through S3, and
what a failure means for the rows.

S3 is moto (real PUTs and DELETEs); the Data API is a scripted fake on the same
AwsClient, which reads each COPY's object from moto the moment the COPY runs,
as Redshift would. (COPY on the Redshift emulator is tested with it.)
"""

from __future__ import annotations

import gzip
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import msgspec
import pytest
import trio

from afpipe.aws import AwsClient, CredentialCache, RetryPolicy, static_credentials
from afpipe.aws.s3 import S3Client
from afpipe.aws.s3_api import S3Endpoint
from afpipe.aws.service import redshift_data_service
from afpipe.errors import TransientError
from afpipe.event import Event
from afpipe.warehouse.redshift import RedshiftWarehouse, Stager, Staging, Target, copy, sql
from afpipe.warehouse.redshift.errors import CopySourceError
from tests.events import from_payload
from tests.fixtures.moto import FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY, MOTO_REGION
from tests.fixtures.s3 import s3_keys

DATA_API = redshift_data_service(
    MOTO_REGION, {"AWS_ENDPOINT_URL_REDSHIFT_DATA": "https://redshift-data.test"}
)
TARGET = Target(cluster_identifier="c", database="dev", db_user="u")
ROLE = "arn:aws:iam::123456789012:role/redshift-copy"
LOAD_ERROR = (
    "ERROR: Load into table 'afpipe_stage' failed. "
    "Check 'sys_load_error_detail' system table for details."
)
_INLINE_ID = re.compile(r"\('([0-9a-f]{64})',")
_COPY_SOURCE = re.compile(r" FROM 's3://([^/']+)/([^']+)' IAM_ROLE ")


def event(n: int, *, pad: int = 1200, **fields: Any) -> Event:
    payload = {"event_name": "af_purchase", "app_id": "app", "n": n, "pad": "x" * pad}
    payload["event_time"] = f"2024-03-02 12:{n // 60 % 60:02d}:{n % 60:02d}.123"
    return from_payload({**payload, **fields})


class Transaction(msgspec.Struct):
    """One call: a stage (CREATE or DELETE, then INSERTs or a COPY) or a merge
    (LOCK, then the INSERT ... SELECT from the stage) of a session."""

    sqls: list[str]
    ids: list[str]  # a stage's rows (VALUES ids, or the object's lines); a merge's: the stage's
    staged_key: str = ""  # the object a COPY read (for a merge: the one its stage read)
    session: str = ""

    @property
    def copied(self) -> bool:
        return bool(self.staged_key)

    @property
    def merge(self) -> bool:
        return self.sqls[0].startswith("LOCK ")


class FakeDataApi:
    """BatchExecuteStatement and DescribeStatement, scripted, with sessions as the
    Data API has them: a call with SessionKeepAliveSeconds opens one, later calls
    name it by SessionId (and no target), its stage outlives a call. ``outcome(txn)``
    is the error a call fails with (changing nothing), or None: it commits."""

    def __init__(self, boto_s3: Any) -> None:
        self.boto_s3 = boto_s3
        self.transactions: list[Transaction] = []
        self.outcome: Callable[[Transaction], str | None] = lambda txn: None
        self._answers: dict[str, dict[str, Any]] = {}
        self._stages: dict[str, Transaction] = {}  # by session: what its stage holds

    @property
    def merges(self) -> list[Transaction]:
        return [txn for txn in self.transactions if txn.merge]

    @property
    def stages(self) -> list[Transaction]:
        return [txn for txn in self.transactions if not txn.merge]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        operation = request.headers["X-Amz-Target"].removeprefix("RedshiftData.")
        body = json.loads(request.content)
        if operation == "DescribeStatement":
            return httpx.Response(200, json={"Id": body["Id"], **self._answers[body["Id"]]})
        assert operation == "BatchExecuteStatement", operation
        session = self._session(body)
        txn = self._transaction(body["Sqls"], session)
        self.transactions.append(txn)
        statement_id = f"stmt-{len(self.transactions)}"
        error = self.outcome(txn)
        if error is None:
            subs: list[dict[str, Any]] = [
                {"Id": f"{statement_id}:{i}", "Status": "FINISHED"} for i in range(len(txn.sqls))
            ]
            subs[-1]["ResultRows"] = len(txn.ids)
            self._answers[statement_id] = {"Status": "FINISHED", "SubStatements": subs}
            if not txn.merge:
                self._stages[session] = txn
        else:
            self._answers[statement_id] = {"Status": "FAILED", "Error": error}
        answer = {"Id": statement_id, "SessionId": session}
        if "WaitTimeSeconds" in body:  # a held submit answers the status it waited for
            answer["Status"] = self._answers[statement_id]["Status"]
        return httpx.Response(200, json=answer)

    def _session(self, body: dict[str, Any]) -> str:
        if "SessionId" in body:
            assert "ClusterIdentifier" not in body and "Database" not in body
            assert body["SessionId"] in self._stages or body["SessionId"].startswith("s-")
            return str(body["SessionId"])
        assert body["SessionKeepAliveSeconds"] >= 1  # afpipe loads only in sessions
        return f"s-{len(self.transactions) + 1}"

    def _transaction(self, sqls: list[str], session: str) -> Transaction:
        if sqls[0].startswith("LOCK "):
            stage = self._stages[session]  # a merge of a session that staged nothing: a bug
            return Transaction(sqls, stage.ids, stage.staged_key, session)
        kept = [] if sqls[0].startswith(("CREATE", "DELETE")) else self._stages[session].ids
        copies = [text for text in sqls if text.startswith("COPY ")]
        if not copies:
            ids = [i for text in sqls for i in _INLINE_ID.findall(text)]
            return Transaction(sqls, kept + ids, "", session)
        source = _COPY_SOURCE.search(copies[0])
        assert source is not None, copies[0]
        bucket, key = source.groups()
        data = self.boto_s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        lines = gzip.decompress(data).split(b"\n")[:-1]
        return Transaction(sqls, kept + [json.loads(line)["id"] for line in lines], key, session)


class Router(httpx.AsyncBaseTransport):
    """The fake Data API for its host, the network (moto) for everything else."""

    def __init__(self, fake: FakeDataApi) -> None:
        self.fake = httpx.MockTransport(fake)
        self.network = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "redshift-data.test":
            return await self.fake.handle_async_request(request)
        return await self.network.handle_async_request(request)

    async def aclose(self) -> None:
        await self.network.aclose()


@pytest.fixture
def fake_api(boto_s3: Any) -> FakeDataApi:
    return FakeDataApi(boto_s3)


@pytest.fixture
async def aws(fake_api: FakeDataApi) -> AsyncIterator[AwsClient]:
    async with AwsClient(
        credentials=CredentialCache(static_credentials(FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY)),
        policy=RetryPolicy(base_delay_s=0.01, max_delay_s=0.1),
        transport=Router(fake_api),
    ) as client:
        yield client


def warehouse(
    aws: AwsClient, endpoint: S3Endpoint, bucket: str, *, staged: bool = True
) -> RedshiftWarehouse:
    staging = Staging(bucket=bucket, prefix="loads/", iam_role=ROLE, region=MOTO_REGION)
    stager = Stager(S3Client(aws, endpoint), staging) if staged else None
    # The fake takes calls of any size: fix the total limit (100 KB a call) rather than
    # learn it (test_redshift_batch_limits), so what goes inline is as the tests say.
    limits = sql.TOTAL_LIMITS
    return RedshiftWarehouse(
        aws, DATA_API, TARGET, "appsflyer_events", max_wait_s=100, stager=stager, limits=limits
    )


async def test_a_batch_that_fits_one_transaction_stays_inline(
    aws: AwsClient, fake_api: FakeDataApi, moto_s3_endpoint: S3Endpoint, s3_bucket: str
) -> None:
    events = [event(n) for n in range(20)]
    with trio.fail_after(30):
        result = await warehouse(aws, moto_s3_endpoint, s3_bucket).load(events)
    assert (result.loaded, result.rejected) == (20, [])
    stage, merge = fake_api.transactions
    assert not merge.copied and merge.ids == [e.id for e in events]
    kinds = [text.split(" ", 2)[:2] for text in stage.sqls]
    assert kinds == [["CREATE", "TEMP"], ["INSERT", "INTO"]]


async def test_a_larger_batch_is_staged_by_one_copy_and_its_object_is_deleted(
    aws: AwsClient,
    fake_api: FakeDataApi,
    boto_s3: Any,
    moto_s3_endpoint: S3Endpoint,
    s3_bucket: str,
) -> None:
    events = [event(n) for n in range(300)]  # ~400 KB of SQL inline: 5 texts
    with trio.fail_after(30):
        result = await warehouse(aws, moto_s3_endpoint, s3_bucket).load(events)
    assert (result.loaded, result.rejected) == (300, [])
    stage, merge = fake_api.transactions
    assert merge.ids == [e.id for e in events] and merge.session == stage.session
    assert re.fullmatch(r"loads/\d{4}/\d\d/\d\d/\d\d/[0-9a-f-]{36}\.json\.gz", stage.staged_key)
    assert [text.split(" ", 2)[:2] for text in stage.sqls] == [
        ["CREATE", "TEMP"],
        ["COPY", "afpipe_stage"],
    ]
    assert [text.split(" ", 2)[:2] for text in merge.sqls] == [
        ["LOCK", '"public"."afpipe_load_lock"'],
        ["INSERT", "INTO"],
    ]
    staging = Staging(bucket=s3_bucket, prefix="loads/", iam_role=ROLE, region=MOTO_REGION)
    assert stage.sqls[1] == copy.copy_sql(staging, stage.staged_key)
    assert s3_keys(boto_s3, s3_bucket) == set()


async def test_without_staging_the_same_batch_takes_several_inline_calls(
    aws: AwsClient, fake_api: FakeDataApi, moto_s3_endpoint: S3Endpoint, s3_bucket: str
) -> None:
    events = [event(n) for n in range(300)]
    plain = warehouse(aws, moto_s3_endpoint, s3_bucket, staged=False)
    with trio.fail_after(30):
        assert (await plain.load(events)).loaded == 300
    assert len(fake_api.stages) >= 4  # 100 KB a call (the fixed total limit)
    [merge] = fake_api.merges
    assert merge.ids == [e.id for e in events]
    assert not any(txn.copied for txn in fake_api.transactions)


async def test_a_row_too_large_for_inline_sql_loads_through_s3(
    aws: AwsClient, fake_api: FakeDataApi, moto_s3_endpoint: S3Endpoint, s3_bucket: str
) -> None:
    large = event(1, pad=150_000)
    plain = warehouse(aws, moto_s3_endpoint, s3_bucket, staged=False)
    with trio.fail_after(30):
        refused = await plain.load([large])
        assert fake_api.transactions == []
        staged = await warehouse(aws, moto_s3_endpoint, s3_bucket).load([large, event(2)])
    assert [r.reason.split(":")[0] for r in refused.rejected] == [
        "row too large for the Redshift Data API"
    ]
    assert (staged.loaded, staged.rejected) == (2, [])
    [merge] = fake_api.merges
    assert merge.copied and merge.ids == [large.id, event(2).id]


async def test_a_row_copy_rejects_is_isolated_with_redshifts_inline_reason(
    aws: AwsClient,
    fake_api: FakeDataApi,
    boto_s3: Any,
    moto_s3_endpoint: S3Endpoint,
    s3_bucket: str,
) -> None:
    events = [event(n) for n in range(300)]
    poison = events[137].id

    def outcome(txn: Transaction) -> str | None:
        if poison not in txn.ids:
            return None
        return LOAD_ERROR if txn.copied else "invalid input syntax for type super: poison"

    fake_api.outcome = outcome
    with trio.fail_after(60):
        result = await warehouse(aws, moto_s3_endpoint, s3_bucket).load(events)
    assert result.loaded == 299
    assert [(r.event.id, r.reason) for r in result.rejected] == [
        (poison, "invalid input syntax for type super: poison")
    ]
    failing = [txn for txn in fake_api.transactions if poison in txn.ids]
    assert failing[0].copied and not failing[-1].copied  # COPY, then bisected down to inline
    assert len(failing[-1].ids) == 1
    assert not any(txn.merge for txn in failing)  # a failed stage is never merged
    assert s3_keys(boto_s3, s3_bucket) == set()  # every staged object deleted


@pytest.mark.parametrize(
    "error",
    [
        "S3ServiceException:Access Denied,Status 403,Error AccessDenied",
        "User arn:aws:redshift:us-east-1:1:dbuser:c/u is not authorized to assume IAM Role x",
        "The specified S3 prefix 'loads/x.json.gz' does not exist",
    ],
)
async def test_a_copy_that_cannot_read_the_object_keeps_the_batch_queued(
    aws: AwsClient,
    fake_api: FakeDataApi,
    boto_s3: Any,
    moto_s3_endpoint: S3Endpoint,
    s3_bucket: str,
    error: str,
) -> None:
    fake_api.outcome = lambda txn: error
    events = [event(n) for n in range(300)]
    with trio.fail_after(30), pytest.raises(CopySourceError):
        await warehouse(aws, moto_s3_endpoint, s3_bucket).load(events)
    assert len(fake_api.transactions) == 1  # no bisection: no row is at fault
    assert s3_keys(boto_s3, s3_bucket) == set()


async def test_a_put_s3_refuses_keeps_the_batch_queued(
    aws: AwsClient, fake_api: FakeDataApi, moto_s3_endpoint: S3Endpoint
) -> None:
    missing = warehouse(aws, moto_s3_endpoint, "afpipe-no-such-bucket-here")
    with trio.fail_after(30), pytest.raises(TransientError) as caught:
        await missing.load([event(n) for n in range(300)])
    assert caught.value.code == "NoSuchBucket"
    assert fake_api.transactions == []


async def test_a_conflict_retries_the_merge_alone_in_its_session(
    aws: AwsClient,
    fake_api: FakeDataApi,
    boto_s3: Any,
    moto_s3_endpoint: S3Endpoint,
    s3_bucket: str,
) -> None:
    """A serializable conflict rolled the merge back and left the stage as it was:
    the merge is retried in the same session, the object not COPYed again."""
    answers = ["ERROR: 1023 DETAIL: Serializable isolation violation on table", None]
    fake_api.outcome = lambda txn: answers.pop(0) if txn.merge else None
    with trio.fail_after(30):
        result = await warehouse(aws, moto_s3_endpoint, s3_bucket).load(
            [event(n) for n in range(300)]
        )
    assert result.loaded == 300
    [stage] = fake_api.stages
    first, second = fake_api.merges
    assert first.session == second.session == stage.session
    assert first.staged_key == second.staged_key == stage.staged_key
    assert first.ids == second.ids == stage.ids
    assert s3_keys(boto_s3, s3_bucket) == set()


async def test_a_failed_delete_is_logged_and_the_load_stands(
    aws: AwsClient,
    fake_api: FakeDataApi,
    boto_s3: Any,
    moto_s3_endpoint: S3Endpoint,
    s3_bucket: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def vanish(txn: Transaction) -> None:  # the bucket goes away while COPY runs
        if not txn.merge:
            boto_s3.delete_object(Bucket=s3_bucket, Key=txn.staged_key)
            boto_s3.delete_bucket(Bucket=s3_bucket)

    fake_api.outcome = vanish
    with trio.fail_after(30), caplog.at_level(logging.WARNING, "afpipe.redshift"):
        result = await warehouse(aws, moto_s3_endpoint, s3_bucket).load(
            [event(n) for n in range(300)]
        )
    assert result.loaded == 300
    [record] = [r for r in caplog.records if "not deleted" in r.getMessage()]
    assert "NoSuchBucket" in record.getMessage()
    assert "lifecycle rule" in record.getMessage()
