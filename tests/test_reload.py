"""``afpipe serve --reload``, for development: the server starts again when a file of
the package changes, and stops with its parent. Run on a copy of the package (the
working directory comes first on the child's path), so the test edits no real file."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import httpx
import trio

import afpipe
from tests.daemon import afpipe_process


def serving(logs: list[dict[str, object]]) -> list[dict[str, object]]:
    return [entry for entry in logs if entry.get("message") == "afpipe serving"]


async def test_a_change_in_the_package_restarts_the_server(tmp_path: Path) -> None:
    package = tmp_path / "afpipe"
    shutil.copytree(
        Path(afpipe.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__")
    )
    async with afpipe_process(tmp_path / "data", args=("--reload",)) as daemon:
        first = daemon.url
        assert any("--reload" in str(e.get("message")) for e in daemon.logs)
        with (package / "health.py").open("a") as edited:
            edited.write("\n# edited while serving\n")
        with trio.fail_after(30):
            while len(serving(daemon.logs)) < 2:
                await trio.sleep(0.1)
        [restart] = [e for e in daemon.logs if e.get("message") == "serve --reload: restarting"]
        assert str(package / "health.py") in str(restart.get("changed"))
        binds = serving(daemon.logs)[1]["binds"]
        assert isinstance(binds, list)
        second = str(binds[0]).replace("0.0.0.0", "127.0.0.1")
        async with httpx.AsyncClient(timeout=5) as client:
            assert (await client.get(f"{second}/health")).status_code == 200
        daemon.signal(signal.SIGTERM)
        with trio.fail_after(20):
            assert await daemon.wait() == 0
        async with httpx.AsyncClient(timeout=2) as client:  # the child stopped with it
            for url in (first, second):
                try:
                    await client.get(f"{url}/health")
                except httpx.TransportError:
                    continue
                raise AssertionError(f"still answering at {url}")
