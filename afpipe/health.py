"""Readiness: what /ready answers, from what the components last saw.

Components report each backend call's outcome; /ready is 503 while starting,
while draining, and once the queue has been failing for longer than
``fail_after_s`` (a single blip does not flap it). Only the queue counts: /ready
is what load balancers watch, and ingest needs nothing but the queue to make an
event durable; a warehouse that is down only delays loading (it is still
reported by ``failing``, for logs and status). /health stays liveness only.
"""

from __future__ import annotations

import trio

INGEST_BACKENDS = frozenset({"queue"})  # what /ready depends on (invariant 2)


class Health:
    def __init__(self, fail_after_s: float) -> None:
        self.fail_after_s = fail_after_s
        self.serving = False
        self.draining = False
        self._failing_since: dict[str, float] = {}

    def ok(self, backend: str) -> None:
        self._failing_since.pop(backend, None)

    def failed(self, backend: str) -> None:
        self._failing_since.setdefault(backend, trio.current_time())

    def failing(self) -> list[str]:
        """Backends failing for longer than ``fail_after_s``."""
        now = trio.current_time()
        return sorted(
            name for name, since in self._failing_since.items() if now - since >= self.fail_after_s
        )

    def ready(self) -> tuple[bool, str]:
        if self.draining:
            return False, "draining"
        if not self.serving:
            return False, "starting"
        failing = [name for name in self.failing() if name in INGEST_BACKENDS]
        if failing:
            return False, "failing: " + ", ".join(failing)
        return True, "ready"
