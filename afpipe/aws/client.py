"""One httpx client for every AWS call the process makes: sign, send, retry, map errors."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Self

import httpx
import msgspec
import trio

from afpipe.aws.credentials import CredentialCache
from afpipe.aws.responses import (
    EXPIRED_CREDENTIALS_CODES,
    decode_result,
    parse_error,
    to_exception,
)
from afpipe.aws.retry import RetryPolicy, RetryQuota, backoff_s
from afpipe.aws.service import AwsService
from afpipe.aws.signing import encode_payload, sign
from afpipe.errors import PermanentError, TransientError

logger = logging.getLogger("afpipe.aws")

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
        body = encode_payload(payload)
        refund_tokens = self.policy.success_refund_tokens
        retry_index = 0
        while True:
            try:
                result = await self._attempt(service, operation, body)
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

    async def _attempt(self, service: AwsService, operation: str, body: bytes) -> dict[str, Any]:
        headers = sign(service, operation, body, await self.credentials.get())
        try:
            response = await self._http.post(service.url, content=body, headers=headers)
        except httpx.TransportError as exc:
            name = f"{service.signing_name} {operation}"
            raise TransientError(
                f"{name}: {type(exc).__name__}: {exc}", code=type(exc).__name__
            ) from exc
        if not response.is_success:
            raise self._error(service, operation, response)
        try:
            return decode_result(response.content)
        except msgspec.DecodeError as exc:
            request_id = response.headers.get("x-amzn-requestid", "")
            text = f"{service.signing_name} {operation}: undecodable response: {exc}"
            raise TransientError(text, code="InvalidResponse", request_id=request_id) from exc

    def _error(
        self, service: AwsService, operation: str, response: httpx.Response
    ) -> TransientError | PermanentError:
        info = parse_error(response.status_code, response.headers, response.content)
        if info.code in EXPIRED_CREDENTIALS_CODES:
            self.credentials.invalidate()
        return to_exception(info, service.signing_name, operation)
