"""What the HTTP ingest is told: limits, token, allowed sources (from afpipe.config)."""

from __future__ import annotations

from collections.abc import Sequence

from afpipe.sources import Network


class IngestConfig:
    def __init__(
        self,
        *,
        max_body_bytes: int,
        max_message_bytes: int,
        enqueue_timeout_s: float,
        token: str = "",
        token_header: str = "Authorization",
        consumer_enabled: bool = True,
        allowed_networks: Sequence[Network] = (),
        trusted_proxies: Sequence[Network] = (),
        max_inflight_requests: int = 128,
        max_body_buffer_bytes: int = 16 * 1024 * 1024,
        body_timeout_s: float = 30.0,
    ) -> None:
        self.max_inflight_requests = max_inflight_requests
        self.max_body_buffer_bytes = max_body_buffer_bytes
        self.body_timeout_s = body_timeout_s
        self.allowed_networks = allowed_networks
        self.trusted_proxies = trusted_proxies
        self.max_body_bytes = max_body_bytes
        self.max_message_bytes = max_message_bytes
        self.enqueue_timeout_s = enqueue_timeout_s
        self.token = token
        self.token_header = token_header
        self.consumer_enabled = consumer_enabled
