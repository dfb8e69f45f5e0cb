"""The environment contract: every setting's variable, type, default and help, once.

The Node.js service's names are kept; afpipe's own start with ``AFPIPE_``.
Each field is declared with ``setting(name, default, help)``; the types carry
the bounds (msgspec ``Meta``) that decoding checks, one variable at a time
(``afpipe.config.environment``); what spans several is in ``checks``.
"""

from __future__ import annotations

from typing import Annotated, Literal, TypeVar

import msgspec
from msgspec import Meta, field

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


# ``afpipe serve --help``, the README's table and systemd/afpipe.env.example show each
# setting's name, default and help (tests check the last two against ``HELP``).
HELP: dict[str, str] = {}
_T = TypeVar("_T")


def setting(name: str, default: _T, help_text: str) -> _T:
    """A field of ``Settings``, read from the variable ``name``."""
    HELP[name] = help_text
    return field(default=default, name=name)


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    # --- names kept from the Node.js service ---
    port: Port = setting("PORT", 3000, "HTTP port of the webhook (0 = any free port)")
    host: str = setting("HOST", "0.0.0.0", "address the webhook binds")
    log_level: LogLevel = setting("LOG_LEVEL", "info", "trace|debug|info|warn|error|fatal|silent")
    enable_sqs_consumer: bool = setting(
        "ENABLE_SQS_CONSUMER", True, "run the consumer (poll loops and writers) in this process"
    )
    sqs_queue_url: str = setting(
        "SQS_QUEUE_URL", "", "SQS queue URL; empty = embedded SQLite queue"
    )
    sqs_polling_interval_ms: NonNegative = setting(
        "SQS_POLLING_INTERVAL", 1000, "pause in ms after an empty receive"
    )
    aws_region: str = setting(
        "AWS_REGION", "us-east-1", "AWS region for SQS and the Redshift Data API"
    )
    redshift_cluster_identifier: str = setting(
        "REDSHIFT_CLUSTER_IDENTIFIER",
        "",
        "provisioned cluster; empty (and no workgroup) = embedded",
    )
    redshift_workgroup_name: str = setting(
        "REDSHIFT_WORKGROUP_NAME", "", "Redshift Serverless workgroup"
    )
    redshift_database: str = setting("REDSHIFT_DATABASE", "dev", "database name")
    redshift_db_user: str = setting(
        "REDSHIFT_DB_USER", "", "database user (provisioned, temporary credentials)"
    )
    redshift_secret_arn: str = setting(
        "REDSHIFT_SECRET_ARN", "", "Secrets Manager ARN with the database credentials"
    )
    redshift_table_name: TableName = setting(
        "REDSHIFT_TABLE_NAME", "appsflyer_events", "target table, `table` or `schema.table`"
    )
    redshift_statement_timeout_ms: Positive = setting(
        "REDSHIFT_STATEMENT_TIMEOUT", 60000, "ms a statement may run before it is cancelled"
    )
    redshift_max_retries: Positive = setting(
        "REDSHIFT_MAX_RETRIES",
        30,
        "seconds of DescribeStatement polling per statement (polls <= 0.25 s apart)",
    )
    secondary_redshift_enabled: bool = setting(
        "SECONDARY_REDSHIFT_ENABLED", False, "also load every batch into a secondary Redshift"
    )
    secondary_redshift_endpoint: str = setting(
        "SECONDARY_REDSHIFT_ENDPOINT", "", "Data API endpoint URL of the secondary (VPC endpoint)"
    )
    secondary_aws_region: str = setting(
        "SECONDARY_AWS_REGION", "", "region of the secondary (default AWS_REGION)"
    )
    secondary_redshift_cluster_identifier: str = setting(
        "SECONDARY_REDSHIFT_CLUSTER_IDENTIFIER", "", "secondary cluster"
    )
    secondary_redshift_workgroup_name: str = setting(
        "SECONDARY_REDSHIFT_WORKGROUP_NAME", "", "secondary Serverless workgroup"
    )
    secondary_redshift_database: str = setting(
        "SECONDARY_REDSHIFT_DATABASE", "", "secondary database (default REDSHIFT_DATABASE)"
    )
    secondary_redshift_db_user: str = setting(
        "SECONDARY_REDSHIFT_DB_USER", "", "secondary database user"
    )
    secondary_redshift_secret_arn: str = setting(
        "SECONDARY_REDSHIFT_SECRET_ARN", "", "secondary Secrets Manager ARN"
    )
    secondary_redshift_table_name: OptionalTableName = setting(
        "SECONDARY_REDSHIFT_TABLE_NAME", "", "secondary table (default REDSHIFT_TABLE_NAME)"
    )
    # --- AWS SDK endpoint overrides ---
    aws_endpoint_url: str = setting(
        "AWS_ENDPOINT_URL", "", "endpoint override for every AWS service"
    )
    aws_endpoint_url_sqs: str = setting("AWS_ENDPOINT_URL_SQS", "", "endpoint override for SQS")
    aws_endpoint_url_redshift_data: str = setting(
        "AWS_ENDPOINT_URL_REDSHIFT_DATA", "", "endpoint override for the Redshift Data API"
    )
    aws_endpoint_url_s3: str = setting(
        "AWS_ENDPOINT_URL_S3", "", "endpoint override for S3 (addressed path-style)"
    )
    aws_endpoint_url_cloudwatch: str = setting(
        "AWS_ENDPOINT_URL_CLOUDWATCH", "", "endpoint override for CloudWatch"
    )
    # --- afpipe additions ---
    data_dir: str = setting(
        "AFPIPE_DATA_DIR", "./afpipe-data", "directory of the embedded queue.db and warehouse.db"
    )
    webhook_token: str = setting(
        "AFPIPE_WEBHOOK_TOKEN", "", "if set, the webhook requires this token (secret)"
    )
    webhook_token_header: str = setting(
        "AFPIPE_WEBHOOK_TOKEN_HEADER", "Authorization", "header that carries the token"
    )
    max_body_bytes: Positive = setting(
        "AFPIPE_MAX_BODY_BYTES", 1024 * 1024, "largest accepted request body (413 above)"
    )
    # At least 16 KiB: a message holds the dead-letter headroom (about 8 KiB) and an event.
    queue_max_message_bytes: Annotated[int, Meta(ge=16 * 1024, le=1024 * 1024)] = setting(
        "AFPIPE_QUEUE_MAX_MESSAGE_BYTES",
        256 * 1024,
        "largest queue message and batch (SQS allows 1 MiB)",
    )
    max_inflight_requests: Positive = setting(
        "AFPIPE_MAX_INFLIGHT_REQUESTS", 128, "webhook requests handled at once; more get 503"
    )
    max_body_buffer_bytes: Positive = setting(
        "AFPIPE_MAX_BODY_BUFFER_BYTES",
        16 * 1024 * 1024,
        "request body bytes held at once, all webhook requests together; past it 503",
    )
    producer_max_pending_events: Positive = setting(
        "AFPIPE_PRODUCER_MAX_PENDING_EVENTS",
        20000,
        "events waiting for the queue before ingest sheds (503)",
    )
    producer_max_pending_bytes: Positive = setting(
        "AFPIPE_PRODUCER_MAX_PENDING_BYTES",
        32 * 1024 * 1024,
        "bytes of events waiting for the queue (256 B counted per event) before ingest sheds",
    )
    producer_senders: Positive = setting("AFPIPE_PRODUCER_SENDERS", 4, "concurrent queue sends")
    # One event per request (AppsFlyer's shape) rarely finds company in a send in
    # flight: waiting a little for more makes ~10x fewer SendMessageBatch at 200 ev/s.
    producer_linger_ms: Annotated[int, Meta(ge=0, le=1000)] = setting(
        "AFPIPE_PRODUCER_LINGER_MS",
        50,
        "longest a queue message waits for more events, only while events arrive closer than"
        " this; 0: never",
    )
    enqueue_timeout_s: PositiveFloat = setting(
        "AFPIPE_ENQUEUE_TIMEOUT_S", 10.0, "longest a request waits for the queue before 503"
    )
    workers: Annotated[int, Meta(ge=1, le=64)] = setting(
        "AFPIPE_WORKERS", 1, "processes sharing the port (SO_REUSEPORT), each a whole afpipe"
    )
    pollers: Positive = setting("AFPIPE_POLLERS", 2, "concurrent receive loops")
    receive_wait_s: Annotated[int, Meta(ge=0, le=20)] = setting(
        "AFPIPE_RECEIVE_WAIT_S", 20, "long-poll wait of each receive (SQS allows up to 20)"
    )
    # SQS long polling answers as soon as one message is there: at 200 events/s a
    # receive right after the last returns one or two. A short pause lets more gather.
    receive_pause_ms: Annotated[int, Meta(ge=0, le=5000)] = setting(
        "AFPIPE_RECEIVE_PAUSE_MS",
        500,
        "pause before the next receive after one of 1 to 9 messages (a full one: none); 0: never",
    )
    # Each stages its loads on its own (redshift.load_sql): four keep ~300 ev/s of inline
    # loads going at 500 ms a statement, one Redshift statement each at most.
    writers: Positive = setting(
        "AFPIPE_WRITERS",
        4,
        "concurrent warehouse writers (each runs at most one Redshift statement at a time)",
    )
    channel_messages: NonNegative = setting(
        "AFPIPE_CHANNEL_MESSAGES", 20, "messages buffered between pollers and writers"
    )
    batch_max_rows: Positive = setting(
        "AFPIPE_BATCH_MAX_ROWS", 5000, "flush a batch at this many events"
    )
    batch_max_bytes: Positive = setting(
        "AFPIPE_BATCH_MAX_BYTES", 4 * 1024 * 1024, "flush a batch at this many message bytes"
    )
    batch_linger_ms: NonNegative = setting(
        "AFPIPE_BATCH_LINGER_MS", 1000, "flush a batch this long after its first message"
    )
    # 0: the queue's own VisibilityTimeout (no override on receive)
    visibility_timeout_s: Annotated[int, Meta(ge=0, le=43200)] = setting(
        "AFPIPE_VISIBILITY_TIMEOUT_S",
        0,
        "visibility timeout of received messages (heartbeat extends); 0: the queue's own",
    )
    max_receives: Positive = setting(
        "AFPIPE_MAX_RECEIVES",
        5,
        "receives after which a message is loaded alone; past twice this, dead-lettered",
    )
    dlq_url: str = setting(
        "AFPIPE_DLQ_URL", "", "SQS dead-letter queue URL (embedded: a table in queue.db)"
    )
    sqs_age_from_cloudwatch: bool = setting(
        "AFPIPE_SQS_AGE_FROM_CLOUDWATCH", False, "read SQS queues' oldest message age in CloudWatch"
    )
    secondary_retry_queue_url: str = setting(
        "AFPIPE_SECONDARY_RETRY_QUEUE_URL", "", "SQS queue holding events the secondary missed"
    )
    secondary_timeout_s: PositiveFloat = setting(
        "AFPIPE_SECONDARY_TIMEOUT_S", 30.0, "time budget of a secondary load before hand-off"
    )
    dedup_window_s: Annotated[float, Meta(ge=0)] = setting(
        "AFPIPE_DEDUP_WINDOW_S", 86400.0, "Redshift dedup window around a batch's event times"
    )
    max_unclassified_failures: Positive = setting(
        "AFPIPE_MAX_UNCLASSIFIED_FAILURES",
        5,
        "identical Redshift failures afpipe cannot classify before they count as bad rows",
    )
    tls_cert_file: str = setting(
        "AFPIPE_TLS_CERT_FILE", "", "PEM certificate (chain) to serve HTTPS in-process"
    )
    tls_key_file: str = setting(
        "AFPIPE_TLS_KEY_FILE", "", "PEM private key for AFPIPE_TLS_CERT_FILE"
    )
    allowed_cidrs: str = setting(
        "AFPIPE_ALLOWED_CIDRS", "", "comma-separated CIDRs allowed to post events (empty = all)"
    )
    trusted_proxies: str = setting(
        "AFPIPE_TRUSTED_PROXIES", "", "CIDRs of proxies whose X-Forwarded-For is believed"
    )
    cors_origins: str = setting(
        "AFPIPE_CORS_ORIGINS",
        "",
        "origins (scheme://host[:port], comma-separated, or *) whose browsers may call"
        " the API, not the webhook (empty = off)",
    )
    metrics_port: Port = setting(
        "AFPIPE_METRICS_PORT", 0, "own port for /metrics, /health, /ready, off PORT (0 = none)"
    )
    access_log_ratio: Annotated[float, Meta(ge=0, le=1)] = setting(
        "AFPIPE_ACCESS_LOG", 1.0, "share of requests written to the access log (0 = off, 1 = all)"
    )
    drain_timeout_s: PositiveFloat = setting(
        "AFPIPE_DRAIN_TIMEOUT_S", 10.0, "longest a graceful shutdown may take"
    )
    # Above load balancers' idle timeouts (ALB: 60 s): the balancer, not afpipe, must be
    # the one to close an idle connection, or it answers 502 to a push it just forwarded.
    keep_alive_timeout_s: PositiveFloat = setting(
        "AFPIPE_KEEP_ALIVE_TIMEOUT_S",
        75.0,
        "idle HTTP keep-alive connections are closed after this; keep above the load"
        " balancer's idle timeout (ALB: 60)",
    )
    log_third_party: bool = setting(
        "AFPIPE_LOG_THIRD_PARTY",
        False,
        "let libraries log (botocore, httpx, hypercorn...) at LOG_LEVEL; secrets stay redacted",
    )
    ready_fail_after_s: PositiveFloat = setting(
        "AFPIPE_READY_FAIL_AFTER_S", 30.0, "/ready turns 503 after a backend fails this long"
    )
    s3_staging_uri: str = setting(
        "AFPIPE_S3_STAGING_URI",
        "",
        "s3://bucket[/prefix] where large Redshift loads are staged for COPY (empty = off)",
    )
    copy_iam_role: str = setting(
        "AFPIPE_COPY_IAM_ROLE", "", "IAM role ARN Redshift assumes to COPY from the staging bucket"
    )
    s3_staging_region: str = setting(
        "AFPIPE_S3_STAGING_REGION", "", "region of the staging bucket (default AWS_REGION)"
    )

    @property
    def uses_sqs(self) -> bool:
        return bool(self.sqs_queue_url)

    @property
    def uses_redshift(self) -> bool:
        return bool(self.redshift_cluster_identifier or self.redshift_workgroup_name)
