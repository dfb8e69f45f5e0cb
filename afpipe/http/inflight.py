"""The one count of HTTP requests in flight, read by the drain and by admission.

Every request counts from the moment the observer sees it until its answer has
gone out (``requests``): the drain ends as soon as none is left, rather than
waiting out keep-alive connections to the whole graceful timeout. Among them,
the webhook requests admitted and still being handled (``admitted``) are what
``max_inflight_requests`` bounds; refused ones never take a slot.
"""

from __future__ import annotations

import trio


class RequestsInFlight:
    def __init__(self) -> None:
        self.requests = 0  # every HTTP request being handled, refused ones included
        self.admitted = 0  # of those, webhook requests admitted and still being handled
        self._idle = trio.Event()
        self._idle.set()

    def start(self) -> None:
        self.requests += 1
        if self._idle.is_set():
            self._idle = trio.Event()

    def end(self) -> None:
        self.requests -= 1
        if self.requests == 0:
            self._idle.set()

    async def wait_idle(self) -> None:
        while self.requests:
            await self._idle.wait()
