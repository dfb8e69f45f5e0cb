"""Build and SigV4-sign requests; no I/O.

botocore does the signing itself (``SigV4Auth``, or ``S3SigV4Auth`` for S3,
on an ``AWSRequest``), so the canonical request, scope and signature are
exactly what the AWS SDKs send. The only input not passed in is the clock:
botocore reads it when signing, which is also why every retry must be signed
again.
"""

from __future__ import annotations

from typing import Any

import msgspec
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials

from afpipe.aws.service import AwsService

_encoder = msgspec.json.Encoder()


class HttpRequest(msgspec.Struct, frozen=True):
    """One request before signing. ``url`` is final: its path already quoted the
    way the service canonicalizes it (S3 signs the path exactly as sent)."""

    method: str
    url: str
    headers: dict[str, str] = {}
    body: bytes = b""
    s3: bool = False  # sign with S3SigV4Auth (adds x-amz-content-sha256)


def encode_payload(payload: Any) -> bytes:
    """The request body: compact JSON, UTF-8."""
    return _encoder.encode(payload)


def unsigned_headers(service: AwsService, operation: str) -> dict[str, str]:
    return {
        "Content-Type": service.content_type,
        "X-Amz-Target": f"{service.target_prefix}.{operation}",
        **dict(service.extra_headers),
    }


def json_request(service: AwsService, operation: str, body: bytes) -> HttpRequest:
    """A JSON-protocol call: a POST to the endpoint's root."""
    return HttpRequest("POST", service.url, unsigned_headers(service, operation), body)


def sign_request(
    service: AwsService, request: HttpRequest, credentials: ReadOnlyCredentials
) -> dict[str, str]:
    """Headers for one attempt: the request's own plus date, token and Authorization."""
    prepared = AWSRequest(
        method=request.method, url=request.url, headers=dict(request.headers), data=request.body
    )
    auth = S3SigV4Auth if request.s3 else SigV4Auth
    auth(credentials, service.signing_name, service.region).add_auth(prepared)
    return {name: str(value) for name, value in prepared.headers.items()}
