"""An ``AFPIPE_WORKERS`` group's metrics: any worker's ``/metrics`` answers for all.

The supervisor (``afpipe.workers``) makes a private directory for the group and
hands it to its workers as ``PROMETHEUS_MULTIPROC_DIR``: prometheus_client then
keeps each worker's values in files there (its multiprocess mode), and the worker
that answers a scrape merges them: counters and histograms summed, each gauge as
its ``multiprocess_mode`` says (``afpipe.metrics``). A worker that exits has its
live gauges (what it held) removed; its counts stay, as Prometheus expects.

The workers' own ``process_*`` metrics (CPU, memory, descriptors) are left out:
a scrape would get one worker's at random. ``process_start_time_seconds`` is the
group's start, the same from every worker, so a restart of the group (the unit
of restart: a dying worker takes it down) is still one change.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

DIRECTORY = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own switch
STARTED_AT = "AFPIPE_WORKERS_STARTED_AT"  # Unix time the supervisor started the group


def in_group() -> bool:
    """Whether this process is a worker of a group (as prometheus_client decides it)."""
    return DIRECTORY in os.environ


@contextmanager
def group_environment() -> Iterator[dict[str, str]]:
    """The workers' metrics variables, with a fresh private directory (0700) for the
    group's files, removed when the group is done."""
    path = tempfile.mkdtemp(prefix="afpipe-metrics-")
    try:
        yield {DIRECTORY: path, STARTED_AT: repr(time.time())}
    finally:
        shutil.rmtree(path, ignore_errors=True)


def worker_exited(environment: Mapping[str, str], pid: int) -> None:
    """Drop the live gauges of a worker that is gone: it holds nothing any more."""
    mark_process_dead(pid, environment[DIRECTORY])  # type: ignore[no-untyped-call]


class _GroupStart(Collector):
    def __init__(self, started_s: float) -> None:
        self.started_s = started_s

    def collect(self) -> Iterable[Metric]:
        help_text = "When the AFPIPE_WORKERS group started (Unix time), from every worker"
        yield GaugeMetricFamily("process_start_time_seconds", help_text, value=self.started_s)


def exposition() -> bytes:
    """The whole group's metrics, from the directory's files."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    started = os.environ.get(STARTED_AT)
    if started:
        registry.register(_GroupStart(float(started)))
    return generate_latest(registry)
