"""ASGI wrapper around the app: requests in flight, per-route metrics, access log.

Counting requests in flight lets the drain end as soon as none is left:
hypercorn's graceful shutdown otherwise waits for every connection to close,
which keep-alive clients can stretch to the whole graceful timeout.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import trio

from afpipe import metrics

access_log = logging.getLogger("afpipe.access")

KNOWN_ROUTES = frozenset({"/webhook/appsflyer", "/health", "/ready", "/api/hello", "/metrics"})


class HttpObserver:
    def __init__(self, app: Any, *, access_log_sample: float = 1.0) -> None:
        self.app = app
        self.access_log_sample = access_log_sample
        self.count = 0
        self._idle = trio.Event()
        self._idle.set()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.count += 1
        if self._idle.is_set():
            self._idle = trio.Event()
        status = [500]
        started = time.perf_counter()

        async def observed_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            self.count -= 1
            if self.count == 0:
                self._idle.set()
            self._record(scope, status[0], time.perf_counter() - started)

    def _record(self, scope: Any, status: int, elapsed_s: float) -> None:
        path = scope.get("path", "")
        route = path if path in KNOWN_ROUTES else "other"  # bounded label values
        metrics.HTTP_REQUESTS.labels(route, str(status)).inc()
        sample = self.access_log_sample
        if sample >= 1 or (sample > 0 and random.random() < sample):
            access_log.info(
                "request",
                extra={
                    "method": scope.get("method"),
                    "path": path,
                    "status": status,
                    "duration_ms": round(elapsed_s * 1000, 2),
                    "client": (scope.get("client") or ("", 0))[0],
                },
            )

    async def wait_idle(self) -> None:
        while self.count:
            await self._idle.wait()
