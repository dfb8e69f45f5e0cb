"""Prometheus's own tools for the monitoring tests: ``promtool`` and the server.

There is no PyPI package of promtool (hadolint has one; the test command installs it),
so the tools are found, in order:

1. on ``PATH`` (both ``promtool`` and ``prometheus``);
2. in the cache, ``$XDG_CACHE_HOME/afpipe-tests/prometheus-<version>/`` (default
   ``~/.cache``), from an earlier run;
3. by fetching Debian's ``prometheus`` package with ``apt-get download`` (no root
   needed, about 19 MB), unpacking it with ``dpkg-deb -x`` next to the cache entry
   and renaming it into place, so that a cache entry is always whole.

Only a machine without ``apt-get`` or ``dpkg-deb`` (not Debian) has no way to get them
(``NoWayToFetch``); a fetch that fails on one that has them is an error, not a skip.
``running_prometheus`` runs the server for a test; ``query`` asks its HTTP API.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio
import yaml

PACKAGE = "prometheus"
FETCH_TIMEOUT_S = 300
SERVER_START_TIMEOUT_S = 30


@dataclass(frozen=True)
class PrometheusTools:
    promtool: Path
    prometheus: Path


class NoWayToFetch(Exception):
    """The tools are not here and this machine cannot fetch Debian's package."""


class FetchFailed(Exception):
    """apt-get or dpkg-deb ran and failed; the message carries their output."""


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "afpipe-tests"


def on_path(path: str | None = None) -> PrometheusTools | None:
    promtool = shutil.which("promtool", path=path)
    prometheus = shutil.which("prometheus", path=path)
    if promtool is None or prometheus is None:
        return None
    return PrometheusTools(Path(promtool), Path(prometheus))


def in_cache(root: Path) -> PrometheusTools | None:
    """The newest whole entry of the cache (entries appear only by rename)."""
    entries = sorted(root.glob(f"{PACKAGE}-*"), key=lambda p: _version_key(p.name))
    for entry in reversed(entries):
        tools = _unpacked(entry)
        if tools is not None:
            return tools
    return None


def _version_key(name: str) -> list[tuple[int, str]]:
    """Debian versions compared well enough for picking the newest: numbers as numbers."""
    return [(int(part), "") if part.isdigit() else (-1, part) for part in re.split(r"(\d+)", name)]


def _unpacked(entry: Path) -> PrometheusTools | None:
    promtool, prometheus = entry / "usr/bin/promtool", entry / "usr/bin/prometheus"
    if os.access(promtool, os.X_OK) and os.access(prometheus, os.X_OK):
        return PrometheusTools(promtool, prometheus)
    return None


def fetch(root: Path) -> PrometheusTools:
    """Download Debian's package, unpack it and rename it into the cache."""
    apt_get, dpkg_deb = shutil.which("apt-get"), shutil.which("dpkg-deb")
    if apt_get is None or dpkg_deb is None:
        raise NoWayToFetch(
            "promtool and prometheus are not on PATH nor cached in"
            f" {root}, and without apt-get and dpkg-deb (Debian) they cannot be fetched"
        )
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".fetch-") as scratch:
        work = Path(scratch)
        deb = _download(apt_get, work)
        version = deb.name.split("_")[1]
        unpacked = work / "unpacked"
        _run([dpkg_deb, "-x", str(deb), str(unpacked)], work)
        if _unpacked(unpacked) is None:
            raise FetchFailed(f"{deb.name} holds no usr/bin/promtool and usr/bin/prometheus")
        entry = root / f"{PACKAGE}-{version}"
        try:
            unpacked.rename(entry)
        except OSError:
            if _unpacked(entry) is None:  # not another run's entry that won the race
                raise
    tools = _unpacked(entry)
    assert tools is not None
    return tools


def _download(apt_get: str, work: Path) -> Path:
    command = [apt_get, "download", "-q", PACKAGE]
    try:
        _run(command, work)
    except FetchFailed:
        if os.geteuid() != 0:
            raise
        # A fresh machine may have no package lists yet; root can fetch them.
        _run([apt_get, "update", "-q"], work)
        _run(command, work)
    debs = sorted(work.glob(f"{PACKAGE}_*.deb"))
    if len(debs) != 1:
        raise FetchFailed(f"apt-get download left {[d.name for d in debs]} in {work}")
    return debs[0]


def _run(command: list[str], cwd: Path) -> None:
    try:
        result = subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, timeout=FETCH_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FetchFailed(f"{' '.join(command)}: {exc}") from exc
    if result.returncode != 0:
        raise FetchFailed(
            f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
        )


def locate_or_fetch(root: Path | None = None) -> PrometheusTools:
    root = cache_root() if root is None else root
    return on_path() or in_cache(root) or fetch(root)


# ---------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def running_prometheus(
    tools: PrometheusTools, workdir: Path, config: dict[str, Any]
) -> AsyncIterator[str]:
    """Run the Prometheus server on ``config`` until the block ends; its base URL.
    Its log is printed if the block fails."""
    config_path = _write_config(workdir, config)
    url = f"http://127.0.0.1:{free_port()}"
    log_path = workdir / "prometheus.log"
    command = [
        str(tools.prometheus),
        f"--config.file={config_path}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address={url.removeprefix('http://')}",
    ]
    with log_path.open("wb") as log:
        process = await trio.lowlevel.open_process(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        with trio.fail_after(SERVER_START_TIMEOUT_S):
            await _until_ready(url, process)
        yield url
    except BaseException:
        print(f"--- prometheus log ---\n{log_path.read_text(errors='replace')}")
        raise
    finally:
        with trio.CancelScope(shield=True):
            process.terminate()
            with trio.move_on_after(10):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


def _write_config(workdir: Path, config: dict[str, Any]) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


async def _until_ready(url: str, process: trio.Process) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        while True:
            if process.returncode is not None:
                raise RuntimeError(f"prometheus exited {process.returncode}")
            try:
                if (await client.get("/-/ready")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await trio.sleep(0.1)


async def query(client: httpx.AsyncClient, promql: str) -> list[dict[str, Any]]:
    """The series an instant query answers; a query Prometheus refuses fails the test."""
    response = await client.get("/api/v1/query", params={"query": promql})
    body = response.json()
    assert body.get("status") == "success", f"{promql}: {body}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result
