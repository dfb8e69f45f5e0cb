"""Slow clients without the token: each posts a 100 kB body a byte at a time, again and again.

    python -m bench.slow_clients --url http://127.0.0.1:PORT --clients 512 --seconds 30 --out a.json

Every client connects, sends the head of a POST without the webhook token, then one
byte of body every ``--every-ms``; when the server closes the connection it connects
again. The output holds how the connections ended: the answer's status, "reset" (closed
before an answer was read) or "cut at the end" (still open when the run ended).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import trio

WEBHOOK = "/webhook/appsflyer"
BODY_BYTES = 100_000


async def client(
    host: str, port: int, every_s: float, stop: trio.Event, ends: Counter[str]
) -> None:
    head = (
        f"POST {WEBHOOK} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {BODY_BYTES}\r\n\r\n"
    ).encode()
    while not stop.is_set():
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError:
            ends["no connection"] += 1
            await trio.sleep(0.1)
            continue
        async with stream:
            ends[await trickle(stream, head, every_s, stop)] += 1


async def trickle(stream: trio.SocketStream, head: bytes, every_s: float, stop: trio.Event) -> str:
    """Send ``head``, then a byte every ``every_s`` until the server closes; how it ended."""
    answer = bytearray()

    async def read() -> None:
        try:
            while chunk := await stream.receive_some(65536):
                answer.extend(chunk[: 64 - len(answer)])
        except trio.BrokenResourceError:
            pass
        nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        try:
            await stream.send_all(head)
            while not stop.is_set():
                await stream.send_all(b" ")
                await trio.sleep(every_s)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await trio.sleep_forever()  # until the reader has seen the close
        nursery.cancel_scope.cancel()
    status = bytes(answer[9:12])
    if status.isdigit():
        return status.decode()
    return "cut at the end" if stop.is_set() else "reset"


async def run(args: argparse.Namespace) -> dict[str, object]:
    host, port = args.url.removeprefix("http://").rsplit(":", 1)
    ends: Counter[str] = Counter()
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        for _ in range(args.clients):
            nursery.start_soon(client, host, int(port), args.every_ms / 1000, stop, ends)
        await trio.sleep(args.seconds)
        stop.set()
    return {"clients": args.clients, "ends": dict(ends)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.slow_clients")
    parser.add_argument("--url", required=True)
    parser.add_argument("--clients", type=int, default=512)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--every-ms", type=float, default=50.0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    Path(args.out).write_text(json.dumps(trio.run(run, args)))


if __name__ == "__main__":
    main()
