"""The AWS client layer: one httpx client, SigV4 via botocore, retries, error mapping.

No boto3 at run time. ``AwsClient.call`` is the one way afpipe talks to AWS
(SQS, the Redshift Data API, CloudWatch); it raises only afpipe's own error types.
"""

from afpipe.aws.client import DEFAULT_TIMEOUT, AwsClient
from afpipe.aws.credentials import CredentialCache, default_chain, static_credentials
from afpipe.aws.responses import AwsErrorInfo
from afpipe.aws.retry import RetryPolicy
from afpipe.aws.service import (
    AwsService,
    cloudwatch_service,
    redshift_data_service,
    resolve_endpoint,
    sqs_service,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "AwsClient",
    "AwsErrorInfo",
    "AwsService",
    "CredentialCache",
    "RetryPolicy",
    "cloudwatch_service",
    "default_chain",
    "redshift_data_service",
    "resolve_endpoint",
    "sqs_service",
    "static_credentials",
]
