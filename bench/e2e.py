"""End to end: webhook → SQS (bench.fast_sqs) → Redshift Data API emulator(s).

    .venv/bin/python -m bench.e2e [--seconds 30] [--rate 1000] [--batch 10]

Each emulated statement takes 500 ms and the Data API quotas are enforced
(ExecuteStatement 30/s, BatchExecuteStatement 20/s, DescribeStatement 100/s).
Runs primary only, then primary + secondary. afpipe on core 0; the generator,
the SQS emulator and the Redshift emulators (this process) on core 1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    CLIENT_CORE,
    afpipe_server,
    http_get,
    pct,
    pin,
    report,
    table,
)

STATEMENT_LATENCY_S = 0.5
ROW_POLL_S = 0.2


def start_fast_sqs() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.fast_sqs"], stdout=subprocess.PIPE, text=True
    )
    pin(proc.pid, CLIENT_CORE)
    assert proc.stdout is not None
    return proc, str(json.loads(proc.stdout.readline())["url"])


def sqs_calls(sqs_url: str) -> dict[str, int]:
    port = int(sqs_url.rsplit(":", 1)[1])
    calls: dict[str, int] = json.loads(http_get(port, "/_bench/stats")[1])["calls"]
    return calls


def start_redshift() -> Any:
    from tests.fixtures.redshift import start_emulator

    emu = start_emulator()
    emu.set_latency(STATEMENT_LATENCY_S)
    emu.enable_default_quotas()
    return emu


def afpipe_env(sqs_url: str, primary: Any, secondary: Any | None) -> dict[str, str]:
    from tests.emulators.redshift_data import TEST_CLUSTER, TEST_DATABASE, TEST_DB_USER
    from tests.fixtures.redshift import redshift_env

    q = f"{sqs_url}/123456789012"
    env = {
        "AWS_ENDPOINT_URL_SQS": sqs_url,
        "SQS_QUEUE_URL": f"{q}/afpipe",
        "AFPIPE_DLQ_URL": f"{q}/afpipe-dlq",
        **redshift_env(primary),
    }
    if secondary is not None:
        env.update(
            {
                "AFPIPE_SECONDARY_RETRY_QUEUE_URL": f"{q}/afpipe-retry",
                "SECONDARY_REDSHIFT_ENABLED": "true",
                "SECONDARY_REDSHIFT_ENDPOINT": secondary.url,
                "SECONDARY_REDSHIFT_CLUSTER_IDENTIFIER": TEST_CLUSTER,
                "SECONDARY_REDSHIFT_DATABASE": TEST_DATABASE,
                "SECONDARY_REDSHIFT_DB_USER": TEST_DB_USER,
            }
        )
    return env


class RowWatcher:
    """Polls the emulator for ids and remembers when each first appeared (monotonic)."""

    def __init__(self, emu: Any) -> None:
        self.emu = emu
        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(ROW_POLL_S):
            self.poll()

    def poll(self) -> None:
        try:
            rows = self.emu.query("SELECT id FROM public.appsflyer_events")
        except Exception:  # the table does not exist yet
            return
        now = time.monotonic()
        for (row_id,) in rows:
            self.seen.setdefault(str(row_id), now)

    def __enter__(self) -> RowWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def run_loadgen(url: str, rate: float, seconds: float, batch: int, out: Path) -> dict[str, Any]:
    argv = [
        sys.executable, "-m", "bench.loadgen", "--url", url, "--rate", str(rate),
        "--seconds", str(seconds), "--batch", str(batch), "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.Popen(argv)
    pin(proc.pid, CLIENT_CORE)
    proc.wait(seconds + 120)
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def wait_until(check: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.25)
    return check()


@dataclass
class E2eResult:
    name: str
    offered: float
    ingest_eps: float
    e2e_eps: float
    lag_p50_s: float
    lag_p99_s: float
    missing: int
    calls_per_1k: dict[str, float]
    statuses: dict[str, int]
    cpu_pct: float
    peak_rss_mb: float


def run_case(
    name: str, secondary: bool, rate: float, seconds: float, batch: int, drain_s: float
) -> E2eResult:
    with ExitStack() as stack:
        sqs_proc, sqs_url = start_fast_sqs()
        stack.callback(sqs_proc.wait, 10)
        stack.callback(sqs_proc.terminate)
        primary = start_redshift()
        stack.callback(primary.close)
        second = start_redshift() if secondary else None
        if second is not None:
            stack.callback(second.close)
        server = afpipe_server(afpipe_env(sqs_url, primary, second))
        stack.callback(server.kill)
        watcher = stack.enter_context(RowWatcher(primary))
        stack.enter_context(RowWatcher(second)) if second is not None else None
        time.sleep(1.0)  # let the table be created and the pollers start
        sqs0, rs0 = sqs_calls(sqs_url), dict(primary.calls)
        rs0b = dict(second.calls) if second is not None else {}
        cpu0, t0 = server.cpu_s(), time.monotonic()
        out = Path(tempfile.mkdtemp(prefix="afpipe-bench-")) / "loadgen.json"
        gen = run_loadgen(server.url, rate, seconds, batch, out)
        acked = {str(i): float(t) for i, t in gen["acked"]}
        wait_until(lambda: all(i in watcher.seen for i in acked), drain_s)
        watcher.poll()
        cpu = server.cpu_s() - cpu0
        wall = time.monotonic() - t0
        sqs1, rs1 = sqs_calls(sqs_url), dict(primary.calls)
        rs1b = dict(second.calls) if second is not None else {}
        peak_rss_mb = server.peak_rss_mb()
        server.terminate()
    lags = sorted(watcher.seen[i] - t for i, t in acked.items() if i in watcher.seen)
    committed = [watcher.seen[i] for i in acked if i in watcher.seen]
    first_send = min(acked.values(), default=t0)
    e2e_span = (max(committed) - first_send) if committed else float("nan")
    n = max(1, len(acked))
    calls: dict[str, float] = {}
    for prefix, before, after in (("SQS", sqs0, sqs1), ("RS", rs0, rs1), ("RS2", rs0b, rs1b)):
        for op, count in after.items():
            delta = count - before.get(op, 0)
            if delta:
                calls[f"{prefix} {op}"] = 1000 * delta / n
    return E2eResult(
        name=name,
        offered=rate,
        ingest_eps=len(acked) / float(gen["elapsed_s"]),
        e2e_eps=len(committed) / e2e_span if committed else 0.0,
        lag_p50_s=pct(lags, 0.5),
        lag_p99_s=pct(lags, 0.99),
        missing=len(acked) - len(committed),
        calls_per_1k=calls,
        statuses=dict(gen["statuses"]),
        cpu_pct=100 * cpu / wall,
        peak_rss_mb=peak_rss_mb,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.e2e")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=1000.0, help="offered events/s")
    parser.add_argument("--batch", type=int, default=10, help="events per request")
    parser.add_argument("--drain-s", type=float, default=60.0)
    args = parser.parse_args(argv)
    pin(os.getpid(), CLIENT_CORE)
    results = [
        run_case(name, secondary, args.rate, args.seconds, args.batch, args.drain_s)
        for name, secondary in (("primary only", False), ("primary + secondary", True))
    ]
    rows = [
        [
            r.name, f"{r.offered:,.0f}", f"{r.ingest_eps:,.0f}", f"{r.e2e_eps:,.0f}",
            f"{100 * r.e2e_eps / r.ingest_eps:.0f}%" if r.ingest_eps else "-",
            f"{r.lag_p50_s:.2f}", f"{r.lag_p99_s:.2f}", r.missing,
            f"{sum(r.calls_per_1k.values()):.0f}",
            " ".join(f"{k}:{v}" for k, v in sorted(r.statuses.items())),
            f"{r.cpu_pct:.0f}%", f"{r.peak_rss_mb:.0f}",
        ]
        for r in results
    ]  # fmt: skip
    headers = ["case", "offered ev/s", "acked ev/s", "committed ev/s", "e2e/ingest",
               "lag p50 s", "lag p99 s", "acked not in table", "AWS calls/1k ev",
               "HTTP statuses", "afpipe CPU", "peak RSS MB"]  # fmt: skip
    ops = sorted({op for r in results for op in r.calls_per_1k})
    by_op = table(
        ["AWS calls per 1,000 events", *[r.name for r in results]],
        [[op, *[f"{r.calls_per_1k.get(op, 0):.1f}" for r in results]] for op in ops],
    )
    note = (
        f"{args.seconds:g} s at {args.rate:g} events/s offered, {args.batch} events per request "
        "(JSON array), 64 connections; fast_sqs as SQS; Redshift Data API emulator(s) with "
        f"{STATEMENT_LATENCY_S * 1000:.0f} ms per statement and default quotas; afpipe defaults "
        "otherwise. Lag = first time the id is seen in the primary table (polled every "
        f"{ROW_POLL_S * 1000:.0f} ms) minus when its request was sent. Targets: e2e ≥ 90% of "
        "ingest, lag p99 ≤ 5 s at 1,000 ev/s, ≤ 200 AWS calls per 1,000 events."
    )
    report("End to end (bench.e2e)", table(headers, rows) + "\n\n" + by_op + "\n\n" + note)


if __name__ == "__main__":
    main()
