"""Gauges read from the process's own state (messages held, the channel, the producer).

Alone, a process reads them at each scrape (``Gauge.set_function``), as it always
did. In an ``AFPIPE_WORKERS`` group that cannot work: the worker that answers a
scrape reads the other workers' values from their metric files, which hold what
was last ``set``. So there each worker writes its values now, every
``REFRESH_EVERY_S``, and before it answers a scrape: another worker's value is at
most that old.
"""

from __future__ import annotations

from collections.abc import Callable

import trio
from prometheus_client import Gauge

REFRESH_EVERY_S = 1.0


class Observed:
    """The gauges whose values are read from a function, and how they are kept current."""

    def __init__(self, *, written: bool) -> None:
        self.written = written  # True in a worker group: values must be set to be seen
        self._reads: dict[Gauge, Callable[[], float]] = {}

    def observe(self, gauge: Gauge, read: Callable[[], float]) -> None:
        """``gauge`` reports ``read()``; a later call for the same gauge replaces it."""
        if not self.written:
            gauge.set_function(read)
            return
        self._reads[gauge] = read
        gauge.set(read())

    def refresh(self) -> None:
        for gauge, read in self._reads.items():
            gauge.set(read())

    async def refresh_every(self, every_s: float = REFRESH_EVERY_S) -> None:
        while True:
            await trio.sleep(every_s)
            self.refresh()
