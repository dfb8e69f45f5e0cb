"""The settings as the backends use them: one frozen section each, parsed once.

``sections(settings)`` is pure: it resolves which backends the settings name
(SQS or the embedded queue, Redshift or an SQLite file for the primary and the
secondary, S3 staging or none), the Data API identity and endpoint of each
warehouse, and the staging location, so nothing downstream decides "primary or
secondary" by name or reads a setting again.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from pathlib import Path

import msgspec

from afpipe.aws.s3_api import S3Endpoint, parse_s3_uri, s3_endpoint
from afpipe.aws.service import (
    AwsService,
    cloudwatch_service,
    redshift_data_service,
    sqs_service,
)
from afpipe.config.checks import SettingProblem
from afpipe.config.contract import Settings
from afpipe.sources import Network, parse_networks
from afpipe.warehouse.redshift import Staging, Target


class QueueSection(msgspec.Struct, frozen=True, kw_only=True):
    """The main queue, SQS or the embedded SQLite file, and the other SQS queues."""

    uses_sqs: bool
    url: str  # the SQS queue URL, or "embedded:<file>"
    embedded_path: Path
    sqs: AwsService  # for every SQS queue: the main one, the DLQ, the secondary's retry
    dlq_url: str = ""
    secondary_retry_url: str = ""
    # Where the SQS queues' oldest message age is read (AFPIPE_SQS_AGE_FROM_CLOUDWATCH)
    cloudwatch: AwsService | None = None


class RedshiftSection(msgspec.Struct, frozen=True, kw_only=True):
    target: Target
    service: AwsService
    statement_timeout_s: float
    max_wait_s: float
    dedup_window_s: float
    max_unclassified_failures: int


class WarehouseSection(msgspec.Struct, frozen=True, kw_only=True):
    """One load target: Redshift (``redshift`` set) or an SQLite file."""

    name: str  # "primary" or "secondary": the label of its metrics and logs
    table: str
    embedded_path: Path
    redshift: RedshiftSection | None = None

    def describe(self) -> str:
        if self.redshift is None:
            return f"embedded:{self.embedded_path}"
        target = self.redshift.target
        return f"redshift:{target.cluster_identifier or target.workgroup_name}/{target.database}"


class StagingSection(msgspec.Struct, frozen=True, kw_only=True):
    staging: Staging
    s3: S3Endpoint

    def describe(self) -> str:
        where = self.staging
        return f"s3://{where.bucket}/{where.prefix} ({where.region})"


class Sections(msgspec.Struct, frozen=True, kw_only=True):
    allowed_networks: tuple[Network, ...]  # AFPIPE_ALLOWED_CIDRS; empty: anyone
    trusted_proxies: tuple[Network, ...]  # AFPIPE_TRUSTED_PROXIES
    cors_origins: tuple[str, ...]  # AFPIPE_CORS_ORIGINS; empty: no CORS, ("*",): any
    queue: QueueSection
    primary: WarehouseSection
    secondary: WarehouseSection | None  # None: SECONDARY_REDSHIFT_ENABLED is off
    staging: StagingSection | None
    uses_aws: bool

    def describe(self) -> dict[str, str]:
        """Which backends are in use, for the startup log and ``afpipe check``."""
        described = {"queue": self.queue.url, "warehouse": self.primary.describe()}
        if self.secondary is not None:
            described["secondary"] = self.secondary.describe()
            described["secondary_retry_queue"] = self.queue.secondary_retry_url or "none"
        if self.staging is not None:
            described["s3_staging"] = self.staging.describe()
        return described


@functools.lru_cache(maxsize=8)  # a process has one Settings; bounded all the same
def sections(settings: Settings) -> Sections:
    """Raises ``SettingProblem`` for a value that does not parse (``load`` calls it,
    so that surfaces as ConfigError before anything binds); cached: parsed once."""
    endpoints = _endpoints(settings)
    queue = _queue(settings, endpoints)
    primary = _primary(settings, endpoints)
    secondary = _secondary(settings, endpoints) if settings.secondary_redshift_enabled else None
    staging = _staging(settings, endpoints)
    uses_aws = (
        queue.uses_sqs
        or primary.redshift is not None
        or bool(secondary is not None and (secondary.redshift or queue.secondary_retry_url))
    )
    return Sections(
        allowed_networks=_networks("AFPIPE_ALLOWED_CIDRS", settings.allowed_cidrs),
        trusted_proxies=_networks("AFPIPE_TRUSTED_PROXIES", settings.trusted_proxies),
        cors_origins=_origins(settings.cors_origins),
        queue=queue,
        primary=primary,
        secondary=secondary,
        staging=staging,
        uses_aws=uses_aws,
    )


_ORIGIN = re.compile(r"https?://(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?", re.A)


def _origins(text: str) -> tuple[str, ...]:
    """Browser origins as a browser sends them: scheme://host[:port], no path; or
    "*" alone."""
    origins = tuple(part.strip() for part in text.split(",") if part.strip())
    if origins == ("*",):
        return origins
    for origin in origins:
        if not _ORIGIN.fullmatch(origin):
            raise SettingProblem(
                "AFPIPE_CORS_ORIGINS",
                f"{origin!r} is not an origin (scheme://host[:port], no path) or the one '*'",
            )
    return origins


def _networks(name: str, text: str) -> tuple[Network, ...]:
    try:
        return tuple(parse_networks(text))
    except ValueError as exc:
        raise SettingProblem(name, str(exc)) from exc


def _endpoints(settings: Settings) -> Mapping[str, str]:
    """The AWS SDKs' endpoint variables: settings of the same names (a .env counts)."""
    return {
        "AWS_ENDPOINT_URL": settings.aws_endpoint_url,
        "AWS_ENDPOINT_URL_SQS": settings.aws_endpoint_url_sqs,
        "AWS_ENDPOINT_URL_REDSHIFT_DATA": settings.aws_endpoint_url_redshift_data,
        "AWS_ENDPOINT_URL_S3": settings.aws_endpoint_url_s3,
        "AWS_ENDPOINT_URL_CLOUDWATCH": settings.aws_endpoint_url_cloudwatch,
    }


def _queue(settings: Settings, endpoints: Mapping[str, str]) -> QueueSection:
    embedded = Path(settings.data_dir) / "queue.db"
    return QueueSection(
        uses_sqs=settings.uses_sqs,
        url=settings.sqs_queue_url if settings.uses_sqs else f"embedded:{embedded}",
        embedded_path=embedded,
        sqs=sqs_service(settings.aws_region, endpoints),
        dlq_url=settings.dlq_url,
        secondary_retry_url=settings.secondary_retry_queue_url,
        cloudwatch=(
            cloudwatch_service(settings.aws_region, endpoints)
            if settings.uses_sqs and settings.sqs_age_from_cloudwatch
            else None
        ),
    )


def _redshift(settings: Settings, target: Target, service: AwsService) -> RedshiftSection:
    return RedshiftSection(
        target=target,
        service=service,
        statement_timeout_s=settings.redshift_statement_timeout_ms / 1000,
        max_wait_s=settings.redshift_max_retries,
        dedup_window_s=settings.dedup_window_s,
        max_unclassified_failures=settings.max_unclassified_failures,
    )


def _primary(settings: Settings, endpoints: Mapping[str, str]) -> WarehouseSection:
    redshift = None
    if settings.uses_redshift:
        target = Target(
            database=settings.redshift_database,
            cluster_identifier=settings.redshift_cluster_identifier,
            workgroup_name=settings.redshift_workgroup_name,
            db_user=settings.redshift_db_user,
            secret_arn=settings.redshift_secret_arn,
        )
        service = redshift_data_service(settings.aws_region, endpoints)
        redshift = _redshift(settings, target, service)
    embedded = Path(settings.data_dir) / "warehouse.db"
    return WarehouseSection(
        name="primary",
        table=settings.redshift_table_name,
        embedded_path=embedded,
        redshift=redshift,
    )


def _secondary(settings: Settings, endpoints: Mapping[str, str]) -> WarehouseSection:
    redshift = None
    if settings.secondary_redshift_cluster_identifier or settings.secondary_redshift_workgroup_name:
        target = Target(
            database=settings.secondary_redshift_database or settings.redshift_database,
            cluster_identifier=settings.secondary_redshift_cluster_identifier,
            workgroup_name=settings.secondary_redshift_workgroup_name,
            db_user=settings.secondary_redshift_db_user,
            secret_arn=settings.secondary_redshift_secret_arn,
        )
        region = settings.secondary_aws_region or settings.aws_region
        service = redshift_data_service(region, endpoints)
        if settings.secondary_redshift_endpoint:  # PrivateLink / VPC endpoint
            endpoint = settings.secondary_redshift_endpoint.rstrip("/")
            service = msgspec.structs.replace(service, endpoint_url=endpoint)
        redshift = _redshift(settings, target, service)
    return WarehouseSection(
        name="secondary",
        table=settings.secondary_redshift_table_name or settings.redshift_table_name,
        embedded_path=Path(settings.data_dir) / "warehouse-secondary.db",
        redshift=redshift,
    )


def _staging(settings: Settings, endpoints: Mapping[str, str]) -> StagingSection | None:
    if not settings.s3_staging_uri:
        return None
    try:
        location = parse_s3_uri(settings.s3_staging_uri)
    except ValueError as exc:
        raise SettingProblem("AFPIPE_S3_STAGING_URI", str(exc)) from exc
    staging = Staging(
        bucket=location.bucket,
        prefix=location.prefix,
        iam_role=settings.copy_iam_role,
        region=settings.s3_staging_region or settings.aws_region,
    )
    return StagingSection(staging=staging, s3=s3_endpoint(staging.region, endpoints))
