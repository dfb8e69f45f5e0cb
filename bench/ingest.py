"""Ingest throughput: wrk posting AppsFlyer payloads at afpipe, and at the no-op ceiling.

    .venv/bin/python -m bench.ingest [--seconds 10] [--connections 64] [--cases a,b] [--no-doc]

afpipe is pinned to core 0; wrk (one thread) and the SQS emulator to core 1. The
``workers`` case runs AFPIPE_WORKERS=1 and 2 unpinned, wrk with them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
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


def run_wrk(
    url: str,
    seconds: float,
    connections: int,
    bodies: Path,
    *,
    client_cores: set[int] | None = None,
    threads: int = 1,
) -> dict[str, object]:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")
    argv = [
        wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "20s",
        "-s", str(LUA), url + WEBHOOK,
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv,
        env={**os.environ, "BENCH_BODIES": str(bodies)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if client_cores is None:
        pin(proc.pid, CLIENT_CORE)
    else:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(proc.pid, client_cores)
    out, _ = proc.communicate(timeout=seconds + 60)
    for line in out.splitlines():
        if line.startswith("BENCH_RESULT "):
            result: dict[str, object] = json.loads(line.removeprefix("BENCH_RESULT "))
            return result
    raise RuntimeError(f"wrk gave no result:\n{out}")


def measure(
    name: str,
    server: Server,
    seconds: float,
    connections: int,
    bodies: Path,
    *,
    client_cores: set[int] | None = None,
    threads: int = 1,
) -> Result:
    wrk = partial(run_wrk, client_cores=client_cores, threads=threads)
    wrk(server.url, min(3.0, seconds), connections, bodies)  # warm up, not recorded
    cpu0, t0 = server.cpu_s(), time.monotonic()
    r = wrk(server.url, seconds, connections, bodies)
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


CASES = ("noop", "noop-raw", "embedded", "embedded-consumer", "sqs", "workers")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--cases", default=",".join(CASES), help=f"comma-separated, of: {', '.join(CASES)}"
    )
    parser.add_argument("--no-doc", action="store_true", help="print only; do not append")
    args = parser.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        parser.error(f"unknown case(s): {', '.join(unknown)}")
    bodies = write_bodies()
    try:
        results = single_process(cases, args.seconds, args.connections, bodies)
        if results:
            report(
                "Ingest throughput (bench.ingest)",
                _single_table(results, args.connections, args.seconds),
                write=not args.no_doc,
            )
        if "workers" in cases:
            report(
                "Ingest scaling with AFPIPE_WORKERS (bench.ingest)",
                workers_scaling(args.seconds, args.connections, bodies),
                write=not args.no_doc,
            )
    finally:
        shutil.rmtree(bodies.parent, ignore_errors=True)


def single_process(
    cases: list[str], seconds: float, connections: int, bodies: Path
) -> list[Result]:
    noop = [sys.executable, "-m", "bench.noop_app"]
    no_consumer = {"ENABLE_SQS_CONSUMER": "false"}
    plan: list[tuple[str, str, tuple[list[str] | None, Mapping[str, str]]]] = [
        ("noop", "no-op ceiling (Quart route)", (noop, {})),
        ("noop-raw", "no-op ceiling (bare ASGI route)", ([*noop, "--raw"], {})),
        ("embedded", "afpipe, embedded queue, no consumer", (None, no_consumer)),
        ("embedded-consumer", "afpipe, embedded queue + embedded consumer", (None, {})),
    ]  # fmt: skip
    results = [
        with_server(name, spec, seconds, connections, bodies)
        for case, name, spec in plan
        if case in cases
    ]
    if "sqs" in cases:
        sqs_proc, sqs_url = start_fast_sqs()
        try:
            sqs_env = {
                "SQS_QUEUE_URL": f"{sqs_url}/123456789012/bench-ingest",
                "AWS_ENDPOINT_URL_SQS": sqs_url,
                "ENABLE_SQS_CONSUMER": "false",
            }
            results.append(
                with_server("afpipe, SQS (bench.fast_sqs), no consumer", (None, sqs_env),
                            seconds, connections, bodies)
            )  # fmt: skip
        finally:
            sqs_proc.terminate()
            sqs_proc.wait(10)
    return results


def _single_table(results: list[Result], connections: int, seconds: float) -> str:
    ceiling = results[0].rps
    rows = [
        [
            r.name, f"{r.rps:,.0f}", f"{100 * r.rps / ceiling:.0f}%", f"{r.p50_ms:.1f}",
            f"{r.p99_ms:.1f}", " ".join(f"{k}:{v}" for k, v in sorted(r.statuses.items())),
            r.socket_errors, f"{r.cpu_pct:.0f}%", f"{r.peak_rss_mb:.0f}",
        ]
        for r in results
    ]  # fmt: skip
    headers = [
        "server", "req/s", f"of {results[0].name}", "p50 ms", "p99 ms", "statuses",
        "socket errors", "server CPU", "peak RSS MB",
    ]  # fmt: skip
    note = (
        f"wrk 1 thread, {connections} connections, {seconds:g} s after a warm-up; "
        "server pinned to core 0, wrk and the SQS emulator to core 1 (2 cores: the client "
        "still competes for memory bandwidth and the kernel's loopback work). One event per "
        "request, 0.8-1.8 KB bodies, 60% in-app with `event_value`. Target: afpipe ≥ 85% of "
        "the no-op ceiling."
    )
    return table(headers, rows) + "\n\n" + note


def workers_scaling(seconds: float, connections: int, bodies: Path) -> str:
    """AFPIPE_WORKERS=1 and 2 on both cores, with wrk (2 threads) on the same two cores."""
    both = {0, 1} if (os.cpu_count() or 1) > 1 else {0}
    results = []
    for workers in (1, 2):
        env = {"ENABLE_SQS_CONSUMER": "false", "AFPIPE_WORKERS": str(workers)}
        server = afpipe_server(env, cores=both)
        try:
            results.append(
                measure(f"AFPIPE_WORKERS={workers}", server, seconds, connections, bodies,
                        client_cores=both, threads=2)
            )  # fmt: skip
        finally:
            server.terminate()
            server.kill()
    base = results[0].rps
    rows = [
        [r.name, f"{r.rps:,.0f}", f"{r.rps / base:.2f}x", f"{r.p50_ms:.1f}", f"{r.p99_ms:.1f}",
         " ".join(f"{k}:{v}" for k, v in sorted(r.statuses.items())), r.socket_errors,
         f"{r.cpu_pct:.0f}%", f"{r.peak_rss_mb:.0f}"]
        for r in results
    ]  # fmt: skip
    headers = ["afpipe (embedded queue, no consumer)", "req/s", "scaling", "p50 ms", "p99 ms",
               "statuses", "socket errors", "server CPU (all processes)",
               "peak RSS MB (largest)"]  # fmt: skip
    note = (
        f"wrk 2 threads, {connections} connections, {seconds:g} s after a warm-up; server "
        "processes and wrk all on both cores (nothing pinned): on a 2-core machine the load "
        "generator takes its share of the same cores, so this is a lower bound on what a "
        "second core gives. Target: ≥ 1.7x with 2 workers on 2 cores."
    )
    return table(headers, rows) + "\n\n" + note


if __name__ == "__main__":
    main()
