"""Open the queue and warehouse backends the settings' sections name."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from afpipe.aws import AwsClient, sqs_api
from afpipe.aws.s3 import S3Client
from afpipe.config import Settings
from afpipe.config.sections import QueueSection, Sections, StagingSection, WarehouseSection
from afpipe.queue.base import Queue
from afpipe.queue.embedded import EmbeddedQueue
from afpipe.queue.sqs import SqsQueue
from afpipe.queue.sqs_age import CloudWatchAge
from afpipe.warehouse.base import Warehouse
from afpipe.warehouse.embedded import EmbeddedWarehouse
from afpipe.warehouse.redshift import RedshiftWarehouse, Stager

# Our dead-letter message attributes count towards SQS's size limit (name, type and
# value of each, in UTF-8 bytes), so bodies stay this far below
# AFPIPE_QUEUE_MAX_MESSAGE_BYTES: any body can be dead-lettered with the longest
# reason. Both string values are cut to MAX_REASON_CHARS characters of up to 4 bytes.
_STRING_ATTRIBUTE_BYTES = len("String") + 4 * sqs_api.MAX_REASON_CHARS
DEAD_LETTER_HEADROOM_BYTES = (
    len(sqs_api.REASON_ATTRIBUTE)
    + _STRING_ATTRIBUTE_BYTES
    + len(sqs_api.SOURCE_ID_ATTRIBUTE)
    + _STRING_ATTRIBUTE_BYTES
    + len(sqs_api.RECEIVE_COUNT_ATTRIBUTE)
    + len("Number")
    + 20  # digits of a 64-bit count
)


def body_limit_bytes(settings: Settings) -> int:
    return settings.queue_max_message_bytes - DEAD_LETTER_HEADROOM_BYTES


@asynccontextmanager
async def open_aws(sections: Sections) -> AsyncIterator[AwsClient | None]:
    """The process's one AWS client, or None when no AWS backend is configured."""
    if not sections.uses_aws:
        yield None
        return
    async with AwsClient() as aws:
        yield aws


def sqs_queue(section: QueueSection, aws: AwsClient | None, url: str) -> SqsQueue:
    """The SQS queue at ``url`` (the main one, the secondary's retry queue); dead
    letters of the main one go to its DLQ; its age from CloudWatch if configured."""
    dlq_url = section.dlq_url if url == section.url else ""
    client = _aws(aws)
    age = None if section.cloudwatch is None else CloudWatchAge(client, section.cloudwatch, url)
    return SqsQueue(client, section.sqs, url, dlq_url=dlq_url or None, age=age)


@asynccontextmanager
async def open_queue(section: QueueSection, aws: AwsClient | None) -> AsyncIterator[Queue]:
    queue: Queue
    if section.uses_sqs:
        queue = sqs_queue(section, aws, section.url)
    else:
        queue = EmbeddedQueue(section.embedded_path)
    try:
        yield queue
    finally:
        await queue.aclose()


def stager(section: StagingSection, aws: AwsClient) -> Stager:
    """The S3 side of staged loads (one for primary and secondary alike)."""
    return Stager(S3Client(aws, section.s3), section.staging)


@asynccontextmanager
async def open_warehouse(
    section: WarehouseSection, aws: AwsClient | None, staging: StagingSection | None
) -> AsyncIterator[Warehouse]:
    """The warehouse ``section`` names: Redshift when configured, else an SQLite file."""
    warehouse: Warehouse
    if section.redshift is not None:
        redshift = section.redshift
        client = _aws(aws)
        warehouse = RedshiftWarehouse(
            client,
            redshift.service,
            redshift.target,
            section.table,
            name=section.name,
            statement_timeout_s=redshift.statement_timeout_s,
            max_wait_s=redshift.max_wait_s,
            dedup_window_s=redshift.dedup_window_s,
            stager=stager(staging, client) if staging is not None else None,
            max_unclassified_failures=redshift.max_unclassified_failures,
        )
    else:
        warehouse = EmbeddedWarehouse(section.embedded_path, section.table, name=section.name)
    try:
        yield warehouse
    finally:
        await warehouse.aclose()


def _aws(aws: AwsClient | None) -> AwsClient:
    if aws is None:  # open_aws opens one whenever the sections use AWS
        raise RuntimeError("an AWS backend without an AWS client: a bug in afpipe")
    return aws
