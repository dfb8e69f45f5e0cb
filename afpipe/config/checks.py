"""What the settings must hold together: checked once, after each value decoded
(what must be parsed is parsed, once, by ``sections``).

A problem names the variable at fault (``SettingProblem.name``), or none when it
lies between several; ``afpipe.config.environment`` words it with the value.
"""

from __future__ import annotations

import re
from pathlib import Path

from afpipe.config.contract import Settings

_ROLE_ARN = re.compile(
    r"arn:aws[-a-z]*:iam::\d{12}:role/(?:[\w+=,.@-]+/)*[\w+=,.@-]{1,64}", re.ASCII
)
_REGION = re.compile(r"[a-z]{2}(?:-[a-z]+)+-\d{1,2}", re.ASCII)


class SettingProblem(Exception):
    """``message`` about the variable ``name`` (None: about several together)."""

    def __init__(self, name: str | None, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.message = message


def check(settings: Settings) -> None:
    """Raise ``SettingProblem`` for the first thing the settings get wrong together."""
    _check_http(settings)
    _check_memory_bounds(settings)
    _check_staging(settings)


def _check_http(settings: Settings) -> None:
    if not settings.webhook_token_header.strip():
        raise SettingProblem(None, "AFPIPE_WEBHOOK_TOKEN_HEADER must not be empty")
    if settings.metrics_port and settings.metrics_port == settings.port:
        raise SettingProblem("AFPIPE_METRICS_PORT", f"must differ from PORT ({settings.port})")
    if bool(settings.tls_cert_file) != bool(settings.tls_key_file):
        raise SettingProblem(None, "AFPIPE_TLS_CERT_FILE and AFPIPE_TLS_KEY_FILE go together")
    for name, path in (
        ("AFPIPE_TLS_CERT_FILE", settings.tls_cert_file),
        ("AFPIPE_TLS_KEY_FILE", settings.tls_key_file),
    ):
        if path and not Path(path).is_file():
            raise SettingProblem(name, f"no such file: {path}")


def _check_memory_bounds(settings: Settings) -> None:
    """A request these bounds could never hold would be shed (503) for ever."""
    if settings.max_body_buffer_bytes < settings.max_body_bytes:
        raise SettingProblem(
            "AFPIPE_MAX_BODY_BUFFER_BYTES",
            f"must be at least AFPIPE_MAX_BODY_BYTES ({settings.max_body_bytes})",
        )
    if settings.producer_max_pending_bytes < 2 * settings.max_body_bytes:
        raise SettingProblem(
            "AFPIPE_PRODUCER_MAX_PENDING_BYTES",
            f"must be at least twice AFPIPE_MAX_BODY_BYTES ({2 * settings.max_body_bytes}):"
            " a request's events take more than its body",
        )


def _check_staging(settings: Settings) -> None:
    if settings.copy_iam_role and not _ROLE_ARN.fullmatch(settings.copy_iam_role):
        raise SettingProblem(
            "AFPIPE_COPY_IAM_ROLE",
            "not an IAM role ARN (arn:aws:iam::<12-digit account>:role/<path/name>)",
        )
    if settings.s3_staging_region and not _REGION.fullmatch(settings.s3_staging_region):
        raise SettingProblem("AFPIPE_S3_STAGING_REGION", "not an AWS region name (e.g. eu-west-1)")
    if not settings.s3_staging_uri:
        return
    if not settings.copy_iam_role:
        raise SettingProblem(
            "AFPIPE_COPY_IAM_ROLE",
            "required with AFPIPE_S3_STAGING_URI (the role Redshift assumes to COPY from the"
            " bucket)",
        )
    secondary_redshift = settings.secondary_redshift_enabled and bool(
        settings.secondary_redshift_cluster_identifier or settings.secondary_redshift_workgroup_name
    )
    if not (settings.uses_redshift or secondary_redshift):
        raise SettingProblem(
            "AFPIPE_S3_STAGING_URI",
            "staging is for Redshift loads, and no primary or secondary Redshift is configured",
        )
