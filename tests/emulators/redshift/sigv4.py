"""SigV4 verification: recompute the request's signature with botocore and compare.

Only what the client signed (SignedHeaders) goes into the canonical request, with
the request's own X-Amz-Date and the region from its credential scope, so any
client that signs correctly passes and any mistake (wrong secret, service,
unsigned header, tampered body, stale date) is answered like AWS does.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from collections.abc import Mapping

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.emulators.redshift.errors import ApiError
from tests.emulators.redshift.settings import Settings

SERVICE = "redshift-data"
_MAX_SKEW = dt.timedelta(minutes=15)
_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, ?SignedHeaders=(?P<signed>[a-z0-9;-]+), ?"
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)


def _denied(code: str, message: str) -> ApiError:
    return ApiError(code, message, status=403)


def verify(
    method: str, path: str, headers: Mapping[str, str], body: bytes, settings: Settings
) -> None:
    """`headers` maps lower-case names to values (repeated headers joined by ',')."""
    authorization = headers.get("authorization")
    if authorization is None:
        raise _denied("MissingAuthenticationTokenException", "Missing Authentication Token")
    match = _AUTHORIZATION.match(authorization)
    if match is None:
        raise _denied("IncompleteSignatureException", "Authorization header is malformed.")
    _check_identity(match, headers, settings)
    _check_date(match["date"], headers.get("x-amz-date"))
    _check_scope(match["region"], match["service"], settings)
    signed = match["signed"].split(";")
    expected = _signature(method, path, headers, body, signed, match["region"], settings)
    if not hmac.compare_digest(expected, match["signature"]):
        raise _denied(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method.",
        )


def _check_identity(match: re.Match[str], headers: Mapping[str, str], settings: Settings) -> None:
    token = headers.get("x-amz-security-token")
    if match["key"] != settings.access_key or token != settings.session_token:
        raise _denied(
            "UnrecognizedClientException", "The security token included in the request is invalid."
        )


def _check_date(scope_date: str, amz_date: str | None) -> None:
    if amz_date is None:
        raise _denied("IncompleteSignatureException", "Missing X-Amz-Date header.")
    try:
        when = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError as exc:
        raise _denied("IncompleteSignatureException", "Invalid X-Amz-Date.") from exc
    if amz_date[:8] != scope_date:
        raise _denied(
            "InvalidSignatureException", "Credential scope date does not match X-Amz-Date."
        )
    if abs(dt.datetime.now(dt.UTC) - when) > _MAX_SKEW:
        raise _denied("InvalidSignatureException", f"Signature expired: {amz_date}.")


def _check_scope(region: str, service: str, settings: Settings) -> None:
    if service != SERVICE:
        raise _denied(
            "InvalidSignatureException",
            f"Credential should be scoped to correct service: '{SERVICE}'.",
        )
    if settings.region is not None and region != settings.region:
        raise _denied("InvalidSignatureException", "Credential should be scoped to a valid region.")


def _signature(
    method: str,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
    signed: list[str],
    region: str,
    settings: Settings,
) -> str:
    missing = [name for name in signed if name not in headers]
    if "host" not in signed or missing:
        raise _denied("InvalidSignatureException", "Signed headers are missing from the request.")
    content_sha = headers.get("x-amz-content-sha256")
    if content_sha is not None and content_sha != hashlib.sha256(body).hexdigest():
        raise _denied("InvalidSignatureException", "X-Amz-Content-SHA256 does not match the body.")
    request = AWSRequest(
        method=method,
        url=f"http://{headers['host']}{path}",
        data=body,
        headers={name: headers[name] for name in signed},
    )
    request.context["timestamp"] = headers["x-amz-date"]
    credentials = Credentials(settings.access_key, settings.secret_key, settings.session_token)
    auth = SigV4Auth(credentials, SERVICE, region)
    canonical = auth.canonical_request(request)
    return str(auth.signature(auth.string_to_sign(request, canonical), request))
