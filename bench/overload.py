"""Overload: offer ~2x the sustainable rate, watch RSS and 503s, then SIGTERM at full load.

    .venv/bin/python -m bench.overload [--seconds 60] [--rate 1200]
    .venv/bin/python -m bench.overload --attack slow-tokenless [--attackers 512] [--rate 300]

Embedded queue and warehouse (afpipe's defaults). After SIGTERM, afpipe is started again
on the same data dir with no load until every acknowledged id is in warehouse.db.

``--attack slow-tokenless``: afpipe requires a webhook token; the load generator sends
it, while ``--attackers`` clients without it trickle 100 kB bodies a byte at a time
(bench.slow_clients). Reported: how the good requests were answered, and afpipe's peak
RSS against the memory ceiling its settings state (afpipe.memory, README).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

from afpipe import config, memory
from bench.common import CLIENT_CORE, afpipe_server, http_get, pin, report, table

TOKEN = "bench-overload-webhook-token"
NO_DOTENV = Path("/nonexistent/.env")


def warehouse_ids(data_dir: Path) -> set[str]:
    path = data_dir / "warehouse.db"
    if not path.exists():
        return set()
    with closing(sqlite3.connect(path, timeout=10)) as conn:
        return {str(r[0]) for r in conn.execute("SELECT id FROM appsflyer_events")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.overload")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, help="offered events/s (1200; attack: 300)")
    parser.add_argument("--connections", type=int, default=256)
    parser.add_argument("--attack", choices=["none", "slow-tokenless"], default="none")
    parser.add_argument("--attackers", type=int, default=512)
    parser.add_argument("--no-doc", action="store_true", help="print only; do not append")
    args = parser.parse_args(argv)
    attack = args.attack != "none"
    args.rate = args.rate or (300.0 if attack else 1200.0)
    pin(os.getpid(), CLIENT_CORE)
    env = {"AFPIPE_WEBHOOK_TOKEN": TOKEN} if attack else {}
    server = afpipe_server(env)
    data_dir = server.dir
    out = data_dir / "loadgen.json"
    gen = subprocess.Popen([*loadgen_argv(args, server.url, out), *token_args(attack)])
    pin(gen.pid, CLIENT_CORE)
    attackers = start_attackers(args, server.url, data_dir / "attack.json") if attack else None
    rss: list[float] = []
    try:
        start = time.monotonic()
        for _ in range(int(args.seconds)):
            time.sleep(max(0.0, start + len(rss) + 1 - time.monotonic()))
            rss.append(server.rss_mb())
        peak = server.peak_rss_mb()
        rejected = rejected_by_reason(server.port)
        code, exit_s = server.terminate(timeout_s=30)
        gen.wait(args.seconds + 60)
        if attackers is not None:
            attackers.wait(60)
    finally:
        server.kill()
        for child in (gen, attackers):
            if child is not None and child.poll() is None:
                child.kill()
    result = json.loads(out.read_text())
    acked = {str(i) for i, _ in result["acked"]}
    in_table_at_exit = len(acked & warehouse_ids(data_dir))
    drain = afpipe_server({"AFPIPE_DATA_DIR": str(data_dir), **env})
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
        ["afpipe_events_rejected_total by reason", rejected],
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
    title = "Overload (bench.overload)"
    if attack:
        rows += attack_rows(args, data_dir / "attack.json", env, peak)
        note += (
            " Attack targets: the good requests answered as without it (no 503 taken by the"
            " refused), peak RSS (VmHWM, MiB) within the ceiling the settings state."
        )
        title = "Overload under slow token-less clients (bench.overload --attack slow-tokenless)"
    body = table(["measure", "value"], rows) + "\n\n" + note
    report(title, body, write=not args.no_doc)


def rejected_by_reason(port: int) -> str:
    """afpipe's own count of refused requests, by reason, from /metrics."""
    try:
        _, text = http_get(port, "/metrics", timeout_s=5)
    except OSError as exc:
        return f"/metrics unavailable: {exc}"
    found = re.findall(rb'afpipe_events_rejected_total\{reason="([^"]+)"\} ([0-9.e+]+)', text)
    return " ".join(f"{r.decode()}:{float(n):.0f}" for r, n in found) or "none"


def loadgen_argv(args: argparse.Namespace, url: str, out: Path) -> list[str]:
    return [
        *(sys.executable, "-m", "bench.loadgen", "--url", url, "--rate", str(args.rate)),
        *("--seconds", str(args.seconds + 5), "--connections", str(args.connections)),
        *("--drain-s", "10", "--out", str(out)),
    ]


def token_args(attack: bool) -> list[str]:
    return ["--header", f"Authorization: {TOKEN}"] if attack else []


def start_attackers(args: argparse.Namespace, url: str, out: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "bench.slow_clients", "--url", url]
    argv += ["--clients", str(args.attackers), "--seconds", str(args.seconds), "--out", str(out)]
    attackers = subprocess.Popen(argv)
    pin(attackers.pid, CLIENT_CORE)
    return attackers


def attack_rows(
    args: argparse.Namespace, out: Path, env: dict[str, str], peak_mib: float
) -> list[list[object]]:
    ends = json.loads(out.read_text())["ends"] if out.exists() else {}
    terms = memory.ingest_ceiling_bytes(config.load(env, NO_DOTENV))
    ceiling_mib = terms["total"] / memory.MIB
    verdict = "within" if peak_mib <= ceiling_mib else "ABOVE"
    return [
        ["slow token-less clients (100 kB bodies, a byte / 50 ms)", args.attackers],
        ["their connections ended", " ".join(f"{k}:{v}" for k, v in sorted(ends.items()))],
        [
            "peak RSS / stated ceiling (MiB)",
            f"{peak_mib:.0f} / {ceiling_mib:.0f} ({verdict})",
        ],
    ]


if __name__ == "__main__":
    main()
