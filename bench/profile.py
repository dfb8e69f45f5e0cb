"""Profile afpipe (and, for e2e, the Redshift emulator) under load with py-spy.

    .venv/bin/python -m bench.profile [--seconds 15] [--target ingest|e2e]

``ingest``: afpipe on the embedded queue, consumer off, wrk at full load.
``e2e``: SQS (bench.fast_sqs) + Redshift emulator (500 ms, quotas), 1,000 ev/s in
batches of 10. Writes the top frames (self and inclusive % of samples) to the doc and
keeps the collapsed stacks next to it under docs/profiles/ for flame graphs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

from bench.common import CLIENT_CORE, DOC, afpipe_server, pin, report, table

PY_SPY = Path(sys.executable).with_name("py-spy")


def record(pid: int, seconds: float, out: Path, native: bool = False) -> subprocess.Popen[bytes]:
    argv = [str(PY_SPY), "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "200",
            "-f", "raw", "-o", str(out), "--nonblocking"]  # fmt: skip
    if native:
        argv.append("--native")
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pin(proc.pid, CLIENT_CORE)
    return proc


def summarize(collapsed: Path, top: int = 15) -> tuple[str, str]:
    self_counts: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        count = int(n)
        frames = [f for f in stack.split(";") if f and not f.startswith("process ")]
        if not frames:
            continue
        total += count
        self_counts[frames[-1]] += count
        for frame in set(frames):
            incl[frame] += count

    def rows(counter: Counter[str]) -> list[list[str]]:
        return [
            [f"{100 * c / max(1, total):.1f}%", f"`{f[:110]}`"] for f, c in counter.most_common(top)
        ]

    return (
        table(["self %", "frame"], rows(self_counts)),
        table(["inclusive %", "frame"], rows(incl)),
    )


def profile_ingest(seconds: float, out: Path) -> None:
    from bench.ingest import run_wrk, write_bodies

    bodies = write_bodies()
    server = afpipe_server({"ENABLE_SQS_CONSUMER": "false"})
    try:
        run_wrk(server.url, 2, 64, bodies)
        spy = record(server.pid, seconds, out)
        run_wrk(server.url, seconds + 1, 64, bodies)
        spy.wait(seconds + 30)
    finally:
        server.kill()
        shutil.rmtree(bodies.parent, ignore_errors=True)


def profile_e2e(seconds: float, out: Path, emu_out: Path, staged: bool) -> None:
    from bench import e2e

    sqs_proc, sqs_url = e2e.start_fast_sqs()
    s3 = e2e.S3() if staged else None
    primary = e2e.start_redshift(s3.url if s3 is not None else None)
    env = e2e.afpipe_env(sqs_url, primary, None)
    if s3 is not None:
        env.update(s3.env())
    server = afpipe_server(env)
    try:
        spies = [record(server.pid, seconds, out), record(os.getpid(), seconds, emu_out)]
        gen = threading.Thread(
            target=e2e.run_loadgen,
            args=(server.url, 1000.0, seconds, 10, out.with_suffix(".loadgen.json")),
        )
        gen.start()
        gen.join(seconds + 150)
        for spy in spies:
            spy.wait(seconds + 30)
    finally:
        server.kill()
        primary.close()
        sqs_proc.terminate()
        if s3 is not None:
            s3.close()
        sqs_proc.wait(10)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--target", choices=["ingest", "e2e"], default="ingest")
    parser.add_argument("--staged", action="store_true", help="e2e with S3 staging + COPY")
    parser.add_argument("--no-doc", action="store_true", help="print only; do not append")
    args = parser.parse_args(argv)
    pin(os.getpid(), CLIENT_CORE)
    keep = DOC.parent / "profiles"
    keep.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="afpipe-bench-"))
    out = tmp / f"afpipe-{args.target}.txt"
    parts: list[str] = []
    if args.target == "ingest":
        profile_ingest(args.seconds, out)
    else:
        emu_out = tmp / "emulator-e2e.txt"
        profile_e2e(args.seconds, out, emu_out, args.staged)
        if emu_out.exists():
            s, i = summarize(emu_out)
            shutil.copy(emu_out, keep / emu_out.name)
            parts.append(
                f"Redshift emulator process (bench process), self:\n\n{s}\n\ninclusive:\n\n{i}"
            )
    s, i = summarize(out)
    shutil.copy(out, keep / out.name)
    parts.insert(0, f"afpipe process, self:\n\n{s}\n\ninclusive:\n\n{i}")
    note = f"py-spy record, 200 Hz, {args.seconds:g} s, collapsed stacks in docs/profiles/."
    title = f"Profile: {args.target}{' (staged)' if args.staged else ''} (bench.profile)"
    report(title, "\n\n".join([*parts, note]), write=not args.no_doc)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
