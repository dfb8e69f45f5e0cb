"""Logs: no secret at any level, and no third-party chatter unless asked for.

AWS calls go to moto over real HTTP with a session token, so botocore signs
with ``X-Amz-Security-Token`` and httpx/httpcore log as they do in production.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import httpx
import pytest
import trio

from afpipe import logs
from afpipe.aws import AwsClient, AwsService, CredentialCache, static_credentials
from afpipe.redact import REDACTED, Redactor

ACCESS_KEY = "AKIDLOGSTEST0001"
SECRET_KEY = "logs-secret-key-7f3a9c1e5b2d4f6a8c0e"
SESSION_TOKEN = "FwoGZXIvYXdzEBYaDLogsSessionToken9x8y7z6w5v4u3t2s1r0q"
WEBHOOK_TOKEN = "webhook-token-3e5f7a9b1c"
CALLS = 5


class SignatureRecorder(httpx.AsyncHTTPTransport):
    """The real transport, keeping each request's Authorization header."""

    def __init__(self) -> None:
        super().__init__()
        self.authorizations: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.authorizations.append(request.headers["authorization"])
        return await super().handle_async_request(request)


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in logs.THIRD_PARTY_LOGGERS}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, saved in levels.items():
        logging.getLogger(name).setLevel(saved)


async def sqs_calls(service: AwsService, queue_url: str) -> list[str]:
    """``CALLS`` SQS calls signed with a session token; the signatures they carried."""
    recorder = SignatureRecorder()
    credentials = CredentialCache(static_credentials(ACCESS_KEY, SECRET_KEY, SESSION_TOKEN))
    with trio.fail_after(30):
        async with AwsClient(credentials=credentials, transport=recorder) as aws:
            for _ in range(CALLS):
                await aws.call(service, "GetQueueAttributes", {"QueueUrl": queue_url})
    assert all(SESSION_TOKEN not in a for a in recorder.authorizations)
    return [a.rsplit("Signature=", 1)[1] for a in recorder.authorizations]


def assert_no_secret(output: str, signatures: list[str]) -> None:
    assert len(signatures) == CALLS and all(len(s) == 64 for s in signatures)
    for secret in (SECRET_KEY, SESSION_TOKEN, *signatures):
        assert secret not in output, f"{secret[:12]}… leaked into the logs"


def loggers(output: str) -> list[str]:
    return [json.loads(line)["logger"] for line in output.splitlines()]


async def test_a_trace_level_log_of_aws_calls_holds_no_secret(
    capsys: pytest.CaptureFixture[str], moto_sqs_service: AwsService, sqs_queue_url: str
) -> None:
    """LOG_LEVEL=trace: botocore logged the canonical request, session token included,
    and every signature."""
    logs.configure("trace")
    signatures = await sqs_calls(moto_sqs_service, sqs_queue_url)
    assert_no_secret(capsys.readouterr().out, signatures)


async def test_third_party_logs_when_asked_for_still_hold_no_secret(
    capsys: pytest.CaptureFixture[str], moto_sqs_service: AwsService, sqs_queue_url: str
) -> None:
    logs.configure("trace", third_party=True)
    signatures = await sqs_calls(moto_sqs_service, sqs_queue_url)
    output = capsys.readouterr().out
    assert_no_secret(output, signatures)
    # The libraries did log what would have leaked: the redaction is what kept it out.
    assert "CanonicalRequest" in output and "x-amz-security-token:" + REDACTED in output
    assert "Signature:\\n" + REDACTED in output
    assert {"botocore.auth", "httpx", "httpcore.http11"} <= set(loggers(output))


async def test_at_info_aws_calls_write_no_line_each(
    capsys: pytest.CaptureFixture[str], moto_sqs_service: AwsService, sqs_queue_url: str
) -> None:
    """httpx logs one INFO line per request: 8,000 lines for 6,000 events."""
    logs.configure("info")
    await sqs_calls(moto_sqs_service, sqs_queue_url)
    names = loggers(capsys.readouterr().out)
    assert [n for n in names if n.split(".")[0] in ("httpx", "httpcore", "botocore")] == []
    assert len(names) < CALLS  # one line for where the credentials came from


async def test_third_party_info_lines_come_back_when_asked_for(
    capsys: pytest.CaptureFixture[str], moto_sqs_service: AwsService, sqs_queue_url: str
) -> None:
    logs.configure("info", third_party=True)
    await sqs_calls(moto_sqs_service, sqs_queue_url)
    assert loggers(capsys.readouterr().out).count("httpx") == CALLS


def test_a_library_never_logs_below_the_root_level(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("error")
    logging.getLogger("botocore.credentials").warning("a warning below the root's level")
    logging.getLogger("httpx").error("an error")
    assert loggers(capsys.readouterr().out) == ["httpx"]


def test_known_secrets_are_hidden_wherever_they_appear(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.configure("debug", third_party=True, secrets=[WEBHOOK_TOKEN, "short", ""])
    log = logging.getLogger("hpack.hpack")
    log.debug("Decoded %s, consumed 1", (b"x-af-token", WEBHOOK_TOKEN.encode()))
    try:
        raise ValueError(f"bad header {WEBHOOK_TOKEN}")
    except ValueError:
        logging.getLogger("afpipe").exception("failed", extra={"context": [WEBHOOK_TOKEN]})
    output = capsys.readouterr().out
    assert WEBHOOK_TOKEN not in output and output.count(REDACTED) == 3
    assert "short" not in output  # (not logged); values under 8 characters are not searched


@pytest.mark.parametrize(
    "text",
    [
        "CanonicalRequest:\nPOST\n/\n\nhost:sqs\nx-amz-security-token:SECRETVALUE\nx-amz-date:1",
        "Signature:\nSECRETVALUE",
        "{'Authorization': b'AWS4-HMAC-SHA256 Credential=AKID/x, Signature=SECRETVALUE'}",
        '{"headers": {"X-Amz-Security-Token": "SECRETVALUE"}}',
        "Response body:\n<Credentials><SecretAccessKey>SECRETVALUE</SecretAccessKey></Credentials>",
        "<SessionToken>SECRETVALUE</SessionToken>",
        '{"AccessKeyId": "ASIA", "SecretAccessKey": "SECRETVALUE", "Token": "SECRETVALUE"}',
        "Decoded (b'authorization', b'Bearer SECRETVALUE'), consumed 10",
        "GET /obj?X-Amz-Credential=AKID&X-Amz-Signature=SECRETVALUE&X-Amz-Security-Token=x",
        "authorization: Bearer SECRETVALUE",
        "aws_secret_access_key = SECRETVALUE",
        "{'aws_session_token': 'SECRETVALUE'}",
    ],
)
def test_secret_values_are_redacted_in_every_shape_libraries_log(text: str) -> None:
    redacted = Redactor()(text)
    assert "SECRETVALUE" not in redacted and REDACTED in redacted


def test_ordinary_text_is_left_alone() -> None:
    for text in ("missing or invalid token", "token count: 3", "tokens=5", "request"):
        assert Redactor()(text) == text
