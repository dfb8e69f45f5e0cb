"""Build and SigV4-sign JSON-protocol requests; no I/O.

botocore does the signing itself (``SigV4Auth`` on an ``AWSRequest``), so the
canonical request, scope and signature are exactly what the AWS SDKs send.
The only input not passed in is the clock: botocore reads it when signing,
which is also why every retry must be signed again.
"""

from __future__ import annotations

from typing import Any

import msgspec
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials

from afpipe.aws.service import AwsService

_encoder = msgspec.json.Encoder()


def encode_payload(payload: Any) -> bytes:
    """The request body: compact JSON, UTF-8."""
    return _encoder.encode(payload)


def unsigned_headers(service: AwsService, operation: str) -> dict[str, str]:
    return {
        "Content-Type": service.content_type,
        "X-Amz-Target": f"{service.target_prefix}.{operation}",
        **dict(service.extra_headers),
    }


def sign(
    service: AwsService, operation: str, body: bytes, credentials: ReadOnlyCredentials
) -> dict[str, str]:
    """Headers for one attempt: the protocol headers plus date, token and Authorization."""
    request = AWSRequest(
        method="POST", url=service.url, headers=unsigned_headers(service, operation), data=body
    )
    SigV4Auth(credentials, service.signing_name, service.region).add_auth(request)
    return {name: str(value) for name, value in request.headers.items()}
