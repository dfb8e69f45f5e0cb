"""Overload: offer ~2x the sustainable rate, watch RSS and 503s, then SIGTERM at full load.

    .venv/bin/python -m bench.overload [--seconds 60] [--rate 1200]

Embedded queue and warehouse (afpipe's defaults). After SIGTERM, afpipe is started again
on the same data dir with no load until every acknowledged id is in warehouse.db.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

from bench.common import CLIENT_CORE, afpipe_server, pin, report, table


def warehouse_ids(data_dir: Path) -> set[str]:
    path = data_dir / "warehouse.db"
    if not path.exists():
        return set()
    with closing(sqlite3.connect(path, timeout=10)) as conn:
        return {str(r[0]) for r in conn.execute("SELECT id FROM appsflyer_events")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.overload")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=1200.0, help="offered events/s")
    parser.add_argument("--connections", type=int, default=256)
    parser.add_argument("--no-doc", action="store_true", help="print only; do not append")
    args = parser.parse_args(argv)
    pin(os.getpid(), CLIENT_CORE)
    server = afpipe_server({})
    data_dir = server.dir
    out = data_dir / "loadgen.json"
    gen = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.loadgen",
            "--url",
            server.url,
            "--rate",
            str(args.rate),
            "--seconds",
            str(args.seconds + 5),
            "--connections",
            str(args.connections),
            "--drain-s",
            "10",
            "--out",
            str(out),
        ]
    )
    pin(gen.pid, CLIENT_CORE)
    rss: list[float] = []
    try:
        start = time.monotonic()
        for _ in range(int(args.seconds)):
            time.sleep(max(0.0, start + len(rss) + 1 - time.monotonic()))
            rss.append(server.rss_mb())
        peak = server.peak_rss_mb()
        code, exit_s = server.terminate(timeout_s=30)
        gen.wait(args.seconds + 60)
    finally:
        server.kill()
        if gen.poll() is None:
            gen.kill()
    result = json.loads(out.read_text())
    acked = {str(i) for i, _ in result["acked"]}
    in_table_at_exit = len(acked & warehouse_ids(data_dir))
    drain = afpipe_server({"AFPIPE_DATA_DIR": str(data_dir)})
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not acked <= warehouse_ids(data_dir):
            time.sleep(1)
    finally:
        drain.terminate()
    lost = len(acked - warehouse_ids(data_dir))
    third = max(1, len(rss) // 3)
    rows = [
        ["offered events/s (requests of 1 event)", f"{args.rate:,.0f}"],
        [
            "events sent / unsent (no free connection)",
            f"{result['events_sent']:,} / {result['unsent_events']:,}",
        ],
        ["HTTP statuses", " ".join(f"{k}:{v}" for k, v in sorted(result["statuses"].items()))],
        ["answers with Retry-After", result["retry_after"]],
        ["socket errors (incl. cut at SIGTERM)", result["socket_errors"]],
        ["acked events/s", f"{len(acked) / result['elapsed_s']:,.0f}"],
        ["latency p50 / p99 ms", f"{result['p50_ms']:.0f} / {result['p99_ms']:.0f}"],
        [
            "RSS MB first third / last third / peak (VmHWM)",
            f"{sum(rss[:third]) / third:.0f} / {sum(rss[-third:]) / third:.0f} / {peak:.0f}",
        ],
        ["SIGTERM at full load: exit code, seconds to exit", f"{code}, {exit_s:.2f}"],
        [
            "acked ids in table at exit / after restart-drain",
            f"{in_table_at_exit:,} / {len(acked) - lost:,} of {len(acked):,}",
        ],
        ["acked but lost", lost],
    ]
    note = (
        f"{args.seconds:g} s of load, then SIGTERM while the generator still sends; "
        f"{args.connections} connections, open loop. RSS sampled every second: "
        + " ".join(f"{v:.0f}" for v in rss)
        + ". Targets: RSS ≤ 200 MB and flat, excess answered 503 + Retry-After, exit ≤ 5 s, "
        "nothing acknowledged lost."
    )
    body = table(["measure", "value"], rows) + "\n\n" + note
    report("Overload (bench.overload)", body, write=not args.no_doc)


if __name__ == "__main__":
    main()
