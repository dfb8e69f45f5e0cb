"""One httpx client for every AWS call the process makes: sign, send, retry, map errors.

JSON-protocol calls (SQS, the Redshift Data API) go through ``call``; REST calls
(S3) through ``send`` with their own response reader. Both share the HTTP
client, the credentials, the retry policy and each endpoint's retry budget.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
import msgspec
import trio

from afpipe import metrics
from afpipe.aws.credentials import CredentialCache
from afpipe.aws.responses import (
    EXPIRED_CREDENTIALS_CODES,
    decode_result,
    parse_error,
    to_exception,
)
from afpipe.aws.retry import RetryPolicy, RetryQuota, backoff_s
from afpipe.aws.service import AwsService
from afpipe.aws.signing import HttpRequest, encode_payload, json_request, sign_request
from afpipe.errors import PermanentError, TransientError

logger = logging.getLogger("afpipe.aws")

T = TypeVar("T")

# Transport limits only; how long an operation may take is the caller's decision.
# SQS long polls hold a response for up to 20 s, so reads wait longer than that.
DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=35.0, write=30.0, pool=30.0)


class AwsClient:
    """``async with AwsClient() as aws: await aws.call(service, "Op", {...})``."""

    def __init__(
        self,
        *,
        credentials: CredentialCache | None = None,
        policy: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.credentials = credentials or CredentialCache()
        self.policy = policy or RetryPolicy()
        self._rand = rand
        self._quotas: dict[tuple[str, str], RetryQuota] = {}
        self._http = httpx.AsyncClient(transport=transport, timeout=timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def quota(self, service: AwsService) -> RetryQuota:
        """The retry budget shared by every call to this service endpoint."""
        key = (service.signing_name, service.endpoint_url)
        if key not in self._quotas:
            self._quotas[key] = RetryQuota(self.policy.quota_tokens)
        return self._quotas[key]

    async def backoff(
        self, service: AwsService, retry_index: int, *, after_timeout: bool = False
    ) -> bool:
        """Sleep before retry ``retry_index`` (0 = the first retry).

        Returns False, at once, when the attempts or the service's budget are
        spent: the caller then raises its last error.
        """
        if retry_index + 1 >= self.policy.max_attempts:
            return False
        if not self.quota(service).acquire(self.policy.retry_cost(timeout=after_timeout)):
            logger.warning("%s retry budget exhausted; not retrying", service.signing_name)
            return False
        await trio.sleep(backoff_s(self.policy, retry_index, self._rand()))
        return True

    async def call(
        self, service: AwsService, operation: str, payload: Mapping[str, Any]
    ) -> dict[str, Any]:
        """One JSON-protocol operation, retried when that can help; its result object.

        Raises ``TransientError`` (after retries) or ``PermanentError``.
        """
        request = json_request(service, operation, encode_payload(payload))
        return await self.send(service, operation, request, _json_reader(service, operation))

    async def send(
        self,
        service: AwsService,
        operation: str,
        request: HttpRequest,
        read: Callable[[httpx.Response], T],
    ) -> T:
        """One request of any protocol, signed afresh and retried when that can help.

        ``read`` turns a response into the result, or raises ``TransientError``
        (retried) or ``PermanentError``; a transport failure is a ``TransientError``.
        """
        refund_tokens = self.policy.success_refund_tokens
        retry_index = 0
        while True:
            try:
                result = await self._attempt(service, operation, request, read)
            except TransientError as exc:
                error = exc
            else:  # like botocore: a success after retries gives back the last retry's cost
                self.quota(service).release(refund_tokens)
                return result
            timeout = isinstance(error.__cause__, httpx.TimeoutException)
            if not await self.backoff(service, retry_index, after_timeout=timeout):
                raise error
            logger.info("retrying %s %s after %s", service.signing_name, operation, error.code)
            refund_tokens = self.policy.retry_cost(timeout=timeout)
            retry_index += 1

    async def _attempt(
        self,
        service: AwsService,
        operation: str,
        request: HttpRequest,
        read: Callable[[httpx.Response], T],
    ) -> T:
        headers = sign_request(service, request, await self.credentials.get())
        metrics.AWS_REQUESTS.labels(service.signing_name, operation).inc()
        built = self._http.build_request(
            request.method, request.url, content=request.body, headers=headers
        )
        try:
            response = await self._http.send(built)
        # DecodingError (a Content-Encoding that does not decode: a cut or mangled
        # answer) is no TransportError, yet just as worth another attempt.
        except (httpx.TransportError, httpx.DecodingError) as exc:
            name = f"{service.signing_name} {operation}"
            raise TransientError(
                f"{name}: {type(exc).__name__}: {exc}", code=type(exc).__name__
            ) from exc
        try:
            return read(response)
        except (TransientError, PermanentError) as exc:
            if exc.code in EXPIRED_CREDENTIALS_CODES:
                self.credentials.invalidate()
            raise


def _json_reader(service: AwsService, operation: str) -> Callable[[httpx.Response], dict[str, Any]]:
    def read(response: httpx.Response) -> dict[str, Any]:
        if not response.is_success:
            info = parse_error(response.status_code, response.headers, response.content)
            raise to_exception(info, service.signing_name, operation)
        try:
            return decode_result(response.content)
        except msgspec.DecodeError as exc:
            request_id = response.headers.get("x-amzn-requestid", "")
            text = f"{service.signing_name} {operation}: undecodable response: {exc}"
            raise TransientError(text, code="InvalidResponse", request_id=request_id) from exc

    return read
