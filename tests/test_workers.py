"""AFPIPE_WORKERS: N whole afpipe processes sharing one port."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import httpx
import trio

from afpipe.status.report import Numbers, parse
from tests.daemon import afpipe_process, queue_depth, wait_for_rows, warehouse_rows
from tests.load import purchase


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def any_alive(pids: list[int]) -> bool:
    return any(Path(f"/proc/{pid}").exists() for pid in pids)


async def test_two_workers_share_the_port_and_drain_together(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {"AFPIPE_WORKERS": "2", "PORT": str(free_port()), "AFPIPE_BATCH_LINGER_MS": "50"}
    with trio.fail_after(60):
        async with afpipe_process(data_dir, env) as daemon:
            while not any(e.get("message") == "afpipe workers serving" for e in daemon.logs):
                await trio.sleep(0.05)
            workers = children_of(daemon.process.pid)
            assert len(workers) == 2
            ids = set()
            for n in range(20):  # new connections: the kernel spreads them over both
                async with httpx.AsyncClient(base_url=daemon.url, timeout=30) as client:
                    response = await client.post("/webhook/appsflyer", json={"n": n})
                    assert response.status_code == 200
                    ids.add(response.json()["eventId"])
            await wait_for_rows(data_dir, len(ids))
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait() == 0
    assert {row[0] for row in warehouse_rows(data_dir)} == ids
    assert queue_depth(data_dir) == 0
    assert not any_alive(workers)


async def scrape(url: str) -> Numbers:
    """One scrape on a new connection: the kernel picks the worker that answers."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        return Numbers([parse(url, (await client.get("/metrics")).text)])


async def test_any_worker_s_metrics_answer_for_the_whole_group(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {"AFPIPE_WORKERS": "2", "PORT": str(free_port()), "AFPIPE_BATCH_LINGER_MS": "50"}
    count = 20
    with trio.fail_after(60):
        async with afpipe_process(data_dir, env) as daemon:
            while not any(e.get("message") == "afpipe workers serving" for e in daemon.logs):
                await trio.sleep(0.05)
            for n in range(count):  # one event per request, each on a new connection
                async with httpx.AsyncClient(base_url=daemon.url, timeout=30) as client:
                    response = await client.post("/webhook/appsflyer", json=purchase(n))
                    assert response.status_code == 200, response.text
            await wait_for_rows(data_dir, count)
            while queue_depth(data_dir):  # deleted, so settled
                await trio.sleep(0.05)
            await trio.sleep(1.5)  # the other worker's held-message gauges refresh each second
            scrapes = [await scrape(daemon.url) for _ in range(12)]
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait() == 0
    loaded = {"queue": "main", "target": "primary", "outcome": "loaded"}
    assert [s.total("afpipe_events_accepted_total") for s in scrapes] == [count] * 12
    assert [s.total("afpipe_events_settled_total", **loaded) for s in scrapes] == [count] * 12
    assert [s.total("afpipe_rows_loaded_total") for s in scrapes] == [count] * 12
    assert [s.total("afpipe_http_requests_total", route="/webhook/appsflyer") for s in scrapes] == [
        count
    ] * 12
    assert [s.total("afpipe_messages_in_flight") for s in scrapes] == [0] * 12
    assert [s.total("afpipe_events_held") for s in scrapes] == [0] * 12
    started = {s.newest("process_start_time_seconds") for s in scrapes}
    assert len(started) == 1 and None not in started  # the group's, whichever worker answers


async def test_a_worker_dying_takes_the_group_down(tmp_path: Path) -> None:
    env = {"AFPIPE_WORKERS": "2", "PORT": str(free_port())}
    with trio.fail_after(60):
        async with afpipe_process(tmp_path / "data", env) as daemon:
            while not any(e.get("message") == "afpipe workers serving" for e in daemon.logs):
                await trio.sleep(0.05)
            workers = children_of(daemon.process.pid)
            os.kill(workers[0], signal.SIGKILL)
            assert await daemon.wait() == 1  # the service manager restarts the whole group
    assert not any_alive(workers)


def test_workers_need_a_fixed_port(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.daemon import subprocess_env

    result = subprocess.run(
        [sys.executable, "-m", "afpipe", "serve"],
        env=subprocess_env({"AFPIPE_WORKERS": "2", "PORT": "0"}),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "PORT=0" in result.stderr
