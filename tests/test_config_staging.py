"""S3 staging settings: validation (each bad value names its variable), the wiring
into both warehouses, and ``afpipe check``'s probe against moto."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from afpipe import admin, backends, config
from afpipe.aws import AwsClient
from afpipe.config.sections import StagingSection, sections
from afpipe.errors import ConfigError
from afpipe.warehouse.redshift import RedshiftWarehouse, Staging
from tests.fixtures.s3 import s3_keys

NO_DOTENV = Path("/nonexistent/.env")
ROLE = "arn:aws:iam::123456789012:role/redshift-copy"
STAGED = {
    "REDSHIFT_WORKGROUP_NAME": "wg",
    "AFPIPE_S3_STAGING_URI": "s3://afpipe-staging/loads",
    "AFPIPE_COPY_IAM_ROLE": ROLE,
}


def test_staging_is_off_by_default() -> None:
    settings = config.load({}, NO_DOTENV)
    assert (settings.s3_staging_uri, settings.copy_iam_role) == ("", "")
    assert (settings.s3_staging_region, settings.aws_endpoint_url_s3) == ("", "")
    assert sections(settings).staging is None


@pytest.mark.parametrize(
    ("extra", "staging"),
    [
        ({}, Staging(bucket="afpipe-staging", prefix="loads/", iam_role=ROLE, region="us-east-1")),
        (
            {"AFPIPE_S3_STAGING_URI": "s3://my.bucket-1/", "AWS_REGION": "eu-west-1"},
            Staging(bucket="my.bucket-1", prefix="", iam_role=ROLE, region="eu-west-1"),
        ),
        (
            {"AFPIPE_S3_STAGING_REGION": "ap-southeast-2", "AWS_REGION": "eu-west-1"},
            Staging(
                bucket="afpipe-staging", prefix="loads/", iam_role=ROLE, region="ap-southeast-2"
            ),
        ),
        (
            {"AFPIPE_COPY_IAM_ROLE": "arn:aws-us-gov:iam::123456789012:role/a/b/c+=,.@-_"},
            Staging(
                bucket="afpipe-staging",
                prefix="loads/",
                iam_role="arn:aws-us-gov:iam::123456789012:role/a/b/c+=,.@-_",
                region="us-east-1",
            ),
        ),
        (
            {"AFPIPE_S3_STAGING_URI": "s3://abc/a/b=1/", "AFPIPE_S3_STAGING_REGION": "cn-north-1"},
            Staging(bucket="abc", prefix="a/b=1/", iam_role=ROLE, region="cn-north-1"),
        ),
    ],
)
def test_good_staging_settings(extra: dict[str, str], staging: Staging) -> None:
    settings = config.load({**STAGED, **extra}, NO_DOTENV)
    parts = sections(settings)
    assert parts.staging is not None and parts.staging.staging == staging
    assert parts.describe()["s3_staging"] == (
        f"s3://{staging.bucket}/{staging.prefix} ({staging.region})"
    )


def test_staging_for_a_secondary_redshift_only() -> None:
    values = {
        **STAGED,
        "REDSHIFT_WORKGROUP_NAME": "",
        "SECONDARY_REDSHIFT_ENABLED": "true",
        "SECONDARY_REDSHIFT_WORKGROUP_NAME": "wg2",
    }
    assert config.load(values, NO_DOTENV).s3_staging_uri == "s3://afpipe-staging/loads"


@pytest.mark.parametrize(
    ("values", "name", "problem"),
    [
        ({"AFPIPE_S3_STAGING_URI": "afpipe-staging"}, "AFPIPE_S3_STAGING_URI", "s3://bucket"),
        ({"AFPIPE_S3_STAGING_URI": "s3://Upper"}, "AFPIPE_S3_STAGING_URI", "bucket 'Upper'"),
        ({"AFPIPE_S3_STAGING_URI": "s3://ab"}, "AFPIPE_S3_STAGING_URI", "3-63"),
        ({"AFPIPE_S3_STAGING_URI": "s3://a..b"}, "AFPIPE_S3_STAGING_URI", "adjacent dots"),
        ({"AFPIPE_S3_STAGING_URI": "s3://b-1/x//y"}, "AFPIPE_S3_STAGING_URI", "prefix 'x//y'"),
        ({"AFPIPE_S3_STAGING_URI": "s3://b-1/it's"}, "AFPIPE_S3_STAGING_URI", "prefix"),
        ({"AFPIPE_COPY_IAM_ROLE": ""}, "AFPIPE_COPY_IAM_ROLE", "required with"),
        ({"AFPIPE_COPY_IAM_ROLE": "redshift-copy"}, "AFPIPE_COPY_IAM_ROLE", "not an IAM role"),
        (
            {"AFPIPE_COPY_IAM_ROLE": "arn:aws:iam::12345:role/x"},
            "AFPIPE_COPY_IAM_ROLE",
            "not an IAM role",
        ),
        (
            {"AFPIPE_COPY_IAM_ROLE": "arn:aws:iam::123456789012:user/x"},
            "AFPIPE_COPY_IAM_ROLE",
            "not an IAM role",
        ),
        (
            {"AFPIPE_COPY_IAM_ROLE": ROLE + "' GZIP --"},
            "AFPIPE_COPY_IAM_ROLE",
            "not an IAM role",
        ),
        ({"AFPIPE_S3_STAGING_REGION": "Europe"}, "AFPIPE_S3_STAGING_REGION", "not an AWS region"),
        (
            {"AFPIPE_S3_STAGING_REGION": "eu-west-1' x"},
            "AFPIPE_S3_STAGING_REGION",
            "not an AWS region",
        ),
        ({"REDSHIFT_WORKGROUP_NAME": ""}, "AFPIPE_S3_STAGING_URI", "no primary or secondary"),
        (  # a secondary that is enabled but embedded is no Redshift either
            {"REDSHIFT_WORKGROUP_NAME": "", "SECONDARY_REDSHIFT_ENABLED": "true"},
            "AFPIPE_S3_STAGING_URI",
            "no primary or secondary",
        ),
    ],
)
def test_bad_staging_settings_name_the_variable(
    values: dict[str, str], name: str, problem: str
) -> None:
    merged = {**STAGED, **values}
    with pytest.raises(ConfigError) as caught:
        config.load(merged, NO_DOTENV)
    message = str(caught.value)
    assert message.startswith(f"{name}={merged.get(name, '')!r}: "), message
    assert problem in message
    assert "\n" not in message


def test_role_and_region_are_checked_even_with_staging_off() -> None:
    with pytest.raises(ConfigError, match=r"^AFPIPE_COPY_IAM_ROLE='x': not an IAM role"):
        config.load({"AFPIPE_COPY_IAM_ROLE": "x"}, NO_DOTENV)
    with pytest.raises(ConfigError, match=r"^AFPIPE_S3_STAGING_REGION='x': not an AWS region"):
        config.load({"AFPIPE_S3_STAGING_REGION": "x"}, NO_DOTENV)


def test_the_s3_endpoint_override_is_an_sdk_endpoint_variable() -> None:
    values = {**STAGED, "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9000"}
    staging = sections(config.load(values, NO_DOTENV)).staging
    assert staging is not None
    assert staging.s3.service.endpoint_url == "http://127.0.0.1:9000"


async def test_both_warehouses_get_the_same_staging() -> None:
    settings = config.load(
        {
            **STAGED,
            "AWS_REGION": "eu-west-1",
            "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9000",
            "SECONDARY_REDSHIFT_ENABLED": "true",
            "SECONDARY_REDSHIFT_CLUSTER_IDENTIFIER": "other",
            "SECONDARY_AWS_REGION": "us-west-2",
        },
        NO_DOTENV,
    )
    parts = sections(settings)
    assert parts.secondary is not None and parts.staging is not None
    stagers = []
    async with AwsClient() as aws:
        for section in (parts.primary, parts.secondary):
            async with backends.open_warehouse(section, aws, parts.staging) as warehouse:
                assert isinstance(warehouse, RedshiftWarehouse)
                stagers.append(warehouse.stager)
    primary, secondary = stagers
    assert primary is not None and secondary is not None
    assert primary.staging == secondary.staging == parts.staging.staging
    assert primary.s3.endpoint == secondary.s3.endpoint
    assert primary.s3.endpoint.path_style
    assert primary.s3.endpoint.service.region == "eu-west-1"  # the bucket's, not the secondary's


async def test_no_stager_without_staging() -> None:
    parts = sections(config.load({"REDSHIFT_WORKGROUP_NAME": "wg"}, NO_DOTENV))
    async with (
        AwsClient() as aws,
        backends.open_warehouse(parts.primary, aws, parts.staging) as warehouse,
    ):
        assert isinstance(warehouse, RedshiftWarehouse)
        assert warehouse.stager is None


# --- afpipe check ------------------------------------------------------------------------------


def check_staging(moto_endpoint: str, bucket: str) -> StagingSection:
    values = {
        **STAGED,
        "AFPIPE_S3_STAGING_URI": f"s3://{bucket}/loads/",
        "AWS_ENDPOINT_URL_S3": moto_endpoint,
    }
    staging = sections(config.load(values, NO_DOTENV)).staging
    assert staging is not None
    return staging


async def test_check_puts_and_deletes_a_probe(
    aws_client: AwsClient,
    moto_endpoint: str,
    boto_s3: Any,
    s3_bucket: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    staging = check_staging(moto_endpoint, s3_bucket)
    with trio.fail_after(30):
        failures = await admin._check_step("s3 staging", admin._check_staging(staging, aws_client))
    out = capsys.readouterr().out
    assert failures == 0, out
    assert f"  ok: put and deleted s3://{s3_bucket}/loads/afpipe-check/" in out
    assert s3_keys(boto_s3, s3_bucket) == set()


async def test_check_reports_a_missing_bucket(
    aws_client: AwsClient, moto_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    staging = check_staging(moto_endpoint, "afpipe-no-such-bucket-here")
    with trio.fail_after(30):
        failures = await admin._check_step("s3 staging", admin._check_staging(staging, aws_client))
    out = capsys.readouterr().out
    assert failures == 1
    assert "FAILED (s3 staging): s3 PutObject s3://afpipe-no-such-bucket-here/loads/" in out
    assert "NoSuchBucket (HTTP 404)" in out
