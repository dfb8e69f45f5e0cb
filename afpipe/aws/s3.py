"""A small S3 client on ``AwsClient``: the object operations afpipe needs.

Requests are signed by botocore's ``S3SigV4Auth`` (which signs the payload's
SHA-256, so S3 refuses a body altered on the way) and sent, retried and
budgeted by the process's one ``AwsClient``. Errors come back as afpipe's:
``TransientError`` (5xx, SlowDown, throttling, transport) after retries,
``PermanentError`` otherwise (AccessDenied, NoSuchBucket, other 4xx).
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

from afpipe.aws import s3_api
from afpipe.aws.client import AwsClient
from afpipe.aws.responses import to_exception
from afpipe.aws.s3_api import S3Endpoint
from afpipe.aws.signing import HttpRequest


class S3Client:
    """``await S3Client(aws, s3_endpoint(region, env)).put_object(bucket, key, body)``."""

    def __init__(self, aws: AwsClient, endpoint: S3Endpoint) -> None:
        self.aws = aws
        self.endpoint = endpoint

    async def put_object(
        self,
        bucket: str,
        key: str,
        body: bytes,
        *,
        content_type: str = "application/octet-stream",
    ) -> str:
        """Store ``body`` under ``key``; its ETag."""
        url = s3_api.object_url(self.endpoint, bucket, key)
        request = HttpRequest("PUT", url, {"Content-Type": content_type}, body, s3=True)
        response = await self._send(f"PutObject s3://{bucket}/{key}", request)
        return str(response.headers.get("ETag", ""))

    async def delete_object(self, bucket: str, key: str) -> None:
        """Delete ``key``; S3 answers success when there is no such key."""
        url = s3_api.object_url(self.endpoint, bucket, key)
        await self._send(f"DeleteObject s3://{bucket}/{key}", HttpRequest("DELETE", url, s3=True))

    async def _send(self, operation: str, request: HttpRequest) -> httpx.Response:
        service = self.endpoint.service
        return await self.aws.send(service, operation, request, _reader(operation))


def _reader(operation: str) -> Callable[[httpx.Response], httpx.Response]:
    def read(response: httpx.Response) -> httpx.Response:
        if not response.is_success:
            info = s3_api.parse_error(response.status_code, response.headers, response.content)
            raise to_exception(info, "s3", operation)
        return response

    return read
