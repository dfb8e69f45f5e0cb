"""Which AWS service a call goes to: signing name, region, endpoint, protocol."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec


class AwsService(msgspec.Struct, frozen=True):
    """Everything needed to address and sign a call to one service endpoint.

    It also keys the retry budget (``AwsClient.quota``). The JSON fields are
    empty for S3, a REST service whose requests say everything themselves.
    """

    signing_name: str  # SigV4 service name, e.g. "sqs", "redshift-data", "s3"
    region: str
    endpoint_url: str  # scheme://host[:port][/path], no trailing slash
    json_version: str = ""  # "1.0" for SQS, "1.1" for redshift-data
    target_prefix: str = ""  # X-Amz-Target is "<target_prefix>.<Operation>"
    # SQS speaks JSON but keeps its query-protocol error codes when asked; botocore
    # sends this header for SQS, so we sign it too (and the codes stay familiar).
    extra_headers: tuple[tuple[str, str], ...] = ()

    @property
    def content_type(self) -> str:
        return f"application/x-amz-json-{self.json_version}"

    @property
    def url(self) -> str:
        """JSON-protocol calls are all POSTs to the endpoint's root path."""
        return self.endpoint_url + "/"


def resolve_endpoint(
    service_id: str, region: str, env: Mapping[str, str], *, prefix: str = ""
) -> str:
    """The endpoint URL the AWS SDKs would use for ``service_id`` (e.g. "redshift-data").

    ``AWS_ENDPOINT_URL_<SERVICE_ID>`` (upper case, dashes and spaces as
    underscores) wins, then ``AWS_ENDPOINT_URL``, then the public endpoint, whose
    host starts with the endpoint ``prefix`` (default: the service id).
    """
    suffix = service_id.upper().replace("-", "_").replace(" ", "_")
    for name in (f"AWS_ENDPOINT_URL_{suffix}", "AWS_ENDPOINT_URL"):
        value = env.get(name, "").strip()
        if value:
            return value.rstrip("/")
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"https://{prefix or service_id}.{region}.{domain}"


def sqs_service(region: str, env: Mapping[str, str]) -> AwsService:
    return AwsService(
        signing_name="sqs",
        region=region,
        endpoint_url=resolve_endpoint("sqs", region, env),
        json_version="1.0",
        target_prefix="AmazonSQS",
        extra_headers=(("x-amzn-query-mode", "true"),),
    )


def redshift_data_service(region: str, env: Mapping[str, str]) -> AwsService:
    return AwsService(
        signing_name="redshift-data",
        region=region,
        endpoint_url=resolve_endpoint("redshift-data", region, env),
        json_version="1.1",
        target_prefix="RedshiftData",
    )


def cloudwatch_service(region: str, env: Mapping[str, str]) -> AwsService:
    """CloudWatch's awsJson1.0 protocol (botocore's model also lists CBOR and query).

    Its service id is "CloudWatch" (``AWS_ENDPOINT_URL_CLOUDWATCH``), its endpoint
    prefix and signing name "monitoring". It is awsQueryCompatible like SQS, so
    botocore's JSON serializer adds the query-mode header: so do we.
    """
    return AwsService(
        signing_name="monitoring",
        region=region,
        endpoint_url=resolve_endpoint("CloudWatch", region, env, prefix="monitoring"),
        json_version="1.0",
        target_prefix="GraniteServiceVersion20100801",
        extra_headers=(("x-amzn-query-mode", "true"),),
    )
