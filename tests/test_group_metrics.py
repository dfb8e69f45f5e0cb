"""An AFPIPE_WORKERS group's metrics: the workers' values combined, gauges kept current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import trio
import trio.testing
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from afpipe import group_metrics, metrics
from afpipe.observed import Observed
from tests.daemon import subprocess_env

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

# What one worker does: the counts and gauges it moves, by its number k (1, 2).
WORKER = """
import os, sys
from afpipe import metrics
k = int(sys.argv[1])
metrics.EVENTS_ACCEPTED.inc(k)
metrics.LOAD_SECONDS.labels("primary").observe(0.2 * k)
metrics.OBSERVED.observe(metrics.MESSAGES_IN_FLIGHT.labels("main"), lambda: k)
metrics.OBSERVED.observe(metrics.LAG_SECONDS.labels("main"), lambda: 10.0 * k)
metrics.LAST_LOAD.labels("primary").set(300 - 100 * k)
metrics.QUEUE_MESSAGES.labels("main", "visible").set(5 * k)
print(os.getpid())
"""

EXPOSE = "import sys; from afpipe import metrics; print(metrics.exposition()[0].decode())"


def in_group(directory: Path, code: str, *args: str) -> str:
    env = {group_metrics.DIRECTORY: str(directory), group_metrics.STARTED_AT: "1700000000.5"}
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=subprocess_env(env),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


def merged(directory: Path) -> Samples:
    files = [str(path) for path in directory.glob("*.db")]
    families = MultiProcessCollector.merge(files)  # type: ignore[no-untyped-call]
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in families
        for s in family.samples
    }


def test_workers_values_are_summed_or_the_latest_or_the_worst(tmp_path: Path) -> None:
    pids = [int(in_group(tmp_path, WORKER, str(k))) for k in (1, 2)]  # 2 samples last
    values = merged(tmp_path)
    assert values[("afpipe_events_accepted_total", ())] == 3
    assert values[("afpipe_load_seconds_count", (("target", "primary"),))] == 2
    assert values[("afpipe_messages_in_flight", (("queue", "main"),))] == 3  # summed
    assert values[("afpipe_lag_seconds", (("queue", "main"),))] == 20  # the worst
    assert values[("afpipe_last_load_timestamp_seconds", (("target", "primary"),))] == 200
    visible = ("afpipe_queue_messages", (("queue", "main"), ("state", "visible")))
    assert values[visible] == 10  # the latest sample of the one queue, not 5 + 10

    group_metrics.worker_exited({group_metrics.DIRECTORY: str(tmp_path)}, pids[1])
    values = merged(tmp_path)
    assert values[("afpipe_events_accepted_total", ())] == 3  # its counts stay
    assert values[("afpipe_messages_in_flight", (("queue", "main"),))] == 1  # it holds nothing
    assert values[("afpipe_lag_seconds", (("queue", "main"),))] == 10
    assert values[("afpipe_last_load_timestamp_seconds", (("target", "primary"),))] == 200
    assert values[visible] == 5


def test_a_worker_s_exposition_is_the_group_s_with_the_group_s_start(tmp_path: Path) -> None:
    for k in (1, 2):
        in_group(tmp_path, WORKER, str(k))
    text = in_group(tmp_path, EXPOSE)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["afpipe_events_accepted"].samples[0].value == 3
    assert [s.value for s in families["process_start_time_seconds"].samples] == [1700000000.5]
    assert not [name for name in families if name.startswith("process_") and "start" not in name]
    assert not [s for f in families.values() for s in f.samples if "pid" in s.labels]


def test_the_group_directory_is_private_and_removed_when_the_group_is_done() -> None:
    with group_metrics.group_environment() as env:
        directory = Path(env[group_metrics.DIRECTORY])
        assert directory.is_dir() and not list(directory.iterdir())
        assert directory.stat().st_mode & 0o777 == 0o700
        (directory / "counter_1.db").write_bytes(b"")
    assert not directory.exists()


def test_every_gauge_says_how_a_group_combines_it() -> None:
    modes = {
        name: getattr(value, "_multiprocess_mode", None)
        for name, value in vars(metrics).items()
        if isinstance(value, Gauge)
    }
    assert modes and "all" not in modes.values()  # "all" would export one series per pid


def observed_gauge() -> Gauge:
    return Gauge("held", "held", registry=CollectorRegistry())


def value(gauge: Gauge) -> float:
    return next(iter(gauge.collect())).samples[0].value


def test_alone_a_gauge_reads_its_function_at_each_scrape() -> None:
    held, gauge = [2], observed_gauge()
    Observed(written=False).observe(gauge, lambda: held[0])
    held[0] = 5
    assert value(gauge) == 5


async def test_in_a_group_a_gauge_is_written_every_second(
    autojump_clock: trio.testing.MockClock,
) -> None:
    held, gauge = [2], observed_gauge()
    observed = Observed(written=True)
    observed.observe(gauge, lambda: held[0])
    assert value(gauge) == 2  # written at once
    async with trio.open_nursery() as nursery:
        nursery.start_soon(observed.refresh_every, 1.0)
        held[0] = 5
        await trio.sleep(0.9)
        assert value(gauge) == 2
        await trio.sleep(0.2)
        assert value(gauge) == 5
        nursery.cancel_scope.cancel()
    held[0] = 7
    observed.refresh()  # as before a scrape
    assert value(gauge) == 7
