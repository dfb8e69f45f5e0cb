"""ASGI wrapper around the app: requests in flight, per-route metrics, access log.

Every HTTP request is counted in flight (``RequestsInFlight.requests``) from
here, so the drain can end as soon as none is left: hypercorn's graceful
shutdown otherwise waits for every connection to close, which keep-alive
clients can stretch to the whole graceful timeout.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from afpipe import metrics
from afpipe.http.inflight import RequestsInFlight
from afpipe.http.routes import ROUTES

access_logger = logging.getLogger("afpipe.access")


class HttpObserver:
    def __init__(
        self, app: Any, in_flight: RequestsInFlight, *, access_log_ratio: float = 1.0
    ) -> None:
        self.app = app
        self.in_flight = in_flight
        self.access_log_ratio = access_log_ratio  # the share of requests logged, 0 to 1

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.in_flight.start()
        status = [500]
        started = time.perf_counter()

        async def observed_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            self.in_flight.end()
            self._record(scope, status[0], time.perf_counter() - started)

    def _record(self, scope: Any, status: int, elapsed_s: float) -> None:
        path = scope.get("path", "")
        route = path if path in ROUTES else "other"  # bounded label values
        metrics.HTTP_REQUESTS.labels(route, str(status)).inc()
        metrics.HTTP_SECONDS.labels(route).observe(elapsed_s)
        ratio = self.access_log_ratio
        if ratio >= 1 or (ratio > 0 and random.random() < ratio):
            access_logger.info(
                "request",
                extra={
                    "method": scope.get("method"),
                    "path": path,
                    "status": status,
                    "duration_ms": round(elapsed_s * 1000, 2),
                    "client": (scope.get("client") or ("", 0))[0],
                },
            )
