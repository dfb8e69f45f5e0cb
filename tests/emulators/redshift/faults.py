"""Quotas and failure injection, all changeable while the emulator runs."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass

# The Data API's per-account, per-region request quotas (requests per second).
DEFAULT_RATE_LIMITS = {
    "ExecuteStatement": 30.0,
    "BatchExecuteStatement": 20.0,
    "DescribeStatement": 100.0,
    "GetStatementResult": 20.0,
}


class TokenBucket:
    """`rate_per_s` tokens a second, bursts up to one second's worth."""

    def __init__(self, rate_per_s: float) -> None:
        self.rate_per_s = rate_per_s
        self._capacity = max(1.0, rate_per_s)
        self._tokens = self._capacity
        self._stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self.rate_per_s)
        self._stamp = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


@dataclass(frozen=True, slots=True)
class StatementFault:
    error: str | None = None  # the statement FAILS with this Redshift error text
    hang: bool = False  # the statement runs until cancelled


class Faults:
    def __init__(self, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._buckets: dict[str, TokenBucket] = {}
        self._statement_faults: deque[StatementFault] = deque()
        self._request_errors: Counter[str | None] = Counter()
        self.internal_error_probability = 0.0
        self.hang_all = False
        self.max_active_statements: int | None = None
        self.latency_s = 0.0
        # CancelStatement comes too late: the statement is past cancelling (committing),
        # so the answer is {"Status": false} and it runs on and commits.
        self.cancel_loses_race = False
        self.unavailable = False  # every request answers 503, as in an outage
        self.cancel_delay_s = 0.0  # CancelStatement answers (and acts) this late
        # Statements whose SQL holds a needle FAIL with its text (until cleared): a row
        # Redshift refuses with an error afpipe may not know.
        self.failing_needles: dict[str, str] = {}

    def set_needle_error(self, needle: str, error: str | None) -> None:
        with self._lock:
            if error is None:
                self.failing_needles.pop(needle, None)
            else:
                self.failing_needles[needle] = error

    def needle_error(self, sqls: list[str]) -> str | None:
        with self._lock:
            for needle, error in self.failing_needles.items():
                if any(needle in sql for sql in sqls):
                    return error
        return None

    def set_rate_limit(self, operation: str, per_s: float | None) -> None:
        with self._lock:
            if per_s is None:
                self._buckets.pop(operation, None)
            else:
                self._buckets[operation] = TokenBucket(per_s)

    def allow(self, operation: str) -> bool:
        with self._lock:
            bucket = self._buckets.get(operation)
            return bucket is None or bucket.take()

    def fail_next_requests(self, count: int, operation: str | None = None) -> None:
        with self._lock:
            self._request_errors[operation] += count

    def internal_error(self, operation: str) -> bool:
        """Whether this request answers 500: queued errors first, then the dice."""
        with self._lock:
            for key in (operation, None):
                if self._request_errors[key] > 0:
                    self._request_errors[key] -= 1
                    return True
            return self._rng.random() < self.internal_error_probability

    def add_statement_faults(self, fault: StatementFault, count: int) -> None:
        with self._lock:
            self._statement_faults.extend([fault] * count)

    def take_statement_fault(self) -> StatementFault | None:
        with self._lock:
            if self._statement_faults:
                return self._statement_faults.popleft()
            return StatementFault(hang=True) if self.hang_all else None

    def reset(self) -> None:
        with self._lock:
            self._buckets.clear()
            self._statement_faults.clear()
            self._request_errors.clear()
            self.internal_error_probability = 0.0
            self.hang_all = False
            self.max_active_statements = None
            self.latency_s = 0.0
            self.cancel_loses_race = False
            self.unavailable = False
            self.cancel_delay_s = 0.0
            self.failing_needles.clear()
