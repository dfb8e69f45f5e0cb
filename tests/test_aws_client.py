"""AwsClient retries, budget and error mapping, with faults injected at the HTTP transport."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import botocore.auth
import httpx
import msgspec
import pytest
import trio
import trio.testing
from botocore.credentials import Credentials

from afpipe.aws import (
    AwsClient,
    CredentialCache,
    RetryPolicy,
    redshift_data_service,
    sqs_service,
    static_credentials,
)
from afpipe.errors import PermanentError, TransientError

SQS = sqs_service("us-east-1", {"AWS_ENDPOINT_URL": "https://aws.test"})
REDSHIFT_DATA = redshift_data_service("us-east-1", {"AWS_ENDPOINT_URL": "https://aws.test"})
# rand() = 0.5 makes full jitter deterministic: sleeps of 1, 2, 4, 8 s
POLICY = RetryPolicy(max_attempts=5, base_delay_s=2.0, max_delay_s=20.0)
Handler = Callable[[httpx.Request], httpx.Response]


@asynccontextmanager
async def make_client(
    handler: Handler, *, policy: RetryPolicy = POLICY, credentials: CredentialCache | None = None
) -> AsyncIterator[AwsClient]:
    """A client on a mock transport, its credentials already resolved.

    Resolving runs in a worker thread, and while trio waits for a thread the
    autojump clock jumps to the next deadline: resolve before any deadline.
    """
    async with AwsClient(
        credentials=credentials or CredentialCache(static_credentials("AKID", "SECRET")),
        policy=policy,
        transport=httpx.MockTransport(handler),
        rand=lambda: 0.5,
    ) as aws:
        await aws.credentials.get()
        yield aws


def aws_error(status: int, code: str, *, query_error: str = "") -> httpx.Response:
    headers = {"x-amzn-RequestId": f"req-{code}", "Content-Type": "application/x-amz-json-1.0"}
    if query_error:
        headers["x-amzn-query-error"] = query_error
    body = {"__type": f"com.amazonaws.sqs#{code}", "message": f"{code} happened"}
    return httpx.Response(status, headers=headers, json=body)


def ok(result: dict[str, object]) -> httpx.Response:
    return httpx.Response(200, json=result)


class Recorder:
    """Answers from a script, one response (or exception) per request, recording each."""

    def __init__(self, *script: httpx.Response | Exception) -> None:
        self.script = list(script)
        self.times: list[float] = []
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.times.append(trio.current_time())
        self.requests.append(request)
        answer = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture(autouse=True)
def virtual_signing_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sign with trio's (virtual) clock so each attempt's X-Amz-Date shows when it was signed."""
    epoch = datetime.datetime(2024, 3, 2, 12, 0, 0)
    monkeypatch.setattr(
        botocore.auth,
        "get_current_datetime",
        lambda *_, **__: epoch + datetime.timedelta(seconds=trio.current_time()),
    )


@pytest.mark.parametrize(
    "failure",
    [
        aws_error(400, "ThrottlingException"),
        aws_error(
            400, "QueueThrottled", query_error="AWS.SimpleQueueService.RequestThrottled;Sender"
        ),
        aws_error(429, "TooManyRequestsException"),
        aws_error(500, "InternalError"),
        httpx.Response(503, text="<html>unavailable</html>"),
        httpx.ConnectError("connection refused"),
        httpx.ReadTimeout("read timed out"),
    ],
    ids=["throttling", "sqs-query-throttled", "429", "500", "503-html", "connect", "read-timeout"],
)
async def test_retried_with_exact_backoff(
    autojump_clock: trio.testing.MockClock, failure: httpx.Response | Exception
) -> None:
    recorder = Recorder(failure, failure, failure, ok({"MessageId": "m-1"}))
    async with make_client(recorder) as aws:
        start = trio.current_time()
        with trio.fail_after(60):
            result = await aws.call(SQS, "SendMessage", {"QueueUrl": "q", "MessageBody": "b"})
    assert result == {"MessageId": "m-1"}
    assert [t - start for t in recorder.times] == [0.0, 1.0, 3.0, 7.0]
    dates = [r.headers["X-Amz-Date"] for r in recorder.requests]
    assert dates == ["20240302T120000Z", "20240302T120001Z", "20240302T120003Z", "20240302T120007Z"]
    assert len({r.headers["Authorization"] for r in recorder.requests}) == 4  # signed afresh


async def test_request_shape() -> None:
    recorder = Recorder(ok({}))
    async with make_client(recorder) as aws:
        with trio.fail_after(5):
            await aws.call(REDSHIFT_DATA, "ExecuteStatement", {"Sql": "SELECT 'é'"})
    [request] = recorder.requests
    assert request.method == "POST"
    assert str(request.url) == "https://aws.test/"
    assert request.headers["X-Amz-Target"] == "RedshiftData.ExecuteStatement"
    assert request.headers["Content-Type"] == "application/x-amz-json-1.1"
    assert "/redshift-data/aws4_request" in request.headers["Authorization"]
    assert msgspec.json.decode(request.content) == {"Sql": "SELECT 'é'"}


async def test_validation_error_is_not_retried(autojump_clock: trio.testing.MockClock) -> None:
    recorder = Recorder(aws_error(400, "ValidationException"))
    async with make_client(recorder) as aws:
        with trio.fail_after(60), pytest.raises(PermanentError) as caught:
            await aws.call(REDSHIFT_DATA, "ExecuteStatement", {"Sql": "SELEC"})
    assert len(recorder.requests) == 1
    assert caught.value.code == "ValidationException"
    assert caught.value.request_id == "req-ValidationException"
    assert "ValidationException happened" in str(caught.value)


async def test_gives_up_after_max_attempts(autojump_clock: trio.testing.MockClock) -> None:
    recorder = Recorder(httpx.ConnectError("refused"))
    async with make_client(recorder) as aws:
        start = trio.current_time()
        with trio.fail_after(60), pytest.raises(TransientError) as caught:
            await aws.call(SQS, "ReceiveMessage", {})
    assert [t - start for t in recorder.times] == [0.0, 1.0, 3.0, 7.0, 15.0]
    assert trio.current_time() - start == 15.0  # no sleep after the last attempt
    assert caught.value.code == "ConnectError"
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


async def test_retry_budget_exhausts_under_a_sustained_outage(
    autojump_clock: trio.testing.MockClock,
) -> None:
    policy = RetryPolicy(max_attempts=3, base_delay_s=1.0, quota_tokens=20, retry_cost_tokens=5)
    recorder = Recorder(aws_error(503, "ServiceUnavailable"))
    async with make_client(recorder, policy=policy) as aws:
        with trio.fail_after(60):
            for _ in range(4):
                with pytest.raises(TransientError):
                    await aws.call(SQS, "ReceiveMessage", {})
            attempts_during_outage = len(recorder.requests)
            assert aws.quota(SQS).available_tokens == 0
            # another service has a budget of its own
            recorder.script = [ok({})]
            await aws.call(REDSHIFT_DATA, "ListDatabases", {})
            assert aws.quota(REDSHIFT_DATA).available_tokens == 20
            # successes refill the budget, slowly
            await aws.call(SQS, "ReceiveMessage", {})
    # 3 + 3 attempts spend the 20 tokens (4 retries of 5), then one attempt per call
    assert attempts_during_outage == 3 + 3 + 1 + 1
    assert aws.quota(SQS).available_tokens == 1


async def test_success_after_a_retry_gives_the_tokens_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = Recorder(httpx.ReadTimeout("slow"), ok({}))
    async with make_client(recorder) as aws:
        with trio.fail_after(60):
            await aws.call(SQS, "ReceiveMessage", {})
            assert aws.quota(SQS).available_tokens == 500  # spent 10 on the timeout, got 10 back


async def test_expired_token_resolves_credentials_again() -> None:
    # a real clock: the second resolution runs in a thread, which autojump would skip past
    loaded: list[str] = []

    def load() -> Credentials:
        loaded.append(f"AKID{len(loaded)}")
        return Credentials(loaded[-1], "SECRET", "TOKEN")

    recorder = Recorder(aws_error(403, "ExpiredToken"), ok({}))
    policy = RetryPolicy(base_delay_s=0.001)
    async with make_client(recorder, policy=policy, credentials=CredentialCache(load)) as aws:
        with trio.fail_after(60):
            await aws.call(SQS, "ReceiveMessage", {})
    assert loaded == ["AKID0", "AKID1"]
    assert "Credential=AKID1/" in recorder.requests[1].headers["Authorization"]


async def test_undecodable_success_is_transient(autojump_clock: trio.testing.MockClock) -> None:
    recorder = Recorder(httpx.Response(200, text="not json"))
    async with make_client(recorder, policy=RetryPolicy(max_attempts=2)) as aws:
        with trio.fail_after(60), pytest.raises(TransientError) as caught:
            await aws.call(SQS, "ReceiveMessage", {})
    assert caught.value.code == "InvalidResponse"
    assert isinstance(caught.value.__cause__, msgspec.DecodeError)
    assert len(recorder.requests) == 2


# httpx leaves its stream generators to the garbage collector when decoding fails.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore:Async generator:ResourceWarning")
async def test_an_undecodable_content_encoding_is_transient(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A gzip answer that does not inflate (a proxy cut it, say) raises httpx.DecodingError,
    which is not a TransportError: it escaped the error mapping unclassified."""
    answers: list[int] = []

    def corrupt_then(good: bool) -> Handler:
        def handler(request: httpx.Request) -> httpx.Response:
            answers.append(len(answers))
            if good and len(answers) > 1:
                return ok({"Messages": []})
            gzip = {"Content-Encoding": "gzip"}  # read (and decoded) by the client, later
            return httpx.Response(200, headers=gzip, stream=httpx.ByteStream(b"not gzip"))

        return handler

    async with make_client(corrupt_then(good=True)) as aws:
        with trio.fail_after(60):
            assert await aws.call(SQS, "ReceiveMessage", {}) == {"Messages": []}
    assert len(answers) == 2  # retried
    answers.clear()
    async with make_client(corrupt_then(good=False), policy=RetryPolicy(max_attempts=2)) as aws:
        with trio.fail_after(60), pytest.raises(TransientError) as caught:
            await aws.call(SQS, "ReceiveMessage", {})
    assert caught.value.code == "DecodingError"
    assert isinstance(caught.value.__cause__, httpx.DecodingError)
    assert len(answers) == 2


async def test_cancellation_is_not_swallowed_or_retried() -> None:
    requests: list[httpx.Request] = []

    async def hang(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    aws = AwsClient(
        credentials=CredentialCache(static_credentials("AKID", "SECRET")),
        transport=httpx.MockTransport(hang),
    )
    async with aws:
        with trio.move_on_after(0.05) as scope:
            await aws.call(SQS, "ReceiveMessage", {})
    assert scope.cancelled_caught
    assert len(requests) == 1
