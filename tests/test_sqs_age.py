"""SQS's oldest message age, read from CloudWatch (AFPIPE_SQS_AGE_FROM_CLOUDWATCH).

Against moto, whose CloudWatch answers the JSON protocol: moto publishes no SQS
metrics by itself, so the datapoints are put with boto3, as SQS would, and read
back over the wire through afpipe's own client. The failure paths and the
once-a-minute rate run on a mock transport under trio's autojump clock.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import boto3
import botocore.session
import httpx
import pytest
import trio
import trio.testing
from botocore.serialize import create_serializer
from botocore.validate import ParamValidator
from prometheus_client import REGISTRY

from afpipe import backends
from afpipe.aws import (
    AwsClient,
    CredentialCache,
    cloudwatch_api,
    cloudwatch_service,
    sqs_service,
    static_credentials,
)
from afpipe.config import settings_from
from afpipe.config.sections import sections
from afpipe.errors import TransientError
from afpipe.pipeline.sampling import sample_queues
from afpipe.queue.sqs import SqsQueue
from afpipe.queue.sqs_age import CloudWatchAge
from tests.fixtures.moto import FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY, MOTO_REGION

ENDPOINT = "https://aws.test"
QUEUE_URL = f"{ENDPOINT}/123456789012/afpipe-age-test"


def age_gauge(queue: str) -> float | None:
    return REGISTRY.get_sample_value("afpipe_queue_oldest_message_age_seconds", {"queue": queue})


def put_ages(moto_endpoint: str, queue_url: str, ages: list[tuple[int, float]]) -> None:
    """Datapoints as SQS publishes them: (minutes ago, age in seconds)."""
    cloudwatch = boto3.client(
        "cloudwatch",
        region_name=MOTO_REGION,
        endpoint_url=moto_endpoint,
        aws_access_key_id=FAKE_ACCESS_KEY_ID,
        aws_secret_access_key=FAKE_SECRET_ACCESS_KEY,
    )
    now = datetime.now(UTC)
    dimensions = [{"Name": "QueueName", "Value": cloudwatch_api.queue_name(queue_url)}]
    data = [
        {
            "MetricName": "ApproximateAgeOfOldestMessage",
            "Dimensions": dimensions,
            "Timestamp": now - timedelta(minutes=ago),
            "Value": value,
            "Unit": "Seconds",
        }
        for ago, value in ages
    ]
    cloudwatch.put_metric_data(Namespace="AWS/SQS", MetricData=data)


async def test_sqs_age_is_read_from_cloudwatch_into_the_sampled_gauge(
    moto_endpoint: str, make_sqs_queue: Callable[..., str], aws_client: AwsClient
) -> None:
    """The whole path from the settings: on the code before, the gauge stayed unset."""
    url = make_sqs_queue("afpipe-age")
    put_ages(moto_endpoint, url, [(3, 120.0), (1, 240.0), (2, 180.0)])
    settings = settings_from(
        {
            "SQS_QUEUE_URL": url,
            "AWS_REGION": MOTO_REGION,
            "AWS_ENDPOINT_URL": moto_endpoint,
            "AFPIPE_SQS_AGE_FROM_CLOUDWATCH": "true",
        }
    )
    queue = backends.sqs_queue(sections(settings).queue, aws_client, url)
    queue.name = "age-from-cloudwatch"
    with trio.fail_after(20):
        await queue.send_batch(["a"])  # not empty: a missing datapoint would not be 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sample_queues, [queue], 15.0)
            while age_gauge("age-from-cloudwatch") is None:
                await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    assert age_gauge("age-from-cloudwatch") == 240.0  # the newest datapoint, not the largest


async def test_an_idle_empty_queue_with_no_datapoint_is_0_and_a_busy_one_unknown(
    moto_endpoint: str, make_sqs_queue: Callable[..., str], aws_client: AwsClient
) -> None:
    cloudwatch = cloudwatch_service(MOTO_REGION, {"AWS_ENDPOINT_URL": moto_endpoint})
    url = make_sqs_queue("afpipe-idle")
    with trio.fail_after(20):
        assert await CloudWatchAge(aws_client, cloudwatch, url).get(empty=True) == 0.0
        assert await CloudWatchAge(aws_client, cloudwatch, url).get(empty=False) is None


def test_the_endpoint_follows_the_sdk_rules() -> None:
    assert botocore.session.get_session().get_service_model("cloudwatch").service_id == (
        "CloudWatch"  # hence AWS_ENDPOINT_URL_CLOUDWATCH
    )
    public = cloudwatch_service("eu-west-1", {})
    assert public.endpoint_url == "https://monitoring.eu-west-1.amazonaws.com"
    assert public.signing_name == "monitoring"
    env = {"AWS_ENDPOINT_URL": "http://all:1", "AWS_ENDPOINT_URL_CLOUDWATCH": "http://cw:2/"}
    assert cloudwatch_service("eu-west-1", env).endpoint_url == "http://cw:2"
    assert cloudwatch_service("cn-north-1", {}).endpoint_url.endswith(".amazonaws.com.cn")


async def test_the_request_is_what_botocore_sends_with_the_json_protocol() -> None:
    """Headers and body against botocore's own JSON serializer for CloudWatch (its
    model lists json among its protocols), and the input against its validator."""
    sent: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"MetricDataResults": []})

    now_s = 1_700_000_123.4
    async with client(record) as aws:
        service = cloudwatch_service("us-east-1", {"AWS_ENDPOINT_URL": ENDPOINT})
        age = CloudWatchAge(aws, service, QUEUE_URL, wall=lambda: now_s)
        assert await age.get(empty=False) is None
    [request] = sent
    model = botocore.session.get_session().get_service_model("cloudwatch")
    operation = model.operation_model("GetMetricData")
    params = cloudwatch_api.age_request("afpipe-age-test", now_s)
    botocore_params = {
        **params,
        "StartTime": datetime.fromtimestamp(params["StartTime"], UTC),
        "EndTime": datetime.fromtimestamp(params["EndTime"], UTC),
    }
    assert operation.input_shape is not None
    report = ParamValidator().validate(botocore_params, operation.input_shape)
    assert not report.has_errors(), report.generate_report()
    expected = create_serializer("json").serialize_to_request(botocore_params, operation)
    for name, value in expected["headers"].items():
        assert request.headers[name] == value
    assert json.loads(request.content) == json.loads(expected["body"])
    assert request.url == f"{ENDPOINT}/" and request.method == "POST"
    assert "Credential=AKID/20231114/us-east-1/monitoring/aws4_request" in (
        request.headers["Authorization"].replace(time.strftime("%Y%m%d"), "20231114")
    )
    assert params["EndTime"] - params["StartTime"] == cloudwatch_api.WINDOW_S + 60


def test_the_newest_datapoint_wins_and_odd_answers_are_transient() -> None:
    found = {"Id": "age", "Timestamps": [60, 180, 120], "Values": [1.0, 3.0, 9.0]}
    assert cloudwatch_api.latest_value({"MetricDataResults": [found]}) == 3.0
    assert cloudwatch_api.latest_value({"MetricDataResults": []}) is None
    with pytest.raises(TransientError):
        cloudwatch_api.latest_value({"MetricDataResults": [{"Timestamps": "x"}]})


class FakeAws:
    """SQS's GetQueueAttributes (3 visible) and CloudWatch's GetMetricData, counted;
    CloudWatch answers ``self.cloudwatch``."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.cloudwatch = denied()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        target = request.headers["X-Amz-Target"]
        self.calls[target] = self.calls.get(target, 0) + 1
        if target == "AmazonSQS.GetQueueAttributes":
            counts = {"ApproximateNumberOfMessages": "3"}
            return httpx.Response(200, json={"Attributes": counts})
        assert target == "GraniteServiceVersion20100801.GetMetricData"
        return self.cloudwatch


def denied() -> httpx.Response:
    headers = {"x-amzn-query-error": "AccessDenied;Sender", "x-amzn-RequestId": "r1"}
    body = {"__type": "com.amazon.coral.service#AccessDeniedException", "message": "no"}
    return httpx.Response(400, headers=headers, json=body)


def datapoint(value: float) -> httpx.Response:
    found = {"Id": "age", "Timestamps": [time.time() - 120], "Values": [value]}
    return httpx.Response(200, json={"MetricDataResults": [found]})


def client(handler: Callable[[httpx.Request], httpx.Response]) -> AwsClient:
    credentials = CredentialCache(static_credentials("AKID", "SECRET"))
    return AwsClient(credentials=credentials, transport=httpx.MockTransport(handler))


def warnings_about_age(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and "oldest message age" in r.getMessage()
    ]


async def test_access_denied_leaves_the_gauge_unset_logs_once_and_counts_go_on(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeAws()
    async with client(fake) as aws:
        await aws.credentials.get()  # in a thread: before any deadline (autojump)
        env = {"AWS_ENDPOINT_URL": ENDPOINT}
        age = CloudWatchAge(aws, cloudwatch_service("us-east-1", env), QUEUE_URL)
        queue = SqsQueue(aws, sqs_service("us-east-1", env), QUEUE_URL, age=age)
        queue.name = "age-denied"
        with caplog.at_level(logging.INFO, logger="afpipe.sqs"):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sample_queues, [queue], 15.0)
                await trio.sleep(5 * 60 - 1)  # samples at 0, 15, ... 285 s
                assert age_gauge("age-denied") is None
                assert fake.calls == {
                    "AmazonSQS.GetQueueAttributes": 20,
                    "GraniteServiceVersion20100801.GetMetricData": 5,  # once a minute
                }
                [warning] = warnings_about_age(caplog)  # once, not every minute
                assert "cloudwatch:GetMetricData" in warning
                assert "AFPIPE_SQS_AGE_FROM_CLOUDWATCH=false" in warning
                fake.cloudwatch = datapoint(42.0)  # the permission granted
                await trio.sleep(60)
                assert age_gauge("age-denied") == 42.0
                assert any("known again" in r.getMessage() for r in caplog.records)
                fake.cloudwatch = httpx.Response(400, json={"__type": "InvalidParameterValue"})
                await trio.sleep(60)
                assert len(warnings_about_age(caplog)) == 2  # a new outage: logged again
                assert fake.calls["GraniteServiceVersion20100801.GetMetricData"] == 7
                nursery.cancel_scope.cancel()
    assert (
        REGISTRY.get_sample_value(
            "afpipe_queue_messages", {"queue": "age-denied", "state": "visible"}
        )
        == 3
    )


async def test_a_cloudwatch_that_never_answers_holds_the_counts_back_5_s_at_most(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        if request.headers["X-Amz-Target"].startswith("AmazonSQS."):
            return httpx.Response(200, json={"Attributes": {}})
        await trio.sleep_forever()
        raise AssertionError

    credentials = CredentialCache(static_credentials("AKID", "SECRET"))
    async with AwsClient(credentials=credentials, transport=httpx.MockTransport(hang)) as aws:
        await aws.credentials.get()
        env = {"AWS_ENDPOINT_URL": ENDPOINT}
        age = CloudWatchAge(aws, cloudwatch_service("us-east-1", env), QUEUE_URL)
        queue = SqsQueue(aws, sqs_service("us-east-1", env), QUEUE_URL, age=age)
        started = trio.current_time()
        size = await queue.size()
        assert trio.current_time() - started == pytest.approx(5.0)
    assert size.visible == 0 and size.oldest_age_s is None
    assert "no answer within 5 s" in warnings_about_age(caplog)[0]


def test_off_by_default_and_only_with_sqs() -> None:
    assert sections(settings_from({"SQS_QUEUE_URL": QUEUE_URL})).queue.cloudwatch is None
    on = {"AFPIPE_SQS_AGE_FROM_CLOUDWATCH": "true"}
    assert sections(settings_from(on)).queue.cloudwatch is None  # the embedded queue
    found = sections(settings_from({**on, "SQS_QUEUE_URL": QUEUE_URL})).queue.cloudwatch
    assert found is not None and found.signing_name == "monitoring"


def test_no_queue_url_means_no_queue_name() -> None:
    assert cloudwatch_api.queue_name(QUEUE_URL) == "afpipe-age-test"
    assert cloudwatch_api.queue_name(QUEUE_URL + "/") == "afpipe-age-test"
