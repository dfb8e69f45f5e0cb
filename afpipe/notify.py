"""systemd notifications (sd_notify) over a trio datagram socket.

A no-op without ``$NOTIFY_SOCKET``. ``READY=1`` once serving, ``STATUS=`` lines
with a short summary, ``WATCHDOG=1`` from the event loop every half of
``$WATCHDOG_USEC`` (a blocked loop stops them, and systemd restarts us), and
``STOPPING=1`` when the drain starts.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping

import trio

log = logging.getLogger("afpipe.notify")

STATUS_INTERVAL_S = 10.0


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        address = environ.get("NOTIFY_SOCKET", "")
        # A leading "@" names a socket in the abstract namespace.
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_interval_s = _watchdog_interval_s(environ)
        self._sock: trio.socket.SocketType | None = None

    async def send(self, message: str) -> None:
        if not self.address:
            return
        if self._sock is None:
            self._sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            await self._sock.sendto(message.encode("utf-8"), self.address)
        except OSError as exc:  # systemd went away: nothing to tell
            log.warning("sd_notify failed", extra={"error": str(exc)})

    async def watchdog(self) -> None:
        """Send WATCHDOG=1 every half of WATCHDOG_USEC until cancelled."""
        if not self.address or self.watchdog_interval_s is None:
            return
        while True:
            await self.send("WATCHDOG=1")
            await trio.sleep(self.watchdog_interval_s)

    async def status_loop(self, summary: Callable[[], str]) -> None:
        if not self.address:
            return
        while True:
            await self.send(f"STATUS={summary()}")
            await trio.sleep(STATUS_INTERVAL_S)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _watchdog_interval_s(environ: Mapping[str, str]) -> float | None:
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):  # meant for another process
        return None
    return int(usec) / 1_000_000 / 2
