"""Choose and open the queue and warehouse backends from the settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import msgspec

from afpipe.aws import AwsClient, AwsService, redshift_data_service, sqs_api, sqs_service
from afpipe.aws.s3 import S3Client
from afpipe.aws.s3_api import parse_s3_uri, s3_endpoint
from afpipe.config import Settings
from afpipe.errors import ConfigError
from afpipe.queue.base import Queue
from afpipe.queue.embedded import EmbeddedQueue
from afpipe.queue.sqs import SqsQueue
from afpipe.warehouse.base import Warehouse
from afpipe.warehouse.embedded import EmbeddedWarehouse
from afpipe.warehouse.redshift import RedshiftWarehouse, Stager, Staging, Target

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


def describe(settings: Settings) -> dict[str, str]:
    """Which backends are in use, for the startup log."""
    data_dir = Path(settings.data_dir)
    embedded_queue = f"embedded:{data_dir / 'queue.db'}"
    described = {
        "queue": settings.sqs_queue_url if settings.uses_sqs else embedded_queue,
        "warehouse": _describe_target(settings, "primary", data_dir / "warehouse.db"),
    }
    if settings.secondary_redshift_enabled:
        secondary_file = data_dir / "warehouse-secondary.db"
        described["secondary"] = _describe_target(settings, "secondary", secondary_file)
        described["secondary_retry_queue"] = settings.secondary_retry_queue_url or "none"
    where = staging(settings)
    if where is not None:
        described["s3_staging"] = f"s3://{where.bucket}/{where.prefix} ({where.region})"
    return described


def _describe_target(settings: Settings, which: str, embedded: Path) -> str:
    target = redshift_target(settings, which)
    if target is None:
        return f"embedded:{embedded}"
    return f"redshift:{target.cluster_identifier or target.workgroup_name}/{target.database}"


def embedded_queue_path(settings: Settings) -> Path:
    return Path(settings.data_dir) / "queue.db"


def endpoint_env(settings: Settings) -> dict[str, str]:
    """The AWS SDK endpoint variables, as the settings hold them (.env included)."""
    return {
        "AWS_ENDPOINT_URL": settings.aws_endpoint_url,
        "AWS_ENDPOINT_URL_SQS": settings.aws_endpoint_url_sqs,
        "AWS_ENDPOINT_URL_REDSHIFT_DATA": settings.aws_endpoint_url_redshift_data,
        "AWS_ENDPOINT_URL_S3": settings.aws_endpoint_url_s3,
    }


def uses_aws(settings: Settings) -> bool:
    secondary_aws = settings.secondary_redshift_enabled and (
        redshift_target(settings, "secondary") is not None
        or bool(settings.secondary_retry_queue_url)
    )
    return settings.uses_sqs or settings.uses_redshift or secondary_aws


@asynccontextmanager
async def open_aws(settings: Settings) -> AsyncIterator[AwsClient | None]:
    """The process's one AWS client, or None when no AWS backend is configured."""
    if not uses_aws(settings):
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


def redshift_target(settings: Settings, which: str) -> Target | None:
    """The Data API identity of the primary or secondary; None means embedded."""
    if which == "primary":
        if not settings.uses_redshift:
            return None
        return Target(
            database=settings.redshift_database,
            cluster_identifier=settings.redshift_cluster_identifier,
            workgroup_name=settings.redshift_workgroup_name,
            db_user=settings.redshift_db_user,
            secret_arn=settings.redshift_secret_arn,
        )
    if not (
        settings.secondary_redshift_cluster_identifier or settings.secondary_redshift_workgroup_name
    ):
        return None
    return Target(
        database=settings.secondary_redshift_database or settings.redshift_database,
        cluster_identifier=settings.secondary_redshift_cluster_identifier,
        workgroup_name=settings.secondary_redshift_workgroup_name,
        db_user=settings.secondary_redshift_db_user,
        secret_arn=settings.secondary_redshift_secret_arn,
    )


def staging(settings: Settings) -> Staging | None:
    """Where large Redshift loads are staged for COPY; None when staging is off."""
    if not settings.s3_staging_uri:
        return None
    location = parse_s3_uri(settings.s3_staging_uri)  # validated with the settings
    return Staging(
        bucket=location.bucket,
        prefix=location.prefix,
        iam_role=settings.copy_iam_role,
        region=settings.s3_staging_region or settings.aws_region,
    )


def stager(settings: Settings, aws: AwsClient) -> Stager | None:
    """The S3 side of staged loads (one for primary and secondary alike), or None."""
    where = staging(settings)
    if where is None:
        return None
    return Stager(S3Client(aws, s3_endpoint(where.region, endpoint_env(settings))), where)


def _redshift_service(settings: Settings, which: str) -> AwsService:
    region = settings.aws_region
    if which == "secondary":
        region = settings.secondary_aws_region or region
        if settings.secondary_redshift_endpoint:  # PrivateLink / VPC endpoint
            service = redshift_data_service(region, {})
            endpoint = settings.secondary_redshift_endpoint.rstrip("/")
            return msgspec.structs.replace(service, endpoint_url=endpoint)
    return redshift_data_service(region, endpoint_env(settings))


@asynccontextmanager
async def open_warehouse(
    settings: Settings, aws: AwsClient | None, which: str = "primary"
) -> AsyncIterator[Warehouse]:
    """The primary or secondary warehouse: Redshift when configured, else an SQLite file."""
    table = settings.redshift_table_name
    if which == "secondary":
        table = settings.secondary_redshift_table_name or table
    target = redshift_target(settings, which)
    warehouse: Warehouse
    if target is not None:
        if aws is None:
            raise ConfigError("REDSHIFT_CLUSTER_IDENTIFIER: no AWS client (internal error)")
        warehouse = RedshiftWarehouse(
            aws,
            _redshift_service(settings, which),
            target,
            table,
            name=which,
            statement_timeout_s=settings.redshift_statement_timeout_ms / 1000,
            max_wait_s=settings.redshift_max_retries,
            dedup_window_s=settings.dedup_window_s,
            stager=stager(settings, aws),
            max_unclassified_failures=settings.max_unclassified_failures,
        )
    else:
        filename = "warehouse.db" if which == "primary" else "warehouse-secondary.db"
        warehouse = EmbeddedWarehouse(Path(settings.data_dir) / filename, table, name=which)
    try:
        yield warehouse
    finally:
        await warehouse.aclose()
