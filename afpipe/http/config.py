"""What the HTTP ingest is told: limits, token, allowed sources (from afpipe.config)."""

from __future__ import annotations

import msgspec

from afpipe.sources import Network


class IngestConfig(msgspec.Struct, frozen=True, kw_only=True):
    max_body_bytes: int
    max_message_bytes: int
    enqueue_timeout_s: float
    token: str = ""
    token_header: str = "Authorization"
    consumer_enabled: bool = True
    allowed_networks: tuple[Network, ...] = ()  # parsed once (config.sections)
    trusted_proxies: tuple[Network, ...] = ()
    cors_origins: tuple[str, ...] = ()  # for the API's routes; never the webhook's
    metrics_route: bool = True  # False: /metrics is on AFPIPE_METRICS_PORT instead
    max_inflight_requests: int = 128
    max_body_buffer_bytes: int = 16 * 1024 * 1024
    body_timeout_s: float = 30.0
