"""sd_notify: real datagrams on a real AF_UNIX socket."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import time
from pathlib import Path

import pytest
import trio

from afpipe.notify import Notifier
from tests.daemon import afpipe_process


async def _collect(sock: trio.socket.SocketType, into: list[tuple[float, str]]) -> None:
    while True:
        data = await sock.recv(4096)
        into.append((time.monotonic(), data.decode()))


async def test_daemon_sends_ready_watchdog_then_stopping(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await sock.bind(path)
    got: list[tuple[float, str]] = []
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"}
    with trio.fail_after(60), sock:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_collect, sock, got)
            async with afpipe_process(tmp_path / "data", env) as daemon:
                while sum(m == "WATCHDOG=1" for _, m in got) < 3:
                    await trio.sleep(0.05)
                daemon.signal(signal.SIGTERM)
                assert await daemon.wait() == 0
            nursery.cancel_scope.cancel()
    kinds = [m.split("=", 1)[0] for _, m in got if not m.startswith("STATUS=")]
    assert kinds[0] == "READY" and kinds[-1] == "STOPPING", kinds
    assert set(kinds[1:-1]) == {"WATCHDOG"}
    assert any(m.startswith("STATUS=accepted ") for _, m in got)


async def test_watchdog_pauses_while_the_event_loop_is_blocked(tmp_path: Path) -> None:
    name = f"@afpipe-test-{os.getpid()}-{time.monotonic_ns()}"  # abstract namespace
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await sock.bind("\0" + name[1:])
    notifier = Notifier({"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "100000"})
    got: list[tuple[float, str]] = []
    with trio.fail_after(20), sock:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_collect, sock, got)
            nursery.start_soon(notifier.watchdog)
            await trio.sleep(0.3)
            time.sleep(0.6)  # a stuck event loop  # noqa: ASYNC251
            await trio.sleep(0.3)
            nursery.cancel_scope.cancel()
    notifier.close()
    times = [t for t, m in got if m == "WATCHDOG=1"]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) >= 3
    assert max(gaps) >= 0.55  # nothing was sent while the loop was blocked


@pytest.mark.parametrize(
    ("environ", "interval_s"),
    [
        ({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000"}, 15.0),
        ({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
        ({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "0"}, None),
        ({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "soon"}, None),
    ],
)
def test_watchdog_interval_from_the_environment(
    environ: dict[str, str], interval_s: float | None
) -> None:
    assert Notifier(environ).watchdog_interval_s == interval_s


async def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier({})
    assert notifier.address == ""
    await notifier.send("READY=1")  # no socket, no error
    with trio.fail_after(1):
        await notifier.watchdog()  # returns at once
