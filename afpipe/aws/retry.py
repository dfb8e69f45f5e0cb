"""Retry policy: capped exponential backoff with full jitter, and a retry budget.

The budget is botocore's "standard" retry quota: a token bucket shared by
every call to one service. A retry spends tokens (more after a timeout), a
success puts some back, so a sustained outage stops retries instead of
multiplying the load on a struggling service. Pure; no I/O, no clock.
"""

from __future__ import annotations

import msgspec


class RetryPolicy(msgspec.Struct, frozen=True):
    max_attempts: int = 5  # attempts per call, the first one included
    base_delay_s: float = 0.5
    max_delay_s: float = 20.0
    quota_tokens: int = 500
    retry_cost_tokens: int = 5
    timeout_retry_cost_tokens: int = 10  # a timeout suggests a struggling service
    success_refund_tokens: int = 1  # a first-attempt success

    def retry_cost(self, *, timeout: bool) -> int:
        return self.timeout_retry_cost_tokens if timeout else self.retry_cost_tokens


def backoff_s(policy: RetryPolicy, retry_index: int, rand: float) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**retry_index)); ``rand`` in [0, 1)."""
    ceiling_s = min(policy.max_delay_s, policy.base_delay_s * 2.0 ** min(retry_index, 62))
    return rand * ceiling_s


class RetryQuota:
    """Tokens available for retries; starts full."""

    def __init__(self, capacity_tokens: int) -> None:
        self.capacity_tokens = capacity_tokens
        self.available_tokens = capacity_tokens

    def acquire(self, cost_tokens: int) -> bool:
        if cost_tokens > self.available_tokens:
            return False
        self.available_tokens -= cost_tokens
        return True

    def release(self, tokens: int) -> None:
        self.available_tokens = min(self.capacity_tokens, self.available_tokens + tokens)
