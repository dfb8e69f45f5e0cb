"""``AFPIPE_WORKERS=N``: N afpipe processes sharing the port (SO_REUSEPORT).

The parent only supervises: it starts N ``afpipe serve`` children, each with its
own root nursery (ingest, producer, consumer), tells systemd READY once every
child is serving, forwards SIGTERM/SIGINT, and exits with the worst child
status. A child that dies on its own takes the group down (exit 1), so the
service manager restarts all of it rather than running short-handed.

The group's metrics live in a private directory made here for its lifetime
(``afpipe.group_metrics``), so that any child's ``/metrics`` answers for all.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

import trio

from afpipe import group_metrics
from afpipe.notify import Notifier

log = logging.getLogger("afpipe.workers")

CHILD_START_TIMEOUT_S = 60.0


async def _wait_ready(read_fd: int) -> None:
    async with trio.lowlevel.FdStream(read_fd) as stream:
        if not await stream.receive_some(1):
            raise RuntimeError("a worker exited before it was serving")


async def _spawn(index: int, env: dict[str, str], args: list[str]) -> tuple[trio.Process, int]:
    """Start worker ``index``; the process and the pipe it writes one byte to when
    it is serving."""
    read_fd, write_fd = os.pipe()
    command = [sys.executable, "-m", "afpipe", "serve", "--reuse-port", "--ready-fd"]
    child = await trio.lowlevel.open_process(
        [*command, str(write_fd), *args],
        env={**env, "AFPIPE_WORKER_INDEX": str(index)},
        pass_fds=(write_fd,),
        # Own session: a terminal's Ctrl-C reaches only the parent, which
        # forwards it once (twice would mean "exit now" to the children).
        start_new_session=True,
    )
    os.close(write_fd)
    return child, read_fd


async def supervise(workers: int, args: list[str]) -> int:
    with group_metrics.group_environment() as metrics_env:
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        return await _supervise(workers, args, {**env, **metrics_env})


async def _supervise(workers: int, args: list[str], env: dict[str, str]) -> int:
    notifier = Notifier()
    children: list[trio.Process] = []
    stopping = False
    async with trio.open_nursery() as nursery:
        ready_fds = []
        for index in range(workers):
            child, read_fd = await _spawn(index, env, args)
            children.append(child)
            ready_fds.append(read_fd)

        async def watch(child: trio.Process) -> None:
            code = await child.wait()
            group_metrics.worker_exited(env, child.pid)
            if not stopping:
                log.error("worker exited unexpectedly", extra={"pid": child.pid, "code": code})
                _signal_all(children, signal.SIGTERM)
                nursery.cancel_scope.cancel()

        for child in children:
            nursery.start_soon(watch, child)
        with trio.fail_after(CHILD_START_TIMEOUT_S):
            async with trio.open_nursery() as starting:
                for read_fd in ready_fds:
                    starting.start_soon(_wait_ready, read_fd)
        await notifier.send("READY=1")
        nursery.start_soon(notifier.watchdog)
        log.info("afpipe workers serving", extra={"workers": workers})
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                if not stopping:
                    stopping = True
                    await notifier.send("STOPPING=1")
                _signal_all(children, signum)  # a second signal is forwarded too
                nursery.start_soon(_wait_all_then_cancel, children, nursery.cancel_scope)
    for child in children:  # the group was cancelled: make sure none outlives us
        if child.returncode is None:
            child.kill()
        await child.wait()
    notifier.close()
    return _exit_code(children, stopping)


async def _wait_all_then_cancel(children: list[trio.Process], scope: trio.CancelScope) -> None:
    for child in children:
        await child.wait()
    scope.cancel()


def _signal_all(children: list[trio.Process], signum: int) -> None:
    for child in children:
        if child.returncode is None:
            child.send_signal(signum)


def _exit_code(children: list[trio.Process], stopping: bool) -> int:
    if not stopping:
        return 1
    codes = [c.returncode or 0 for c in children]
    return max((128 - code if code < 0 else code) for code in codes)
