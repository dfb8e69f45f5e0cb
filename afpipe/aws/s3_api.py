"""S3 REST shapes: bucket and prefix rules, keys in URLs, addressing, XML errors; no I/O.

S3 is not a JSON-protocol service: an operation is an HTTP method on the
object's URL, and an error is an XML document
(``<Error><Code>..</Code><Message>..</Message><RequestId>..</RequestId></Error>``),
mapped here into the same ``AwsErrorInfo`` as JSON errors, so it becomes a
``TransientError`` or ``PermanentError`` by the same rules.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import quote
from xml.etree import ElementTree

import msgspec

from afpipe.aws.responses import AwsErrorInfo
from afpipe.aws.service import AwsService, resolve_endpoint

MAX_KEY_BYTES = 1024
MAX_PREFIX_BYTES = 512  # leaves room for the date path and the object's name
_MAX_MESSAGE_CHARS = 500

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", re.ASCII)
_IP_ADDRESS = re.compile(r"\d+\.\d+\.\d+\.\d+", re.ASCII)
_RESERVED_STARTS = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_ENDS = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
# S3's "safe characters" (no quote, which would end up inside a SQL literal) and "=".
_PREFIX_SEGMENT = re.compile(r"[A-Za-z0-9!_.*()=-]+", re.ASCII)


class S3Location(msgspec.Struct, frozen=True):
    bucket: str
    prefix: str  # "" or ending with "/"

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


class S3Endpoint(msgspec.Struct, frozen=True):
    """Where S3 requests go. ``path_style`` (``{endpoint}/{bucket}/{key}``) with an
    endpoint override (an emulator, a VPC endpoint), else virtual-hosted
    (``https://{bucket}.s3.{region}.amazonaws.com/{key}``)."""

    service: AwsService  # signing name "s3"; its endpoint keys the retry budget
    path_style: bool


def bucket_problem(name: str) -> str | None:
    """Why ``name`` is not a valid S3 (general purpose) bucket name, or None."""
    if not _BUCKET.fullmatch(name):
        return (
            "an S3 bucket name is 3-63 lower-case letters, digits, dots and hyphens,"
            " beginning and ending with a letter or digit"
        )
    if ".." in name:
        return "an S3 bucket name has no two adjacent dots"
    if _IP_ADDRESS.fullmatch(name):
        return "an S3 bucket name is not an IP address"
    if name.startswith(_RESERVED_STARTS) or name.endswith(_RESERVED_ENDS):
        return "the bucket name has a prefix or suffix that S3 reserves"
    return None


def parse_s3_uri(text: str) -> S3Location:
    """``s3://bucket[/prefix][/]``; raises ValueError saying what is wrong."""
    if not text.startswith("s3://"):
        raise ValueError("expected s3://bucket[/prefix]")
    bucket, _, path = text.removeprefix("s3://").partition("/")
    problem = bucket_problem(bucket)
    if problem is not None:
        raise ValueError(f"bucket {bucket!r}: {problem}")
    path = path.removesuffix("/")
    if not path:
        return S3Location(bucket, "")
    for segment in path.split("/"):
        if not _PREFIX_SEGMENT.fullmatch(segment) or segment in {".", ".."}:
            raise ValueError(
                f"prefix {path!r}: each /-separated part must be non-empty, not . or ..,"
                " and only letters, digits and ! _ . * ( ) = -"
            )
    if len(path) >= MAX_PREFIX_BYTES:
        raise ValueError(f"prefix longer than {MAX_PREFIX_BYTES - 1} characters")
    return S3Location(bucket, path + "/")


def s3_endpoint(region: str, env: Mapping[str, str]) -> S3Endpoint:
    """``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` if set, else S3 in ``region``."""
    url = resolve_endpoint("s3", region, env)
    overridden = url != resolve_endpoint("s3", region, {})
    return S3Endpoint(AwsService(signing_name="s3", region=region, endpoint_url=url), overridden)


def quote_key(key: str) -> str:
    """The key as a URL path: UTF-8, everything but unreserved characters and "/"
    percent-encoded (as botocore does; S3 signs the path exactly as sent)."""
    if not key or len(key.encode()) > MAX_KEY_BYTES:
        raise ValueError(f"an S3 key is 1 to {MAX_KEY_BYTES} UTF-8 bytes")
    if any(segment in {".", ".."} for segment in key.split("/")):
        raise ValueError(f"S3 key {key!r} has a . or .. segment, which URLs collapse")
    return quote(key, safe="/~")


def object_url(endpoint: S3Endpoint, bucket: str, key: str) -> str:
    path = f"/{quote_key(key)}"
    base = endpoint.service.endpoint_url
    # A dotted name breaks the TLS wildcard of virtual-hosted names: path-style, as botocore.
    if endpoint.path_style or "." in bucket:
        return f"{base}/{bucket}{path}"
    scheme, _, host = base.partition("://")
    return f"{scheme}://{bucket}.{host}{path}"


def parse_error(status: int, headers: Mapping[str, str], body: bytes) -> AwsErrorInfo:
    """An S3 error response; a body that is not S3's XML (a proxy's page, a HEAD
    answer) leaves the HTTP status as the code."""
    fields: dict[str, str] = {}
    try:
        root = ElementTree.fromstring(body) if body.strip() else None
    except ElementTree.ParseError:
        root = None
    if root is not None and _local(root.tag) == "Error":
        fields = {_local(child.tag): (child.text or "").strip() for child in root}
    lower = {name.lower(): value for name, value in headers.items()}
    return AwsErrorInfo(
        status,
        fields.get("Code") or str(status),
        fields.get("Message", "")[:_MAX_MESSAGE_CHARS],
        fields.get("RequestId") or lower.get("x-amz-request-id", ""),
    )


def _local(tag: str) -> str:
    """A tag without its XML namespace."""
    return tag.rpartition("}")[2]
