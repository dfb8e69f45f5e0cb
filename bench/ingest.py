"""Ingest throughput: wrk posting AppsFlyer payloads at afpipe, and at the no-op ceiling.

    .venv/bin/python -m bench.ingest [--seconds 10] [--connections 64]

afpipe is pinned to core 0; wrk (one thread) and the SQS emulator to core 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    CLIENT_CORE,
    Server,
    afpipe_server,
    pin,
    report,
    table,
)
from bench.payloads import templates

LUA = Path(__file__).with_name("post.lua")
WEBHOOK = "/webhook/appsflyer"


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    statuses: dict[str, int]
    socket_errors: int
    cpu_pct: float
    peak_rss_mb: float


def write_bodies(count: int = 2000) -> Path:
    path = Path(tempfile.mkdtemp(prefix="afpipe-bench-")) / "bodies.jsonl"
    path.write_text("\n".join(templates(count)) + "\n")
    return path


def run_wrk(url: str, seconds: float, connections: int, bodies: Path) -> dict[str, object]:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")
    argv = [
        wrk, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "20s",
        "-s", str(LUA), url + WEBHOOK,
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv,
        env={**os.environ, "BENCH_BODIES": str(bodies)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    pin(proc.pid, CLIENT_CORE)
    out, _ = proc.communicate(timeout=seconds + 60)
    for line in out.splitlines():
        if line.startswith("BENCH_RESULT "):
            result: dict[str, object] = json.loads(line.removeprefix("BENCH_RESULT "))
            return result
    raise RuntimeError(f"wrk gave no result:\n{out}")


def measure(name: str, server: Server, seconds: float, connections: int, bodies: Path) -> Result:
    run_wrk(server.url, min(3.0, seconds), connections, bodies)  # warm up, not recorded
    cpu0, t0 = server.cpu_s(), time.monotonic()
    r = run_wrk(server.url, seconds, connections, bodies)
    cpu = server.cpu_s() - cpu0
    wall = time.monotonic() - t0
    statuses = {str(k): int(v) for k, v in dict(r["statuses"]).items()}  # type: ignore[call-overload]
    socket_errors = sum(int(r[k]) for k in ("connect", "read", "write", "timeout"))  # type: ignore[call-overload]
    duration_s = int(r["duration_us"]) / 1e6  # type: ignore[call-overload]
    return Result(
        name=name,
        rps=int(r["requests"]) / duration_s,  # type: ignore[call-overload]
        p50_ms=int(r["p50_us"]) / 1000,  # type: ignore[call-overload]
        p99_ms=int(r["p99_us"]) / 1000,  # type: ignore[call-overload]
        statuses=statuses,
        socket_errors=socket_errors,
        cpu_pct=100 * cpu / wall,
        peak_rss_mb=server.peak_rss_mb(),
    )


def with_server(
    name: str,
    argv_env: tuple[list[str] | None, Mapping[str, str]],
    seconds: float,
    connections: int,
    bodies: Path,
) -> Result:
    argv, env = argv_env
    server = Server(argv, env, "/health") if argv else afpipe_server(env)
    try:
        return measure(name, server, seconds, connections, bodies)
    finally:
        server.terminate()
        server.kill()


def start_fast_sqs() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.fast_sqs"], stdout=subprocess.PIPE, text=True
    )
    pin(proc.pid, CLIENT_CORE)
    assert proc.stdout is not None
    url = str(json.loads(proc.stdout.readline())["url"])
    return proc, url


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args(argv)
    bodies = write_bodies()
    noop = [sys.executable, "-m", "bench.noop_app"]
    results = [with_server("no-op ceiling", (noop, {}), args.seconds, args.connections, bodies)]
    embedded_only = {"ENABLE_SQS_CONSUMER": "false"}
    results.append(
        with_server("afpipe, embedded queue, no consumer", (None, embedded_only), args.seconds,
                    args.connections, bodies)
    )  # fmt: skip
    results.append(
        with_server("afpipe, embedded queue + embedded consumer", (None, {}), args.seconds,
                    args.connections, bodies)
    )  # fmt: skip
    sqs_proc, sqs_url = start_fast_sqs()
    try:
        sqs_env = {
            "SQS_QUEUE_URL": f"{sqs_url}/123456789012/bench-ingest",
            "AWS_ENDPOINT_URL_SQS": sqs_url,
            "ENABLE_SQS_CONSUMER": "false",
        }
        results.append(
            with_server("afpipe, SQS (bench.fast_sqs), no consumer", (None, sqs_env),
                        args.seconds, args.connections, bodies)
        )  # fmt: skip
    finally:
        sqs_proc.terminate()
        sqs_proc.wait(10)
    ceiling = results[0].rps
    rows = [
        [
            r.name, f"{r.rps:,.0f}", f"{100 * r.rps / ceiling:.0f}%", f"{r.p50_ms:.1f}",
            f"{r.p99_ms:.1f}", " ".join(f"{k}:{v}" for k, v in sorted(r.statuses.items())),
            r.socket_errors, f"{r.cpu_pct:.0f}%", f"{r.peak_rss_mb:.0f}",
        ]
        for r in results
    ]  # fmt: skip
    headers = ["server", "req/s", "of ceiling", "p50 ms", "p99 ms", "statuses",
               "socket errors", "server CPU", "peak RSS MB"]  # fmt: skip
    note = (
        f"wrk 1 thread, {args.connections} connections, {args.seconds:g} s after a warm-up; "
        "server pinned to core 0, wrk and the SQS emulator to core 1 (2 cores: the client "
        "still competes for memory bandwidth and the kernel's loopback work). One event per "
        "request, 0.8-1.8 KB bodies, 60% in-app with `event_value`. Target: afpipe ≥ 85% of "
        "the no-op ceiling."
    )
    report("Ingest throughput (bench.ingest)", table(headers, rows) + "\n\n" + note)
    shutil.rmtree(bodies.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
