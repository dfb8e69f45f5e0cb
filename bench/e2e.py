"""End to end: webhook → SQS (bench.fast_sqs) → Redshift Data API emulator(s).

    .venv/bin/python -m bench.e2e [--seconds 30] [--rate 1000] [--batch 1]
                                  [--cases inline,inline+secondary,staged,staged+secondary]
                                  [--no-doc] [--env NAME=VALUE ...] [--status-svg PATH]

Each emulated statement takes 500 ms and the Data API quotas are enforced
(ExecuteStatement 30/s, BatchExecuteStatement 20/s, DescribeStatement 100/s).
``inline`` loads with SQL text only (the Data API's 100 KB per call); ``staged``
sets AFPIPE_S3_STAGING_URI, so large batches go through S3 (moto in server mode)
and COPY. afpipe on core 0; the generator, the SQS emulator, moto and the
Redshift emulators (this process) on core 1.
"""

from __future__ import annotations

import argparse
import dataclasses
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
    Server,
    afpipe_server,
    http_get,
    pct,
    pin,
    report,
    table,
)
from bench.terminal import afpipe_status, write_svg

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


def start_redshift(s3_url: str | None, batch_limit: str = "total") -> Any:
    """An emulator; ``batch_limit``: whether the Data API's 100 KB counts a call's
    texts together ("total") or each alone ("per_text"); AWS does not document it."""
    from tests.fixtures.redshift import EMULATOR_SETTINGS, settings_with_s3, start_emulator

    settings = settings_with_s3(s3_url) if s3_url else EMULATOR_SETTINGS
    emu = start_emulator(dataclasses.replace(settings, batch_limit=batch_limit))
    emu.set_latency(STATEMENT_LATENCY_S)
    emu.enable_default_quotas()
    return emu


class S3:
    """moto in server mode (pinned to the client core) with one staging bucket."""

    BUCKET = "afpipe-bench-staging"
    ROLE = "arn:aws:iam::123456789012:role/afpipe-bench-copy"

    def __init__(self) -> None:
        import boto3
        from botocore.config import Config

        from tests.faults.harness import Moto

        self.moto = Moto(Path(tempfile.mkdtemp(prefix="afpipe-bench-moto-")))
        pin(self.moto._process.pid, CLIENT_CORE)
        self.url = self.moto.url
        self.client: Any = boto3.client(
            "s3",
            region_name="us-east-1",
            endpoint_url=self.url,
            aws_access_key_id="AKIDAFPIPETESTING",
            aws_secret_access_key="afpipe-testing-secret",
            config=Config(s3={"addressing_style": "path"}),
        )
        self.client.create_bucket(Bucket=self.BUCKET)

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL_S3": self.url,
            "AFPIPE_S3_STAGING_URI": f"s3://{self.BUCKET}/loads/",
            "AFPIPE_COPY_IAM_ROLE": self.ROLE,
        }

    def leftover_objects(self) -> int:
        return int(self.client.list_objects_v2(Bucket=self.BUCKET).get("KeyCount", 0))

    def close(self) -> None:
        self.moto.close()


def staged_loads(port: int) -> float:
    """afpipe's own count of COPY loads (each is one PutObject and one DeleteObject)."""
    text = http_get(port, "/metrics")[1].decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("afpipe_staged_loads_total{")
    )


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
    ack_p50_ms: float
    ack_p99_ms: float


def show_status(server: Server, svg: Path, case: str) -> None:
    """Print ``afpipe status`` once the events are in the table; draw it in ``svg``."""
    text = afpipe_status(server)
    print(text)
    write_svg(text, svg, f"$ afpipe status      (bench.e2e, {case})")


def run_case(
    name: str,
    secondary: bool,
    s3: S3 | None,
    rate: float,
    seconds: float,
    batch: int,
    drain_s: float,
    extra_env: dict[str, str] | None = None,
    batch_limit: str = "total",
    status_to: Path | None = None,
) -> E2eResult:
    with ExitStack() as stack:
        sqs_proc, sqs_url = start_fast_sqs()
        stack.callback(sqs_proc.wait, 10)
        stack.callback(sqs_proc.terminate)
        s3_url = s3.url if s3 is not None else None
        primary = start_redshift(s3_url, batch_limit)
        stack.callback(primary.close)
        second = start_redshift(s3_url, batch_limit) if secondary else None
        if second is not None:
            stack.callback(second.close)
        env = afpipe_env(sqs_url, primary, second)
        if s3 is not None:
            env.update(s3.env())
        env.update(extra_env or {})
        server = afpipe_server(env)
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
        if status_to is not None:
            show_status(server, status_to, name)
        cpu = server.cpu_s() - cpu0
        wall = time.monotonic() - t0
        sqs1, rs1 = sqs_calls(sqs_url), dict(primary.calls)
        rs1b = dict(second.calls) if second is not None else {}
        staged = staged_loads(server.port) if s3 is not None else 0.0
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
    if staged:
        calls["S3 PutObject + DeleteObject"] = 1000 * 2 * staged / n
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
        ack_p50_ms=float(gen["p50_ms"]),
        ack_p99_ms=float(gen["p99_ms"]),
    )


LIMIT_WORDS = {"total": "a call's texts together", "per_text": "each SQL text alone"}

CASES = {
    "inline": ("primary only, inline SQL", False, False),
    "inline+secondary": ("primary + secondary, inline SQL", True, False),
    "staged": ("primary only, S3 staging + COPY", False, True),
    "staged+secondary": ("primary + secondary, S3 staging + COPY", True, True),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.e2e")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=1000.0, help="offered events/s")
    parser.add_argument(
        "--batch", type=int, default=1, help="events per request (AppsFlyer posts one)"
    )
    parser.add_argument("--drain-s", type=float, default=60.0)
    parser.add_argument("--cases", default=",".join(CASES), help=f"of: {', '.join(CASES)}")
    parser.add_argument("--no-doc", action="store_true", help="print only; do not append")
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="afpipe setting"
    )
    parser.add_argument(
        "--batch-limit",
        choices=["total", "per_text"],
        default="total",
        help="the emulated Data API's 100 KB: for a call's texts together, or each alone",
    )
    parser.add_argument(
        "--status-svg",
        type=Path,
        default=None,
        metavar="PATH",
        help="print afpipe status at the end of each case and draw the last in PATH",
    )
    args = parser.parse_args(argv)
    extra = dict(item.split("=", 1) for item in args.env)
    chosen = [c.strip() for c in args.cases.split(",") if c.strip()]
    if unknown := sorted(set(chosen) - set(CASES)):
        parser.error(f"unknown case(s): {', '.join(unknown)}")
    pin(os.getpid(), CLIENT_CORE)
    s3 = S3() if any(CASES[c][2] for c in chosen) else None
    try:
        results = [
            run_case(CASES[c][0], CASES[c][1], s3 if CASES[c][2] else None, args.rate,
                     args.seconds, args.batch, args.drain_s, extra, args.batch_limit,
                     args.status_svg)
            for c in chosen
        ]  # fmt: skip
        leftovers = s3.leftover_objects() if s3 is not None else 0
    finally:
        if s3 is not None:
            s3.close()
    rows = [
        [
            r.name, f"{r.offered:,.0f}", f"{r.ingest_eps:,.0f}", f"{r.e2e_eps:,.0f}",
            f"{100 * r.e2e_eps / r.ingest_eps:.0f}%" if r.ingest_eps else "-",
            f"{r.ack_p50_ms:.0f} / {r.ack_p99_ms:.0f}",
            f"{r.lag_p50_s:.2f}", f"{r.lag_p99_s:.2f}", r.missing,
            f"{sum(r.calls_per_1k.values()):.0f}",
            " ".join(f"{k}:{v}" for k, v in sorted(r.statuses.items())),
            f"{r.cpu_pct:.0f}%", f"{r.peak_rss_mb:.0f}",
        ]
        for r in results
    ]  # fmt: skip
    headers = ["case", "offered ev/s", "acked ev/s", "committed ev/s", "e2e/ingest",
               "ack p50 / p99 ms", "lag p50 s", "lag p99 s", "acked not in table",
               "AWS calls/1k ev", "HTTP statuses", "afpipe CPU", "peak RSS MB"]  # fmt: skip
    ops = sorted({op for r in results for op in r.calls_per_1k})
    by_op = table(
        ["AWS calls per 1,000 events", *[r.name for r in results]],
        [[op, *[f"{r.calls_per_1k.get(op, 0):.1f}" for r in results]] for op in ops],
    )
    overrides = "".join(f", {k}={v}" for k, v in extra.items())
    overrides += f"; the emulated Data API's 100 KB counts {LIMIT_WORDS[args.batch_limit]}"
    note = (
        f"{args.seconds:g} s at {args.rate:g} events/s offered, "
        + (
            "one event per request (a JSON object, as AppsFlyer posts)"
            if args.batch == 1
            else f"{args.batch} events per request (JSON array)"
        )
        + ", 64 connections; fast_sqs as SQS; Redshift Data API emulator(s) with "
        f"{STATEMENT_LATENCY_S * 1000:.0f} ms per statement and default quotas; afpipe defaults "
        f"otherwise{overrides}. Lag = first time the id is seen in the primary table (polled every "
        f"{ROW_POLL_S * 1000:.0f} ms) minus when its request was sent. Targets: e2e ≥ 90% of "
        "ingest, lag p99 ≤ 5 s at 1,000 ev/s, ≤ 200 AWS calls per 1,000 events. Staged cases: "
        "S3 is moto in server mode; S3 calls are counted from afpipe's "
        f"afpipe_staged_loads_total (one PUT and one DELETE each); staged objects left in the "
        f"bucket at the end: {leftovers}."
    )
    body = table(headers, rows) + "\n\n" + by_op + "\n\n" + note
    report("End to end (bench.e2e)", body, write=not args.no_doc)


if __name__ == "__main__":
    main()
