"""Parse JSON-protocol responses and classify errors; no I/O.

An AWS error is mapped here, once, into afpipe's hierarchy: ``TransientError``
(throttling, 5xx, expired credentials: trying again later can work) or
``PermanentError`` (validation, access, missing resource: it cannot).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from afpipe.errors import AccessDenied, PermanentError, TransientError

THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "RequestThrottled",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "SlowDown",
        "EC2ThrottledException",
        "AWS.SimpleQueueService.RequestThrottled",
        "KmsThrottled",
        "KMS.ThrottlingException",
        "ActiveStatementsExceededException",
        "ActiveSessionsExceededException",
    }
)
TRANSIENT_CODES = frozenset(
    {
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "InternalServerException",
        "ServiceUnavailable",
        "AWS.SimpleQueueService.ServiceUnavailable",
        # S3: our clock is off (signed afresh on retry), a conflicting operation on the key
        "RequestTimeTooSkewed",
        "OperationAborted",
    }
)
# The identity lacks a permission, or the credentials are not valid at all: an
# operator must act (exit 2), retrying cannot help.
ACCESS_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "AWS.SimpleQueueService.AccessDenied",
        "KMS.AccessDeniedException",
        "UnauthorizedOperation",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidSignatureException",
        "MissingAuthenticationToken",
    }
)
# The credentials we signed with have expired: resolve them again and retry.
EXPIRED_CREDENTIALS_CODES = frozenset({"ExpiredToken", "ExpiredTokenException", "RequestExpired"})
RETRYABLE_CODES = THROTTLING_CODES | TRANSIENT_CODES | EXPIRED_CREDENTIALS_CODES
_MAX_MESSAGE_CHARS = 500

_decoder = msgspec.json.Decoder(dict[str, Any])


class AwsErrorInfo(msgspec.Struct, frozen=True):
    status: int
    code: str
    message: str
    request_id: str

    @property
    def retryable(self) -> bool:
        return self.status >= 500 or self.status == 429 or self.code in RETRYABLE_CODES


def decode_result(body: bytes) -> dict[str, Any]:
    """A successful response's JSON object (some operations answer with no body)."""
    return _decoder.decode(body) if body.strip() else {}


def error_code(raw: str) -> str:
    """``com.amazonaws.sqs#QueueDoesNotExist`` or ``Code:http://...`` -> the bare code."""
    return raw.split(":", 1)[0].rsplit("#", 1)[-1]


def parse_error(status: int, headers: Mapping[str, str], body: bytes) -> AwsErrorInfo:
    lower = {name.lower(): value for name, value in headers.items()}
    try:
        doc = decode_result(body)
    except msgspec.DecodeError:
        doc = {}  # an HTML page from a proxy or load balancer: the status says enough
    code = str(doc.get("__type") or doc.get("code") or lower.get("x-amzn-errortype") or status)
    code = error_code(code)
    if query_error := lower.get("x-amzn-query-error"):  # SQS: "AWS.SimpleQueueService.X;Sender"
        code = query_error.split(";", 1)[0] or code
    message = str(doc.get("message") or doc.get("Message") or "")[:_MAX_MESSAGE_CHARS]
    return AwsErrorInfo(status, code, message, lower.get("x-amzn-requestid", ""))


# Where a service's IAM actions are not prefixed with its signing name.
IAM_PREFIXES = {"monitoring": "cloudwatch"}


def to_exception(
    info: AwsErrorInfo, signing_name: str, operation: str
) -> TransientError | PermanentError | AccessDenied:
    text = f"{signing_name} {operation}: {info.code} (HTTP {info.status})"
    if info.message:
        text += f": {info.message}"
    if info.code in ACCESS_DENIED_CODES:
        action = f"{IAM_PREFIXES.get(signing_name, signing_name)}:{operation}"
        return AccessDenied(
            f"AWS credentials / IAM policy: {text} (the identity afpipe runs as needs"
            f" {action}; see README, IAM)"
        )
    kind = TransientError if info.retryable else PermanentError
    return kind(text, code=info.code, request_id=info.request_id)
