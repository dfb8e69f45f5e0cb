"""Choose and open the queue and warehouse backends from the settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from afpipe.aws import AwsClient, sqs_service
from afpipe.config import Settings
from afpipe.errors import ConfigError
from afpipe.queue.base import Queue
from afpipe.queue.embedded import EmbeddedQueue
from afpipe.queue.sqs import SqsQueue
from afpipe.warehouse.base import Warehouse
from afpipe.warehouse.embedded import EmbeddedWarehouse

# Our dead-letter message attributes count towards SQS's size limit, so bodies
# stay this far below AFPIPE_QUEUE_MAX_MESSAGE_BYTES: any body can be dead-lettered.
DEAD_LETTER_HEADROOM_BYTES = 2048


def body_limit_bytes(settings: Settings) -> int:
    return settings.queue_max_message_bytes - DEAD_LETTER_HEADROOM_BYTES


def describe(settings: Settings) -> dict[str, str]:
    """Which backends are in use, for the startup log."""
    data_dir = Path(settings.data_dir)
    embedded_queue = f"embedded:{data_dir / 'queue.db'}"
    return {
        "queue": settings.sqs_queue_url if settings.uses_sqs else embedded_queue,
        "warehouse": (
            f"redshift:{settings.redshift_cluster_identifier or settings.redshift_workgroup_name}"
            if settings.uses_redshift
            else f"embedded:{data_dir / 'warehouse.db'}"
        ),
    }


def embedded_queue_path(settings: Settings) -> Path:
    return Path(settings.data_dir) / "queue.db"


def endpoint_env(settings: Settings) -> dict[str, str]:
    """The AWS SDK endpoint variables, as the settings hold them (.env included)."""
    return {
        "AWS_ENDPOINT_URL": settings.aws_endpoint_url,
        "AWS_ENDPOINT_URL_SQS": settings.aws_endpoint_url_sqs,
        "AWS_ENDPOINT_URL_REDSHIFT_DATA": settings.aws_endpoint_url_redshift_data,
    }


@asynccontextmanager
async def open_aws(settings: Settings) -> AsyncIterator[AwsClient | None]:
    """The process's one AWS client, or None when no AWS backend is configured."""
    if not (settings.uses_sqs or settings.uses_redshift):
        yield None
        return
    async with AwsClient() as aws:
        yield aws


def sqs_queue(settings: Settings, aws: AwsClient | None, url: str, dlq_url: str = "") -> SqsQueue:
    if aws is None:
        raise ConfigError("SQS_QUEUE_URL: no AWS client (internal error)")
    service = sqs_service(settings.aws_region, endpoint_env(settings))
    return SqsQueue(aws, service, url, dlq_url=dlq_url or None)


@asynccontextmanager
async def open_queue(settings: Settings, aws: AwsClient | None) -> AsyncIterator[Queue]:
    queue: Queue
    if settings.uses_sqs:
        queue = sqs_queue(settings, aws, settings.sqs_queue_url, settings.dlq_url)
    else:
        queue = EmbeddedQueue(embedded_queue_path(settings))
    try:
        yield queue
    finally:
        await queue.aclose()


@asynccontextmanager
async def open_warehouse(settings: Settings, aws: AwsClient | None) -> AsyncIterator[Warehouse]:
    if settings.uses_redshift:
        raise ConfigError(
            "REDSHIFT_CLUSTER_IDENTIFIER: the Redshift backend is not available in this build"
        )
    warehouse = EmbeddedWarehouse(
        Path(settings.data_dir) / "warehouse.db", settings.redshift_table_name
    )
    try:
        yield warehouse
    finally:
        await warehouse.aclose()
