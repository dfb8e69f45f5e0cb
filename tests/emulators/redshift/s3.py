"""Reading COPY's input from S3 (moto in the test suite) with boto3, as Redshift
does: every object whose key starts with the path, and its errors as Redshift
words them (S3ServiceException:..., "The specified S3 prefix ... does not exist").
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from tests.emulators.redshift.errors import SqlError
from tests.emulators.redshift.settings import Settings

_CONFIG = Config(
    retries={"total_max_attempts": 2, "mode": "standard"},
    connect_timeout=2,
    read_timeout=10,
    s3={"addressing_style": "path"},
)
# boto3 sessions load the service models once; clients are thread safe and shared
# by every emulator in the process (creating one costs ~0.1 s of CPU).
T = TypeVar("T")

_clients: dict[tuple[str, str, str, str | None, str], Any] = {}
_clients_lock = threading.Lock()


def no_s3_endpoint() -> SqlError:
    return SqlError(
        "S3ServiceException:emulator has no S3 endpoint (Settings.s3_endpoint_url is None),"
        "Status 0,Error NoS3Endpoint,CanRetry 0"
    )


class S3Reader:
    def __init__(self, settings: Settings) -> None:
        self._endpoint_url = settings.s3_endpoint_url
        self._access_key = settings.s3_access_key or settings.access_key
        self._secret_key = settings.s3_secret_key or settings.secret_key
        self._session_token = settings.s3_session_token
        self._default_region = settings.s3_region

    def read(
        self, bucket: str, prefix: str, region: str | None, check: Callable[[], None]
    ) -> list[tuple[str, bytes]]:
        """(s3://bucket/key, body) of every object under the prefix, in key order;
        `check` raises when the statement is cancelled."""
        if self._endpoint_url is None:
            raise no_s3_endpoint()
        client = self._client(region or self._default_region)
        keys = self._keys(client, bucket, prefix)
        if not keys:
            raise SqlError(f"The specified S3 prefix '{prefix}' does not exist")
        objects: list[tuple[str, bytes]] = []
        for key in keys:
            check()
            objects.append((f"s3://{bucket}/{key}", _get(client, bucket, key)))
        return objects

    def _keys(self, client: Any, bucket: str, prefix: str) -> list[str]:
        def list_all() -> list[str]:
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            return [item["Key"] for page in pages for item in page.get("Contents", [])]

        return sorted(_call(list_all))

    def _client(self, region: str) -> Any:
        assert self._endpoint_url is not None
        key = (self._endpoint_url, self._access_key, self._secret_key, self._session_token, region)
        with _clients_lock:
            client = _clients.get(key)
            if client is None:
                client = boto3.session.Session().client(
                    "s3",
                    endpoint_url=self._endpoint_url,
                    region_name=region,
                    aws_access_key_id=self._access_key,
                    aws_secret_access_key=self._secret_key,
                    aws_session_token=self._session_token,
                    config=_CONFIG,
                )
                _clients[key] = client
            return client


def _get(client: Any, bucket: str, key: str) -> bytes:
    def get() -> bytes:
        return bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read())

    return _call(get)


def _call(operation: Callable[[], T]) -> T:
    try:
        return operation()
    except ClientError as exc:
        raise s3_service_exception(exc.response) from exc
    except BotoCoreError as exc:
        raise SqlError(f"S3ServiceException:{exc},Status 0,Error {type(exc).__name__}") from exc


def s3_service_exception(response: Mapping[str, Any]) -> SqlError:
    """Redshift's text for an error answer of S3."""
    error = response.get("Error", {})
    metadata = response.get("ResponseMetadata", {})
    status = metadata.get("HTTPStatusCode", 0)
    return SqlError(
        f"S3ServiceException:{error.get('Message', '')},Status {status},"
        f"Error {error.get('Code', 'Unknown')},Rid {metadata.get('RequestId', '')},"
        f"ExtRid {metadata.get('HostId', '')},CanRetry 1"
    )
