"""Shared pieces: machine facts, the results file, child processes, /proc sampling."""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
CLK_TCK = os.sysconf("SC_CLK_TCK")
STARTUP_TIMEOUT_S = 30.0
# 2 cores: afpipe gets core 0, everything else (load generator, emulators) core 1.
SERVER_CORE = 0
CLIENT_CORE = 1 if (os.cpu_count() or 1) > 1 else 0
FAKE_ACCESS_KEY_ID = "AKIDAFPIPETESTING"  # same as tests/fixtures/moto.py
FAKE_SECRET_ACCESS_KEY = "afpipe-testing-secret"
REGION = "us-east-1"


def machine() -> str:
    return (
        f"{os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.platform()}, {platform.processor() or platform.machine()}"
    )


def command_line() -> str:
    module = Path(sys.argv[0]).stem
    return f".venv/bin/python -m bench.{module} " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def report(title: str, body: str, *, write: bool = True) -> None:
    """Print ``body`` and append it (unless ``write`` is False, e.g. ``--no-doc``), with
    command, machine and date, to docs/benchmarks.md."""
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"\n### {title} — {when}\n\n"
        f"- command: `{command_line()}`\n- machine: {machine()}\n\n{body}\n"
    )
    print(section)
    if not write:
        return
    DOC.parent.mkdir(parents=True, exist_ok=True)
    if not DOC.exists():
        DOC.write_text("# afpipe benchmarks\n\nResults appended by `bench/` scripts.\n")
    with DOC.open("a", encoding="utf-8") as f:
        f.write(section)


def pin(pid: int, core: int) -> None:
    with contextlib.suppress(OSError):
        os.sched_setaffinity(pid, {core})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (fields 14 and 15 of /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (e.g. the AFPIPE_WORKERS processes)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry.name))
    return out


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of ``pid`` and its direct children (those still running)."""
    total = proc_cpu_s(pid)
    for child in children(pid):
        with contextlib.suppress(OSError):
            total += proc_cpu_s(child)
    return total


def proc_mem_kb(pid: int, key: str) -> int:
    """``VmRSS`` or ``VmHWM`` of ``pid`` in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def http_get(port: int, path: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_http(port: int, path: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError):
            if http_get(port, path)[0] < 500:
                return
        time.sleep(0.1)
    raise RuntimeError(f"server did not answer {path} in {STARTUP_TIMEOUT_S} s")


def base_env(overrides: Mapping[str, str]) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AFPIPE_", "SQS_", "REDSHIFT", "SECONDARY_", "AWS_"))
    }
    env.update(
        {
            "HOST": "127.0.0.1",
            "LOG_LEVEL": "warn",
            "AFPIPE_ACCESS_LOG": "0",
            "AWS_ACCESS_KEY_ID": FAKE_ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": FAKE_SECRET_ACCESS_KEY,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
    )
    env.update(overrides)
    return env


class Server:
    """A child server process on a free port, pinned to ``SERVER_CORE``, output to a file."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        health: str,
        *,
        cores: set[int] | None = None,
    ) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="afpipe-bench-"))
        self.log = self.dir / "server.log"
        full_env = base_env({"PORT": str(self.port), "AFPIPE_DATA_DIR": str(self.dir), **env})
        self.env = full_env
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                list(argv), env=full_env, stdout=out, stderr=subprocess.STDOUT, cwd=self.dir
            )
        if cores is None:
            pin(self.proc.pid, SERVER_CORE)
        else:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(self.proc.pid, cores)
        try:
            wait_http(self.port, health, self.proc, self.log)
        except BaseException:
            self.kill()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_s(self) -> float:
        return tree_cpu_s(self.pid)

    def peak_rss_mb(self) -> float:
        """The largest peak RSS among the process and its children."""
        peaks = [proc_mem_kb(self.pid, "VmHWM")]
        for child in children(self.pid):
            with contextlib.suppress(OSError):
                peaks.append(proc_mem_kb(child, "VmHWM"))
        return max(peaks) / 1024

    def rss_mb(self) -> float:
        return proc_mem_kb(self.pid, "VmRSS") / 1024

    def terminate(self, timeout_s: float = 15.0) -> tuple[int | None, float]:
        """SIGTERM; returns (exit code or None if killed, seconds to exit)."""
        start = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code: int | None = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            code = None
        return code, time.monotonic() - start

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def afpipe_server(env: Mapping[str, str], *, cores: set[int] | None = None) -> Server:
    return Server([sys.executable, "-m", "afpipe", "serve"], env, "/health", cores=cores)


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    try:
        yield server
    finally:
        server.kill()


def pct(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]
