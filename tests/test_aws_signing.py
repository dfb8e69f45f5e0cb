"""SigV4 and request building: our signed headers equal botocore's own, byte for byte."""

from __future__ import annotations

import datetime
from typing import Any

import botocore.auth
import botocore.session
import msgspec
import pytest
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.credentials import ReadOnlyCredentials

from afpipe.aws import AwsService, redshift_data_service, resolve_endpoint, sqs_service
from afpipe.aws.signing import encode_payload, json_request, sign_request


def sign(
    service: AwsService, operation: str, body: bytes, credentials: ReadOnlyCredentials
) -> dict[str, str]:
    """The headers afpipe sends for one JSON-protocol attempt."""
    return sign_request(service, json_request(service, operation, body), credentials)


FIXED_NOW = datetime.datetime(2024, 3, 2, 12, 0, 1)
ENDPOINT = "https://example.test:8443"
QUEUE_URL = "https://sqs.eu-west-1.amazonaws.com/123456789012/afpipe"


class _EmptyBody:
    def stream(self, **_: Any) -> Any:
        yield b"{}"


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore reads the clock when it signs; pin it for both signers."""
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *_, **__: FIXED_NOW)


def botocore_request(
    service_name: str, operation: str, params: dict[str, Any], token: str | None
) -> AWSPreparedRequest:
    """What botocore's own client sends for ``operation`` (captured, never sent)."""
    client: Any = botocore.session.get_session().create_client(
        service_name,
        region_name="eu-west-1",
        endpoint_url=ENDPOINT,
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        aws_session_token=token,
    )
    captured: list[AWSPreparedRequest] = []

    def before_send(request: AWSPreparedRequest, **_: Any) -> AWSResponse:
        captured.append(request)
        return AWSResponse(request.url, 200, {}, _EmptyBody())  # type: ignore[arg-type]

    client.meta.events.register("before-send", before_send)
    getattr(client, operation)(**params)
    client.close()
    return captured[0]


CASES = [
    (
        "sqs",
        "send_message_batch",
        "SendMessageBatch",
        {"QueueUrl": QUEUE_URL, "Entries": [{"Id": "0", "MessageBody": "héllo ✓ \\ '"}]},
    ),
    (
        "redshift-data",
        "execute_statement",
        "ExecuteStatement",
        # botocore fills in this idempotency token by itself; we pass one explicitly
        {"ClusterIdentifier": "c1", "Database": "dev", "Sql": "SELECT 1", "ClientToken": "t-1"},
    ),
]


@pytest.mark.parametrize("token", [None, "FQoGZXIvYXdzEXAMPLETOKEN"])
@pytest.mark.parametrize(("service_name", "method", "operation", "params"), CASES)
def test_signed_headers_equal_botocore(
    service_name: str, method: str, operation: str, params: dict[str, Any], token: str | None
) -> None:
    theirs = botocore_request(service_name, method, params, token)
    env = {"AWS_ENDPOINT_URL": ENDPOINT}
    service = (sqs_service if service_name == "sqs" else redshift_data_service)("eu-west-1", env)
    credentials = ReadOnlyCredentials(
        "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token
    )
    assert isinstance(theirs.body, bytes)
    body = theirs.body  # sign the very bytes botocore sent

    ours = sign(service, operation, body, credentials)

    assert theirs.method == "POST"
    assert theirs.url == service.url
    signed = ours["Authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    their_headers = {k.lower(): _text(v) for k, v in theirs.headers.items()}
    assert {k.lower(): v for k, v in ours.items()} == {
        k: their_headers[k] for k in [*signed, "authorization"] if k != "host"
    }
    assert ours["Authorization"].startswith(
        f"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240302/eu-west-1/{service.signing_name}/"
    )
    # our own body encodes the same JSON value (compact, UTF-8 rather than \\u escapes)
    assert msgspec.json.decode(encode_payload(params)) == msgspec.json.decode(body)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def test_every_attempt_is_signed_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    service = sqs_service("eu-west-1", {})
    credentials = ReadOnlyCredentials("AKID", "SECRET", None)
    first = sign(service, "ReceiveMessage", b"{}", credentials)
    later = FIXED_NOW + datetime.timedelta(seconds=1)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *_, **__: later)
    second = sign(service, "ReceiveMessage", b"{}", credentials)
    assert first["X-Amz-Date"] == "20240302T120001Z"
    assert second["X-Amz-Date"] == "20240302T120002Z"
    assert first["Authorization"] != second["Authorization"]


def test_signature_depends_on_the_body() -> None:
    service = sqs_service("eu-west-1", {})
    credentials = ReadOnlyCredentials("AKID", "SECRET", None)
    one = sign(service, "SendMessage", b'{"MessageBody":"a"}', credentials)
    two = sign(service, "SendMessage", b'{"MessageBody":"b"}', credentials)
    assert one["Authorization"] != two["Authorization"]


def test_request_headers_per_service() -> None:
    credentials = ReadOnlyCredentials("AKID", "SECRET", "TOKEN")
    sqs = sign(sqs_service("us-east-1", {}), "ReceiveMessage", b"{}", credentials)
    rsd = sign(redshift_data_service("us-east-1", {}), "ExecuteStatement", b"{}", credentials)
    assert sqs["Content-Type"] == "application/x-amz-json-1.0"
    assert sqs["X-Amz-Target"] == "AmazonSQS.ReceiveMessage"
    assert sqs["x-amzn-query-mode"] == "true"
    assert sqs["X-Amz-Security-Token"] == "TOKEN"
    assert rsd["Content-Type"] == "application/x-amz-json-1.1"
    assert rsd["X-Amz-Target"] == "RedshiftData.ExecuteStatement"
    assert "x-amzn-query-mode" not in rsd
    assert "/us-east-1/redshift-data/aws4_request" in rsd["Authorization"]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "https://sqs.eu-central-1.amazonaws.com"),
        ({"AWS_ENDPOINT_URL": "http://localhost:4566/"}, "http://localhost:4566"),
        (
            {"AWS_ENDPOINT_URL": "http://general:1", "AWS_ENDPOINT_URL_SQS": "http://sqs:2"},
            "http://sqs:2",
        ),
        (
            {"AWS_ENDPOINT_URL_SQS": "  ", "AWS_ENDPOINT_URL": "http://general:1"},
            "http://general:1",
        ),
        (
            {"AWS_ENDPOINT_URL_REDSHIFT_DATA": "http://rsd:3"},
            "https://sqs.eu-central-1.amazonaws.com",
        ),
    ],
)
def test_sqs_endpoint_resolution(env: dict[str, str], expected: str) -> None:
    assert resolve_endpoint("sqs", "eu-central-1", env) == expected


def test_redshift_data_endpoint_resolution() -> None:
    env = {"AWS_ENDPOINT_URL_REDSHIFT_DATA": "http://rsd:3", "AWS_ENDPOINT_URL": "http://x:1"}
    assert resolve_endpoint("redshift-data", "us-west-2", env) == "http://rsd:3"
    assert resolve_endpoint("redshift-data", "us-west-2", {}) == (
        "https://redshift-data.us-west-2.amazonaws.com"
    )
    assert resolve_endpoint("sqs", "cn-north-1", {}) == "https://sqs.cn-north-1.amazonaws.com.cn"
    service = redshift_data_service("us-west-2", env)
    assert service == AwsService(
        signing_name="redshift-data",
        region="us-west-2",
        endpoint_url="http://rsd:3",
        json_version="1.1",
        target_prefix="RedshiftData",
    )
    assert service.url == "http://rsd:3/"
