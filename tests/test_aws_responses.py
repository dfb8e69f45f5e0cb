"""Error parsing and classification, and the retry arithmetic; pure, no event loop."""

from __future__ import annotations

import pytest

from afpipe.aws.responses import AwsErrorInfo, decode_result, error_code, parse_error, to_exception
from afpipe.aws.retry import RetryPolicy, RetryQuota, backoff_s
from afpipe.errors import AccessDenied, ConfigError, PermanentError, TransientError


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("com.amazonaws.sqs#QueueDoesNotExist", "QueueDoesNotExist"),
        ("com.amazon.coral.validate#ValidationException", "ValidationException"),
        ("ValidationException:http://internal.amazon.com/coral/", "ValidationException"),
        ("ThrottlingException", "ThrottlingException"),
    ],
)
def test_error_code_strips_namespace(raw: str, code: str) -> None:
    assert error_code(raw) == code


def test_parse_json_error_with_request_id() -> None:
    body = b'{"__type":"com.amazonaws.redshiftdata#ValidationException","message":"bad sql"}'
    info = parse_error(400, {"X-Amzn-RequestId": "rid-1"}, body)
    assert info == AwsErrorInfo(400, "ValidationException", "bad sql", "rid-1")
    assert not info.retryable


def test_sqs_query_error_header_wins() -> None:
    body = b'{"__type":"com.amazonaws.sqs#QueueDoesNotExist","message":"no such queue"}'
    headers = {"x-amzn-query-error": "AWS.SimpleQueueService.NonExistentQueue;Sender"}
    info = parse_error(400, headers, body)
    assert info.code == "AWS.SimpleQueueService.NonExistentQueue"
    assert info.message == "no such queue"


def test_non_json_error_body_falls_back_to_status() -> None:
    info = parse_error(502, {}, b"<html>Bad Gateway</html>")
    assert info.code == "502"
    assert info.retryable


def test_error_type_header_when_body_is_empty() -> None:
    info = parse_error(400, {"x-amzn-ErrorType": "ThrottlingException:http://x"}, b"")
    assert info.code == "ThrottlingException"
    assert info.retryable


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (400, "ThrottlingException", True),
        (400, "Throttling", True),
        (400, "RequestThrottled", True),
        (400, "AWS.SimpleQueueService.RequestThrottled", True),
        (400, "ActiveStatementsExceededException", True),
        (400, "ProvisionedThroughputExceededException", True),
        (400, "ExpiredTokenException", True),
        (429, "Whatever", True),
        (500, "InternalFailure", True),
        (503, "ServiceUnavailable", True),
        (400, "ValidationException", False),
        (400, "InvalidParameterValue", False),
        (400, "AWS.SimpleQueueService.NonExistentQueue", False),
    ],
)
def test_classification(status: int, code: str, retryable: bool) -> None:
    error = to_exception(AwsErrorInfo(status, code, "m", "rid"), "sqs", "SendMessageBatch")
    assert isinstance(error, TransientError if retryable else PermanentError)
    assert not isinstance(error, AccessDenied)
    assert error.code == code
    assert error.request_id == "rid"
    assert str(error) == f"sqs SendMessageBatch: {code} (HTTP {status}): m"


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (403, "AccessDenied"),
        (400, "AccessDeniedException"),
        (400, "KMS.AccessDeniedException"),
        (403, "InvalidClientTokenId"),
        (403, "SignatureDoesNotMatch"),
        (400, "UnrecognizedClientException"),
    ],
)
def test_a_missing_permission_is_a_configuration_error(status: int, code: str) -> None:
    """No retry can grant a permission: exit 2 naming what is missing (invariant 8)."""
    error = to_exception(AwsErrorInfo(status, code, "m", "rid"), "sqs", "DeleteMessageBatch")
    assert isinstance(error, AccessDenied) and isinstance(error, ConfigError)
    assert f"sqs DeleteMessageBatch: {code} (HTTP {status}): m" in str(error)
    assert "sqs:DeleteMessageBatch" in str(error) and "AWS credentials" in str(error)


def test_decode_result_accepts_empty_body() -> None:
    assert decode_result(b"") == {}
    assert decode_result(b'{"MessageId":"m"}') == {"MessageId": "m"}


def test_full_jitter_backoff_is_capped() -> None:
    policy = RetryPolicy(base_delay_s=0.5, max_delay_s=4.0)
    assert [backoff_s(policy, i, 1.0) for i in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff_s(policy, 2, 0.25) == 0.5
    assert backoff_s(policy, 0, 0.0) == 0.0
    assert backoff_s(policy, 10_000, 0.5) == 2.0  # no overflow however long an outage lasts


def test_retry_quota_spends_and_refunds_within_capacity() -> None:
    quota = RetryQuota(12)
    assert quota.acquire(5)
    assert quota.acquire(5)
    assert not quota.acquire(5)  # 2 left: no retry
    quota.release(5)
    assert quota.available_tokens == 7
    quota.release(100)
    assert quota.available_tokens == 12  # never above capacity


def test_timeouts_cost_more() -> None:
    policy = RetryPolicy()
    assert policy.retry_cost(timeout=True) > policy.retry_cost(timeout=False)


def test_a_missing_permission_names_the_iam_action_not_the_signing_name() -> None:
    """CloudWatch signs as "monitoring", but its IAM actions are cloudwatch:*."""
    info = AwsErrorInfo(400, "AccessDeniedException", "m", "rid")
    error = to_exception(info, "monitoring", "GetMetricData")
    assert "needs cloudwatch:GetMetricData;" in str(error)
