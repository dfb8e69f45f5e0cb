"""Start the real ``afpipe`` process for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

import trio

STARTUP_TIMEOUT_S = 20


class Daemon:
    def __init__(self, process: trio.Process, data_dir: Path) -> None:
        self.process = process
        self.data_dir = data_dir
        self.logs: list[dict[str, Any]] = []
        self.raw_output: list[str] = []
        self.url = ""
        self.metrics_url = ""  # AFPIPE_METRICS_PORT's listener, when it has one
        self._serving = trio.Event()

    async def _read_output(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        async for chunk in self.process.stdout:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                self._record(line.decode("utf-8", "replace"))
        self._serving.set()  # the process ended; waiters see no url

    def _record(self, line: str) -> None:
        self.raw_output.append(line)
        try:
            entry = json.loads(line)
        except ValueError:
            return
        self.logs.append(entry)
        if entry.get("message") == "afpipe serving":
            binds = entry.get("binds") or []
            if binds:
                self.url = binds[0].replace("0.0.0.0", "127.0.0.1")
            if metrics_binds := entry.get("metrics_binds") or []:
                self.metrics_url = metrics_binds[0].replace("0.0.0.0", "127.0.0.1")
            self._serving.set()

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    async def wait(self) -> int:
        return await self.process.wait()

    def output(self) -> str:
        return "\n".join(self.raw_output)


def subprocess_env(overrides: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AFPIPE_", "SQS_", "REDSHIFT"))}
    env.update({"PORT": "0", "HOST": "127.0.0.1", "LOG_LEVEL": "info"})
    env.update(overrides)
    return env


@asynccontextmanager
async def afpipe_process(
    data_dir: Path, env: Mapping[str, str] | None = None, args: tuple[str, ...] = ()
) -> AsyncIterator[Daemon]:
    """Run ``python -m afpipe serve`` until the block ends (then SIGKILL if still running)."""
    full_env = subprocess_env({"AFPIPE_DATA_DIR": str(data_dir), **(env or {})})
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "afpipe", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=full_env,
        cwd=data_dir.parent,
    )
    daemon = Daemon(process, data_dir)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(daemon._read_output)
        try:
            with trio.fail_after(STARTUP_TIMEOUT_S):
                await daemon._serving.wait()
            if not daemon.url and "--no-ingest" not in args:
                raise RuntimeError(f"afpipe did not start:\n{daemon.output()}")
            yield daemon
        except BaseException:
            print(f"--- afpipe output ({' '.join(args) or 'serve'}) ---\n{daemon.output()}")
            raise
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGKILL)
            with trio.CancelScope(shield=True):
                await process.wait()


def warehouse_rows(data_dir: Path, table: str = "appsflyer_events") -> list[tuple[Any, ...]]:
    path = data_dir / "warehouse.db"
    if not path.exists():
        return []
    with closing(sqlite3.connect(path)) as conn:
        try:
            return conn.execute(
                f'SELECT id, event_name, app_id, event_data FROM "{table}" ORDER BY id'
            ).fetchall()
        except sqlite3.OperationalError as exc:
            # The table is created by the first load, not at start (#12).
            if "no such table" in str(exc):
                return []
            raise


def queue_depth(data_dir: Path) -> int:
    path = data_dir / "queue.db"
    if not path.exists():
        return 0
    with closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0])


async def wait_for_rows(data_dir: Path, count: int, timeout_s: float = 20) -> None:
    with trio.fail_after(timeout_s):
        while len(warehouse_rows(data_dir)) < count:
            await trio.sleep(0.05)
