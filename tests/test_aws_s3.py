"""The S3 client: against moto (round trips, quoting, error mapping), its signature
recomputed independently, its retries on a scripted transport, its pure parts."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import botocore.auth
import botocore.utils
import httpx
import pytest
import trio
import trio.testing

from afpipe.aws import AwsClient, CredentialCache, RetryPolicy, static_credentials
from afpipe.aws.s3 import S3Client
from afpipe.aws.s3_api import (
    S3Endpoint,
    S3Location,
    bucket_problem,
    object_url,
    parse_error,
    parse_s3_uri,
    quote_key,
    s3_endpoint,
)
from afpipe.errors import AccessDenied, PermanentError, TransientError
from tests.fixtures.s3 import s3_keys

FIXED_NOW = datetime.datetime(2024, 3, 2, 12, 0, 1)
PUBLIC = s3_endpoint("eu-west-1", {})


@pytest.fixture
def s3(aws_client: AwsClient, moto_s3_endpoint: S3Endpoint) -> S3Client:
    return S3Client(aws_client, moto_s3_endpoint)


# --- against moto ------------------------------------------------------------------------------


async def test_put_and_delete_round_trip(s3: S3Client, boto_s3: Any, s3_bucket: str) -> None:
    body = b"\x1f\x8b not really gzip \x00\xff" * 1000
    with trio.fail_after(30):
        etag = await s3.put_object(
            s3_bucket, "staging/a.json.gz", body, content_type="application/gzip"
        )
    stored = boto_s3.get_object(Bucket=s3_bucket, Key="staging/a.json.gz")
    assert stored["Body"].read() == body
    assert stored["ContentType"] == "application/gzip"
    assert etag == stored["ETag"] == f'"{hashlib.md5(body).hexdigest()}"'
    with trio.fail_after(30):
        await s3.delete_object(s3_bucket, "staging/a.json.gz")
        await s3.delete_object(s3_bucket, "staging/a.json.gz")  # gone already: still fine
    assert s3_keys(boto_s3, s3_bucket) == set()


KEYS = [
    "with space/and  two.json",
    "ünïcödé/日本語/😀.json.gz",
    "reserved+chars=&;,:@$/?#[]!*'()%20%2F",
    "tilde~/under_score-dash.dot",
    "a//double/slash",
    "trailing/",
]


async def test_keys_are_quoted(s3: S3Client, boto_s3: Any, s3_bucket: str) -> None:
    with trio.fail_after(30):
        for number, key in enumerate(KEYS):
            await s3.put_object(s3_bucket, key, f"body {number}".encode())
    assert s3_keys(boto_s3, s3_bucket) == set(KEYS)
    for number, key in enumerate(KEYS):
        assert (
            boto_s3.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
            == f"body {number}".encode()
        )
    with trio.fail_after(30):
        for key in KEYS:
            await s3.delete_object(s3_bucket, key)
    assert s3_keys(boto_s3, s3_bucket) == set()


async def test_a_missing_bucket_is_a_permanent_error_with_its_code(s3: S3Client) -> None:
    missing = f"afpipe-missing-{uuid.uuid4().hex[:12]}"
    with trio.fail_after(30), pytest.raises(PermanentError) as caught:
        await s3.put_object(missing, "k", b"x")
    assert caught.value.code == "NoSuchBucket"
    assert caught.value.request_id
    assert f"s3 PutObject s3://{missing}/k: NoSuchBucket (HTTP 404)" in str(caught.value)


# --- signing and retries on a scripted transport -------------------------------------------


class Recorder:
    def __init__(self, *script: httpx.Response | Exception) -> None:
        self.script = list(script)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def s3_error(status: int, code: str) -> httpx.Response:
    xml = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
        f"<Message>{code} happened</Message><RequestId>req-{code}</RequestId></Error>"
    )
    return httpx.Response(status, text=xml, headers={"Content-Type": "application/xml"})


@pytest.fixture
def virtual_signing_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sign with trio's clock, so each attempt's X-Amz-Date shows when it was signed."""
    monkeypatch.setattr(
        botocore.auth,
        "get_current_datetime",
        lambda *_, **__: FIXED_NOW + datetime.timedelta(seconds=trio.current_time()),
    )


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[Recorder, S3Client]]:
    """An S3 client for eu-west-1 (virtual-hosted) on a scripted transport; rand() = 0.5
    makes the backoff exact: 1, 2, 4 s."""
    recorder = Recorder(httpx.Response(200))
    async with AwsClient(
        credentials=CredentialCache(static_credentials("AKIDEXAMPLE", "SECRETEXAMPLE")),
        policy=RetryPolicy(max_attempts=4, base_delay_s=2.0),
        transport=httpx.MockTransport(recorder),
        rand=lambda: 0.5,
    ) as aws:
        await aws.credentials.get()  # in a thread: before any deadline (autojump)
        yield recorder, S3Client(aws, PUBLIC)


def independent_signature(request: httpx.Request, canonical_uri: str) -> tuple[str, list[str]]:
    """SigV4 for S3 computed from the AWS documentation, not by botocore."""
    authorization = request.headers["Authorization"]
    signed = authorization.split("SignedHeaders=", 1)[1].split(",", 1)[0].split(";")
    amz_date = request.headers["X-Amz-Date"]
    scope = f"{amz_date[:8]}/eu-west-1/s3/aws4_request"
    canonical = "\n".join(
        [
            request.method,
            canonical_uri,
            "",  # no query
            *[f"{name}:{request.headers[name].strip()}" for name in signed],
            "",
            ";".join(signed),
            hashlib.sha256(request.content).hexdigest(),
        ]
    )
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{digest}"
    key = b"AWS4SECRETEXAMPLE"
    for part in (amz_date[:8], "eu-west-1", "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest(), signed


async def test_requests_are_signed_for_s3_over_the_quoted_path(
    autojump_clock: trio.testing.MockClock,
    virtual_signing_clock: None,
    scripted: tuple[Recorder, S3Client],
) -> None:
    recorder, s3 = scripted
    key = "dir/ü é+(1).json"
    with trio.fail_after(5):
        await s3.put_object("my-bucket", key, b'{"a":1}\n', content_type="application/gzip")
        await s3.delete_object("my-bucket", key)
    put, delete = recorder.requests
    quoted = "/dir/%C3%BC%20%C3%A9%2B%281%29.json"
    assert str(put.url) == f"https://my-bucket.s3.eu-west-1.amazonaws.com{quoted}"
    assert put.url.raw_path == quoted.encode()
    assert (put.method, delete.method) == ("PUT", "DELETE")
    assert put.headers["x-amz-content-sha256"] == hashlib.sha256(b'{"a":1}\n').hexdigest()
    assert delete.headers["x-amz-content-sha256"] == hashlib.sha256(b"").hexdigest()
    for request in (put, delete):
        signature, signed = independent_signature(request, quoted)
        assert {"host", "x-amz-content-sha256", "x-amz-date"} <= set(signed)
        assert request.headers["Authorization"].endswith(f"Signature={signature}")
        assert (
            "Credential=AKIDEXAMPLE/20240302/eu-west-1/s3/aws4_request"
            in (request.headers["Authorization"])
        )


@pytest.mark.parametrize(
    "failure",
    [
        s3_error(503, "SlowDown"),
        s3_error(500, "InternalError"),
        s3_error(400, "RequestTimeout"),
        httpx.Response(502, text="<html>bad gateway</html>"),
        httpx.ConnectError("connection refused"),
    ],
    ids=["slowdown", "internal", "request-timeout", "502-html", "connect"],
)
async def test_transient_failures_are_retried_with_backoff_and_signed_afresh(
    autojump_clock: trio.testing.MockClock,
    virtual_signing_clock: None,
    scripted: tuple[Recorder, S3Client],
    failure: httpx.Response | Exception,
) -> None:
    recorder, s3 = scripted
    recorder.script = [failure, failure, httpx.Response(200, headers={"ETag": '"e"'})]
    start = trio.current_time()
    with trio.fail_after(60):
        assert await s3.put_object("my-bucket", "k", b"body") == '"e"'
    assert trio.current_time() - start == 3.0  # slept 1 s, then 2 s
    dates = [request.headers["X-Amz-Date"] for request in recorder.requests]
    assert dates == ["20240302T120001Z", "20240302T120002Z", "20240302T120004Z"]


async def test_transient_failure_gives_up_with_the_code(
    autojump_clock: trio.testing.MockClock, scripted: tuple[Recorder, S3Client]
) -> None:
    recorder, s3 = scripted
    recorder.script = [s3_error(503, "SlowDown")]
    with trio.fail_after(60), pytest.raises(TransientError) as caught:
        await s3.delete_object("my-bucket", "k")
    assert len(recorder.requests) == 4
    assert (caught.value.code, caught.value.request_id) == ("SlowDown", "req-SlowDown")
    assert "s3 DeleteObject s3://my-bucket/k: SlowDown (HTTP 503): SlowDown happened" in str(
        caught.value
    )


async def test_access_denied_is_a_configuration_error_and_not_retried(
    autojump_clock: trio.testing.MockClock, scripted: tuple[Recorder, S3Client]
) -> None:
    # A missing permission ends the process (exit 2) naming what the identity needs.
    recorder, s3 = scripted
    recorder.script = [s3_error(403, "AccessDenied")]
    with trio.fail_after(60), pytest.raises(AccessDenied) as caught:
        await s3.put_object("my-bucket", "k", b"body")
    assert len(recorder.requests) == 1
    assert "needs s3:PutObject" in str(caught.value)


@pytest.mark.parametrize(("status", "code"), [(404, "NoSuchBucket"), (400, "InvalidRequest")])
async def test_refusals_are_permanent_and_not_retried(
    autojump_clock: trio.testing.MockClock,
    scripted: tuple[Recorder, S3Client],
    status: int,
    code: str,
) -> None:
    recorder, s3 = scripted
    recorder.script = [s3_error(status, code)]
    with trio.fail_after(60), pytest.raises(PermanentError) as caught:
        await s3.put_object("my-bucket", "k", b"body")
    assert len(recorder.requests) == 1
    assert (caught.value.code, caught.value.request_id) == (code, f"req-{code}")


# --- pure parts ------------------------------------------------------------------------------


def test_parse_error_reads_s3_xml_with_or_without_a_namespace() -> None:
    plain = s3_error(403, "AccessDenied")
    info = parse_error(403, plain.headers, plain.content)
    assert (info.code, info.message, info.request_id) == (
        "AccessDenied",
        "AccessDenied happened",
        "req-AccessDenied",
    )
    namespaced = (
        b'<Error xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Code>SlowDown</Code>'
        b"<Message>Please reduce your request rate.</Message></Error>"
    )
    info = parse_error(503, {"x-amz-request-id": "hdr-1"}, namespaced)
    assert (info.code, info.request_id, info.retryable) == ("SlowDown", "hdr-1", True)


@pytest.mark.parametrize("body", [b"", b"<html>proxy</html>", b"not xml <", b"<Other/>"])
def test_parse_error_without_s3_xml_keeps_the_status(body: bytes) -> None:
    info = parse_error(404, {"X-Amz-Request-Id": "r-9"}, body)
    assert (info.code, info.message, info.request_id) == ("404", "", "r-9")
    assert not info.retryable
    assert parse_error(500, {}, body).retryable


def test_addressing() -> None:
    assert object_url(PUBLIC, "bkt", "a b/c") == "https://bkt.s3.eu-west-1.amazonaws.com/a%20b/c"
    # dotted names break the *.s3 TLS wildcard: path-style, as botocore
    assert object_url(PUBLIC, "b.k.t", "k") == "https://s3.eu-west-1.amazonaws.com/b.k.t/k"
    china = s3_endpoint("cn-north-1", {})
    assert object_url(china, "bkt", "k") == "https://bkt.s3.cn-north-1.amazonaws.com.cn/k"
    override = s3_endpoint("us-east-1", {"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9000/"})
    assert override.path_style and override.service.signing_name == "s3"
    assert object_url(override, "bkt", "ü") == "http://127.0.0.1:9000/bkt/%C3%BC"
    generic = s3_endpoint("us-east-1", {"AWS_ENDPOINT_URL": "http://localstack:4566"})
    assert object_url(generic, "bkt", "k") == "http://localstack:4566/bkt/k"
    assert not PUBLIC.path_style


def test_quote_key_is_botocores_and_refuses_what_a_url_cannot_carry() -> None:
    for key in KEYS:
        assert quote_key(key) == quote(key, safe="/~")
        assert quote_key(key) == botocore.utils.percent_encode(key, safe="/~")
    for bad in ["", "a/../b", "./a", "a/.", "x" * 1025]:
        with pytest.raises(ValueError):
            quote_key(bad)


@pytest.mark.parametrize(
    ("uri", "location"),
    [
        ("s3://my-bucket", S3Location("my-bucket", "")),
        ("s3://my-bucket/", S3Location("my-bucket", "")),
        ("s3://my.bucket.1/afpipe", S3Location("my.bucket.1", "afpipe/")),
        ("s3://abc/afpipe/staging/", S3Location("abc", "afpipe/staging/")),
        ("s3://abc/env=prod/(x)!*_.-", S3Location("abc", "env=prod/(x)!*_.-/")),
    ],
)
def test_parse_s3_uri(uri: str, location: S3Location) -> None:
    assert parse_s3_uri(uri) == location
    assert location.uri == f"s3://{location.bucket}/{location.prefix}"


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("my-bucket", "expected s3://bucket[/prefix]"),
        ("https://my-bucket/x", "expected s3://bucket[/prefix]"),
        ("s3://", "3-63 lower-case"),
        ("s3://ab", "3-63 lower-case"),
        ("s3://" + "a" * 64, "3-63 lower-case"),
        ("s3://My-Bucket", "3-63 lower-case"),
        ("s3://my_bucket", "3-63 lower-case"),
        ("s3://-bucket", "3-63 lower-case"),
        ("s3://bucket-", "3-63 lower-case"),
        ("s3://my..bucket", "adjacent dots"),
        ("s3://192.168.1.1", "IP address"),
        ("s3://xn--bucket", "reserves"),
        ("s3://bucket-s3alias", "reserves"),
        ("s3://bucket//x", "non-empty"),
        ("s3://bucket/a/../b", "not . or .."),
        ("s3://bucket/with space", "only letters"),
        ("s3://bucket/quote'", "only letters"),
        ("s3://bucket/ünï", "only letters"),
        ("s3://bucket/q?x=1", "only letters"),
        ("s3://bucket/" + "p" * 600, "longer than"),
    ],
)
def test_parse_s3_uri_refuses(uri: str, problem: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_s3_uri(uri)
    assert problem in str(caught.value)


def test_bucket_names_at_the_limits() -> None:
    assert bucket_problem("abc") is None
    assert bucket_problem("a" * 63) is None
    assert bucket_problem("my-bucket.logs-2") is None
    assert bucket_problem("1.2.3.4") is not None
