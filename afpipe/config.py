"""Settings: the Node.js service's environment variables plus ``AFPIPE_*``.

Read once at start from the process environment and an optional ``.env`` in
the working directory (the environment wins), decoded into a frozen msgspec
struct. A bad value raises ``ConfigError`` naming the variable, before
anything binds; the CLI turns that into exit status 2.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, field

from afpipe.aws.s3_api import parse_s3_uri
from afpipe.errors import ConfigError
from afpipe.sources import parse_networks

Port = Annotated[int, Meta(ge=0, le=65535)]
Positive = Annotated[int, Meta(ge=1)]
NonNegative = Annotated[int, Meta(ge=0)]
# Bounded (invariant 5): a timeout of "inf" would make a wait unbounded.
PositiveFloat = Annotated[float, Meta(gt=0, le=86400)]
# Interpolated into SQL as an identifier (invariant 7): only plain names pass.
_IDENT = r"[A-Za-z_][A-Za-z0-9_$]{0,126}"
TableName = Annotated[str, Meta(pattern=rf"^{_IDENT}(\.{_IDENT})?$")]
OptionalTableName = Annotated[str, Meta(pattern=rf"^({_IDENT}(\.{_IDENT})?)?$")]
LogLevel = Literal["trace", "debug", "info", "warn", "warning", "error", "fatal", "silent"]

SECRET_SETTINGS = frozenset({"AFPIPE_WEBHOOK_TOKEN"})
_ROLE_ARN = re.compile(
    r"arn:aws[-a-z]*:iam::\d{12}:role/(?:[\w+=,.@-]+/)*[\w+=,.@-]{1,64}", re.ASCII
)
_REGION = re.compile(r"[a-z]{2}(?:-[a-z]+)+-\d{1,2}", re.ASCII)


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    # --- names kept from the Node.js service ---
    port: Port = field(default=3000, name="PORT")
    host: str = field(default="0.0.0.0", name="HOST")
    log_level: LogLevel = field(default="info", name="LOG_LEVEL")
    enable_sqs_consumer: bool = field(default=True, name="ENABLE_SQS_CONSUMER")
    sqs_queue_url: str = field(default="", name="SQS_QUEUE_URL")
    sqs_polling_interval_ms: NonNegative = field(default=1000, name="SQS_POLLING_INTERVAL")
    aws_region: str = field(default="us-east-1", name="AWS_REGION")
    redshift_cluster_identifier: str = field(default="", name="REDSHIFT_CLUSTER_IDENTIFIER")
    redshift_workgroup_name: str = field(default="", name="REDSHIFT_WORKGROUP_NAME")
    redshift_database: str = field(default="dev", name="REDSHIFT_DATABASE")
    redshift_db_user: str = field(default="", name="REDSHIFT_DB_USER")
    redshift_secret_arn: str = field(default="", name="REDSHIFT_SECRET_ARN")
    redshift_table_name: TableName = field(default="appsflyer_events", name="REDSHIFT_TABLE_NAME")
    redshift_statement_timeout_ms: Positive = field(
        default=60000, name="REDSHIFT_STATEMENT_TIMEOUT"
    )
    redshift_max_retries: Positive = field(default=30, name="REDSHIFT_MAX_RETRIES")
    secondary_redshift_enabled: bool = field(default=False, name="SECONDARY_REDSHIFT_ENABLED")
    secondary_redshift_endpoint: str = field(default="", name="SECONDARY_REDSHIFT_ENDPOINT")
    secondary_aws_region: str = field(default="", name="SECONDARY_AWS_REGION")
    secondary_redshift_cluster_identifier: str = field(
        default="", name="SECONDARY_REDSHIFT_CLUSTER_IDENTIFIER"
    )
    secondary_redshift_workgroup_name: str = field(
        default="", name="SECONDARY_REDSHIFT_WORKGROUP_NAME"
    )
    secondary_redshift_database: str = field(default="", name="SECONDARY_REDSHIFT_DATABASE")
    secondary_redshift_db_user: str = field(default="", name="SECONDARY_REDSHIFT_DB_USER")
    secondary_redshift_secret_arn: str = field(default="", name="SECONDARY_REDSHIFT_SECRET_ARN")
    secondary_redshift_table_name: OptionalTableName = field(
        default="", name="SECONDARY_REDSHIFT_TABLE_NAME"
    )
    # --- AWS SDK endpoint overrides ---
    aws_endpoint_url: str = field(default="", name="AWS_ENDPOINT_URL")
    aws_endpoint_url_sqs: str = field(default="", name="AWS_ENDPOINT_URL_SQS")
    aws_endpoint_url_redshift_data: str = field(default="", name="AWS_ENDPOINT_URL_REDSHIFT_DATA")
    aws_endpoint_url_s3: str = field(default="", name="AWS_ENDPOINT_URL_S3")
    # --- afpipe additions ---
    data_dir: str = field(default="./afpipe-data", name="AFPIPE_DATA_DIR")
    webhook_token: str = field(default="", name="AFPIPE_WEBHOOK_TOKEN")
    webhook_token_header: str = field(default="Authorization", name="AFPIPE_WEBHOOK_TOKEN_HEADER")
    max_body_bytes: Positive = field(default=1024 * 1024, name="AFPIPE_MAX_BODY_BYTES")
    # At least 16 KiB: a message holds the dead-letter headroom (about 8 KiB) and an event.
    queue_max_message_bytes: Annotated[int, Meta(ge=16 * 1024, le=1024 * 1024)] = field(
        default=256 * 1024, name="AFPIPE_QUEUE_MAX_MESSAGE_BYTES"
    )
    max_inflight_requests: Positive = field(default=128, name="AFPIPE_MAX_INFLIGHT_REQUESTS")
    max_body_buffer_bytes: Positive = field(
        default=16 * 1024 * 1024, name="AFPIPE_MAX_BODY_BUFFER_BYTES"
    )
    producer_max_pending_events: Positive = field(
        default=20000, name="AFPIPE_PRODUCER_MAX_PENDING_EVENTS"
    )
    producer_max_pending_bytes: Positive = field(
        default=32 * 1024 * 1024, name="AFPIPE_PRODUCER_MAX_PENDING_BYTES"
    )
    producer_senders: Positive = field(default=4, name="AFPIPE_PRODUCER_SENDERS")
    # One event per request (AppsFlyer's shape) rarely finds company in a send in
    # flight: waiting a little for more makes ~10x fewer SendMessageBatch at 200 ev/s.
    producer_linger_ms: Annotated[int, Meta(ge=0, le=1000)] = field(
        default=50, name="AFPIPE_PRODUCER_LINGER_MS"
    )
    enqueue_timeout_s: PositiveFloat = field(default=10.0, name="AFPIPE_ENQUEUE_TIMEOUT_S")
    workers: Annotated[int, Meta(ge=1, le=64)] = field(default=1, name="AFPIPE_WORKERS")
    pollers: Positive = field(default=2, name="AFPIPE_POLLERS")
    receive_wait_s: Annotated[int, Meta(ge=0, le=20)] = field(
        default=20, name="AFPIPE_RECEIVE_WAIT_S"
    )
    # SQS long polling answers as soon as one message is there: at 200 events/s a
    # receive right after the last returns one or two. A short pause lets more gather.
    receive_pause_ms: Annotated[int, Meta(ge=0, le=5000)] = field(
        default=500, name="AFPIPE_RECEIVE_PAUSE_MS"
    )
    # Each stages its loads on its own (redshift_sql): four keep ~300 ev/s of inline
    # loads going at 500 ms a statement, one Redshift statement each at most.
    writers: Positive = field(default=4, name="AFPIPE_WRITERS")
    channel_messages: NonNegative = field(default=20, name="AFPIPE_CHANNEL_MESSAGES")
    batch_max_rows: Positive = field(default=5000, name="AFPIPE_BATCH_MAX_ROWS")
    batch_max_bytes: Positive = field(default=4 * 1024 * 1024, name="AFPIPE_BATCH_MAX_BYTES")
    batch_linger_ms: NonNegative = field(default=1000, name="AFPIPE_BATCH_LINGER_MS")
    # 0: the queue's own VisibilityTimeout (no override on receive)
    visibility_timeout_s: Annotated[int, Meta(ge=0, le=43200)] = field(
        default=0, name="AFPIPE_VISIBILITY_TIMEOUT_S"
    )
    max_receives: Positive = field(default=5, name="AFPIPE_MAX_RECEIVES")
    dlq_url: str = field(default="", name="AFPIPE_DLQ_URL")
    secondary_retry_queue_url: str = field(default="", name="AFPIPE_SECONDARY_RETRY_QUEUE_URL")
    secondary_timeout_s: PositiveFloat = field(default=30.0, name="AFPIPE_SECONDARY_TIMEOUT_S")
    dedup_window_s: Annotated[float, Meta(ge=0)] = field(
        default=86400.0, name="AFPIPE_DEDUP_WINDOW_S"
    )
    max_unclassified_failures: Positive = field(default=5, name="AFPIPE_MAX_UNCLASSIFIED_FAILURES")
    tls_cert_file: str = field(default="", name="AFPIPE_TLS_CERT_FILE")
    tls_key_file: str = field(default="", name="AFPIPE_TLS_KEY_FILE")
    allowed_cidrs: str = field(default="", name="AFPIPE_ALLOWED_CIDRS")
    trusted_proxies: str = field(default="", name="AFPIPE_TRUSTED_PROXIES")
    access_log: Annotated[float, Meta(ge=0, le=1)] = field(default=1.0, name="AFPIPE_ACCESS_LOG")
    drain_timeout_s: PositiveFloat = field(default=10.0, name="AFPIPE_DRAIN_TIMEOUT_S")
    # Above load balancers' idle timeouts (ALB: 60 s): the balancer, not afpipe, must be
    # the one to close an idle connection, or it answers 502 to a push it just forwarded.
    keep_alive_timeout_s: PositiveFloat = field(default=75.0, name="AFPIPE_KEEP_ALIVE_TIMEOUT_S")
    log_third_party: bool = field(default=False, name="AFPIPE_LOG_THIRD_PARTY")
    ready_fail_after_s: PositiveFloat = field(default=30.0, name="AFPIPE_READY_FAIL_AFTER_S")
    s3_staging_uri: str = field(default="", name="AFPIPE_S3_STAGING_URI")
    copy_iam_role: str = field(default="", name="AFPIPE_COPY_IAM_ROLE")
    s3_staging_region: str = field(default="", name="AFPIPE_S3_STAGING_REGION")

    def __post_init__(self) -> None:
        if not self.webhook_token_header.strip():
            raise ValueError("AFPIPE_WEBHOOK_TOKEN_HEADER must not be empty")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("AFPIPE_TLS_CERT_FILE and AFPIPE_TLS_KEY_FILE go together")
        for name, path in (
            ("AFPIPE_TLS_CERT_FILE", self.tls_cert_file),
            ("AFPIPE_TLS_KEY_FILE", self.tls_key_file),
        ):
            if path and not Path(path).is_file():
                raise ValueError(f"{name}: no such file: {path}")
        for name, text in (
            ("AFPIPE_ALLOWED_CIDRS", self.allowed_cidrs),
            ("AFPIPE_TRUSTED_PROXIES", self.trusted_proxies),
        ):
            try:
                parse_networks(text)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from exc
        self._check_memory_bounds()
        self._check_staging()

    def _check_memory_bounds(self) -> None:
        """A request these bounds could never hold would be shed (503) for ever."""
        if self.max_body_buffer_bytes < self.max_body_bytes:
            raise ValueError(
                "AFPIPE_MAX_BODY_BUFFER_BYTES: must be at least AFPIPE_MAX_BODY_BYTES"
                f" ({self.max_body_bytes})"
            )
        if self.producer_max_pending_bytes < 2 * self.max_body_bytes:
            raise ValueError(
                "AFPIPE_PRODUCER_MAX_PENDING_BYTES: must be at least twice AFPIPE_MAX_BODY_BYTES"
                f" ({2 * self.max_body_bytes}): a request's events take more than its body"
            )

    def _check_staging(self) -> None:
        if self.copy_iam_role and not _ROLE_ARN.fullmatch(self.copy_iam_role):
            raise ValueError(
                "AFPIPE_COPY_IAM_ROLE: not an IAM role ARN"
                " (arn:aws:iam::<12-digit account>:role/<path/name>)"
            )
        if self.s3_staging_region and not _REGION.fullmatch(self.s3_staging_region):
            raise ValueError("AFPIPE_S3_STAGING_REGION: not an AWS region name (e.g. eu-west-1)")
        if not self.s3_staging_uri:
            return
        try:
            parse_s3_uri(self.s3_staging_uri)
        except ValueError as exc:
            raise ValueError(f"AFPIPE_S3_STAGING_URI: {exc}") from exc
        if not self.copy_iam_role:
            raise ValueError(
                "AFPIPE_COPY_IAM_ROLE: required with AFPIPE_S3_STAGING_URI"
                " (the role Redshift assumes to COPY from the bucket)"
            )
        secondary_redshift = self.secondary_redshift_enabled and bool(
            self.secondary_redshift_cluster_identifier or self.secondary_redshift_workgroup_name
        )
        if not (self.uses_redshift or secondary_redshift):
            raise ValueError(
                "AFPIPE_S3_STAGING_URI: staging is for Redshift loads, and no primary or"
                " secondary Redshift is configured"
            )

    @property
    def uses_sqs(self) -> bool:
        return bool(self.sqs_queue_url)

    @property
    def uses_redshift(self) -> bool:
        return bool(self.redshift_cluster_identifier or self.redshift_workgroup_name)


HELP: dict[str, str] = {
    "PORT": "HTTP port of the webhook (0 = any free port)",
    "HOST": "address the webhook binds",
    "LOG_LEVEL": "trace|debug|info|warn|error|fatal|silent",
    "ENABLE_SQS_CONSUMER": "run the consumer (poll loops and writers) in this process",
    "SQS_QUEUE_URL": "SQS queue URL; empty = embedded SQLite queue",
    "SQS_POLLING_INTERVAL": "pause in ms after an empty receive",
    "AWS_REGION": "AWS region for SQS and the Redshift Data API",
    "REDSHIFT_CLUSTER_IDENTIFIER": "provisioned cluster; empty (and no workgroup) = embedded",
    "REDSHIFT_WORKGROUP_NAME": "Redshift Serverless workgroup",
    "REDSHIFT_DATABASE": "database name",
    "REDSHIFT_DB_USER": "database user (provisioned, temporary credentials)",
    "REDSHIFT_SECRET_ARN": "Secrets Manager ARN with the database credentials",
    "REDSHIFT_TABLE_NAME": "target table, `table` or `schema.table`",
    "REDSHIFT_STATEMENT_TIMEOUT": "ms a statement may run before it is cancelled",
    "REDSHIFT_MAX_RETRIES": (
        "seconds of DescribeStatement polling per statement (polls <= 0.25 s apart)"
    ),
    "SECONDARY_REDSHIFT_ENABLED": "also load every batch into a secondary Redshift",
    "SECONDARY_REDSHIFT_ENDPOINT": "Data API endpoint URL of the secondary (VPC endpoint)",
    "SECONDARY_AWS_REGION": "region of the secondary (default AWS_REGION)",
    "SECONDARY_REDSHIFT_CLUSTER_IDENTIFIER": "secondary cluster",
    "SECONDARY_REDSHIFT_WORKGROUP_NAME": "secondary Serverless workgroup",
    "SECONDARY_REDSHIFT_DATABASE": "secondary database (default REDSHIFT_DATABASE)",
    "SECONDARY_REDSHIFT_DB_USER": "secondary database user",
    "SECONDARY_REDSHIFT_SECRET_ARN": "secondary Secrets Manager ARN",
    "SECONDARY_REDSHIFT_TABLE_NAME": "secondary table (default REDSHIFT_TABLE_NAME)",
    "AWS_ENDPOINT_URL": "endpoint override for every AWS service",
    "AWS_ENDPOINT_URL_SQS": "endpoint override for SQS",
    "AWS_ENDPOINT_URL_REDSHIFT_DATA": "endpoint override for the Redshift Data API",
    "AWS_ENDPOINT_URL_S3": "endpoint override for S3 (addressed path-style)",
    "AFPIPE_DATA_DIR": "directory of the embedded queue.db and warehouse.db",
    "AFPIPE_WEBHOOK_TOKEN": "if set, the webhook requires this token (secret)",
    "AFPIPE_WEBHOOK_TOKEN_HEADER": "header that carries the token",
    "AFPIPE_MAX_BODY_BYTES": "largest accepted request body (413 above)",
    "AFPIPE_QUEUE_MAX_MESSAGE_BYTES": "largest queue message and batch (SQS allows 1 MiB)",
    "AFPIPE_MAX_INFLIGHT_REQUESTS": "webhook requests handled at once; more get 503 at once",
    "AFPIPE_MAX_BODY_BUFFER_BYTES": (
        "request body bytes held at once, all webhook requests together; past it 503"
    ),
    "AFPIPE_PRODUCER_MAX_PENDING_EVENTS": "events waiting for the queue before ingest sheds (503)",
    "AFPIPE_PRODUCER_MAX_PENDING_BYTES": (
        "bytes of events waiting for the queue (256 B counted per event) before ingest sheds"
    ),
    "AFPIPE_PRODUCER_SENDERS": "concurrent SendMessageBatch calls",
    "AFPIPE_PRODUCER_LINGER_MS": (
        "longest a queue message waits for more events, only while events arrive closer"
        " than this; 0: never"
    ),
    "AFPIPE_ENQUEUE_TIMEOUT_S": "longest a request waits for the queue before 503",
    "AFPIPE_WORKERS": "processes sharing the port (SO_REUSEPORT), each a whole afpipe",
    "AFPIPE_POLLERS": "concurrent receive loops",
    "AFPIPE_RECEIVE_WAIT_S": "long-poll wait of each receive (SQS allows up to 20)",
    "AFPIPE_RECEIVE_PAUSE_MS": (
        "pause before the next receive after one of 1 to 9 messages (a full one: none); 0: never"
    ),
    "AFPIPE_WRITERS": (
        "concurrent warehouse writers (each runs at most one Redshift statement at a time)"
    ),
    "AFPIPE_CHANNEL_MESSAGES": "messages buffered between pollers and writers",
    "AFPIPE_BATCH_MAX_ROWS": "flush a batch at this many events",
    "AFPIPE_BATCH_MAX_BYTES": "flush a batch at this many message bytes",
    "AFPIPE_BATCH_LINGER_MS": "flush a batch this long after its first message",
    "AFPIPE_VISIBILITY_TIMEOUT_S": (
        "visibility timeout of received messages (heartbeat extends); 0: the queue's own"
    ),
    "AFPIPE_MAX_RECEIVES": (
        "receives after which a message is loaded alone; past twice this, dead-lettered"
    ),
    "AFPIPE_DLQ_URL": "SQS dead-letter queue URL (embedded: a table in queue.db)",
    "AFPIPE_SECONDARY_RETRY_QUEUE_URL": "SQS queue holding events the secondary missed",
    "AFPIPE_SECONDARY_TIMEOUT_S": "time budget of a secondary load before hand-off",
    "AFPIPE_DEDUP_WINDOW_S": "Redshift dedup looks this far around a batch's event times",
    "AFPIPE_MAX_UNCLASSIFIED_FAILURES": (
        "identical Redshift failures afpipe cannot classify before they count as bad rows"
    ),
    "AFPIPE_TLS_CERT_FILE": "PEM certificate (chain) to serve HTTPS in-process",
    "AFPIPE_TLS_KEY_FILE": "PEM private key for AFPIPE_TLS_CERT_FILE",
    "AFPIPE_ALLOWED_CIDRS": "comma-separated CIDRs allowed to post events (empty = all)",
    "AFPIPE_TRUSTED_PROXIES": "CIDRs of proxies whose X-Forwarded-For is believed",
    "AFPIPE_ACCESS_LOG": "share of requests written to the access log (0 = off, 1 = all)",
    "AFPIPE_DRAIN_TIMEOUT_S": "longest a graceful shutdown may take",
    "AFPIPE_KEEP_ALIVE_TIMEOUT_S": (
        "idle HTTP keep-alive connections are closed after this; keep above the load"
        " balancer's idle timeout (ALB: 60)"
    ),
    "AFPIPE_LOG_THIRD_PARTY": (
        "let libraries log (botocore, httpx, hypercorn...) at LOG_LEVEL; secrets stay redacted"
    ),
    "AFPIPE_READY_FAIL_AFTER_S": "/ready turns 503 after a backend fails this long",
    "AFPIPE_S3_STAGING_URI": (
        "s3://bucket[/prefix] where large Redshift loads are staged for COPY (empty = off)"
    ),
    "AFPIPE_COPY_IAM_ROLE": "IAM role ARN Redshift assumes to COPY from the staging bucket",
    "AFPIPE_S3_STAGING_REGION": "region of the staging bucket (default AWS_REGION)",
}

_TRUE = {"yes": "true", "on": "true", "no": "false", "off": "false"}
_QUOTED = re.compile(r"""^(['"])(.*?)\1\s*(?:#.*)?$""", re.S)
_POST_INIT_ERROR = re.compile(r"^(?P<name>[A-Z][A-Z0-9_]*): (?P<msg>.*)$", re.S)
_ERROR_PATH = re.compile(r"^(?P<msg>.*?)(?: - at `\$\.(?P<name>[A-Z0-9_]+)`)?$", re.S)


_BOOL_SETTINGS = frozenset(
    f.encode_name for f in msgspec.structs.fields(Settings) if f.type is bool
)


def setting_names() -> list[str]:
    return [f.encode_name for f in msgspec.structs.fields(Settings)]


def defaults() -> dict[str, Any]:
    return {f.encode_name: f.default for f in msgspec.structs.fields(Settings)}


def parse_dotenv(text: str) -> dict[str, str]:
    """``KEY=value`` lines; ``#`` comments, ``export`` prefixes and quotes allowed."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ConfigError(f".env line {number}: expected KEY=value")
        value = value.strip()
        quoted = _QUOTED.match(value)
        if quoted:  # a comment may follow the closing quote
            value = quoted[2]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key] = value
    return values


def load(environ: Mapping[str, str] | None = None, dotenv: Path | None = None) -> Settings:
    """Settings from ``dotenv`` (default ./.env, if present) overlaid by ``environ``."""
    environ = os.environ if environ is None else environ
    dotenv = Path(".env") if dotenv is None else dotenv
    raw: dict[str, str] = {}
    if dotenv.is_file():
        raw.update(parse_dotenv(dotenv.read_text(encoding="utf-8")))
    raw.update(environ)
    names = set(setting_names())
    known: dict[str, str] = {}
    for key, value in raw.items():
        if key in names and value.strip() != "":
            value = value.strip()
            # yes/no/on/off only for booleans: a token or a name must stay as written
            if key in _BOOL_SETTINGS:
                value = _TRUE.get(value.lower(), value)
            elif key == "LOG_LEVEL":  # the Node.js service accepted INFO as well as info
                value = value.lower()
            known[key] = value
    try:
        return msgspec.convert(known, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_describe(exc, known)) from exc


def _describe(exc: msgspec.ValidationError, values: Mapping[str, str]) -> str:
    match = _ERROR_PATH.match(str(exc))
    assert match is not None  # the pattern matches any text
    message, name = match["msg"], match["name"]
    if name is None:  # __post_init__ says "NAME: problem" when one variable is at fault
        named = _POST_INIT_ERROR.match(message)
        if named is None or named["name"] not in HELP:
            return f"invalid settings: {message}"
        name, message = named["name"], named["msg"]
    shown = "<redacted>" if name in SECRET_SETTINGS else repr(values.get(name, ""))
    message = message.replace("`", "")
    return f"{name}={shown}: {message[:1].lower()}{message[1:]}"


def redacted(settings: Settings) -> dict[str, Any]:
    """The effective settings for the startup log, secrets hidden."""
    out = msgspec.to_builtins(settings)
    assert isinstance(out, dict)
    for name in SECRET_SETTINGS:
        if out.get(name):
            out[name] = "<redacted>"
    return out
