"""Open-loop HTTP load generator (trio, raw keep-alive sockets) that records every ack.

    python -m bench.loadgen --url http://127.0.0.1:PORT --rate 1000 --seconds 30 --out r.json

``--rate`` is events/s (0 = as fast as the connections allow); ``--batch K`` posts K
events per request as a JSON array. A request that finds no free connection is not sent
and counted as ``unsent`` (the generator never queues without bound). The output file
holds the summary and, per acknowledged event, [event id, time.monotonic() at send].
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import trio

from bench.payloads import SEQ_PLACEHOLDER, templates

WEBHOOK = "/webhook/appsflyer"
MAX_HEAD_BYTES = 64 * 1024


@dataclass
class Stats:
    statuses: dict[str, int] = field(default_factory=dict)
    retry_after: int = 0
    socket_errors: int = 0
    unsent: int = 0
    events_sent: int = 0
    latencies_s: list[float] = field(default_factory=list)
    acked: list[tuple[str, float]] = field(default_factory=list)


class Conn:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.stream: trio.SocketStream | None = None
        self.buffer = b""

    async def request(self, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        if self.stream is None:
            self.stream = await trio.open_tcp_stream(self.host, self.port)
            self.buffer = b""
        await self.stream.send_all(raw)
        while b"\r\n\r\n" not in self.buffer:
            await self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            await self._fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, headers, body

    async def _fill(self) -> None:
        assert self.stream is not None
        chunk = await self.stream.receive_some(65536)
        if not chunk or len(self.buffer) > MAX_HEAD_BYTES + 10**7:
            raise ConnectionError("connection closed by the server")
        self.buffer += chunk

    async def close(self) -> None:
        if self.stream is not None:
            await self.stream.aclose()
            self.stream = None


def build_request(host: str, port: int, body: str, headers: tuple[str, ...] = ()) -> bytes:
    raw = body.encode()
    extra = "".join(f"{header}\r\n" for header in headers)
    head = (
        f"POST {WEBHOOK} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}"
        f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n"
    )
    return head.encode() + raw


async def worker(conn: Conn, tickets: trio.MemoryReceiveChannel[bytes], stats: Stats) -> None:
    async for raw in tickets:
        sent = time.monotonic()
        try:
            status, headers, body = await conn.request(raw)
        except (OSError, ConnectionError, trio.BrokenResourceError, ValueError, IndexError):
            stats.socket_errors += 1
            await conn.close()
            continue
        done = time.monotonic()
        stats.latencies_s.append(done - sent)
        stats.statuses[str(status)] = stats.statuses.get(str(status), 0) + 1
        if "retry-after" in headers:
            stats.retry_after += 1
        if status == 200:
            answer = json.loads(body)
            ids = answer.get("eventIds") or [answer["eventId"]]
            stats.acked.extend((str(i), sent) for i in ids)


async def run(args: argparse.Namespace) -> dict[str, object]:
    host, port = args.url.removeprefix("http://").rsplit(":", 1)
    bodies = templates(2000, seed=args.seed)
    counter = itertools.count()
    stats = Stats()

    def next_request() -> bytes:
        events = []
        for _ in range(args.batch):
            n = next(counter)
            events.append(bodies[n % len(bodies)].replace(SEQ_PLACEHOLDER, f"{args.tag}-{n}"))
        body = events[0] if args.batch == 1 else "[" + ",".join(events) + "]"
        return build_request(host, int(port), body, tuple(args.header))

    send, receive = trio.open_memory_channel[bytes](0)
    start_wall = time.monotonic()
    start = trio.current_time()  # trio's clock has its own offset: schedule on it
    deadline = start + args.seconds
    async with trio.open_nursery() as nursery:
        conns = [Conn(host, int(port)) for _ in range(args.connections)]
        for conn in conns:
            nursery.start_soon(worker, conn, receive.clone(), stats)
        receive.close()
        async with send:
            if args.rate <= 0:  # closed loop: every free connection sends at once
                while trio.current_time() < deadline:
                    with trio.move_on_at(deadline):
                        await send.send(next_request())
                        stats.events_sent += args.batch
            else:
                interval_s = args.batch / args.rate
                for i in range(math.ceil(args.seconds / interval_s)):
                    await trio.sleep_until(start + i * interval_s)
                    try:
                        send.send_nowait(next_request())
                        stats.events_sent += args.batch
                    except trio.WouldBlock:
                        stats.unsent += args.batch
        # workers drain what they hold, bounded by the drain time
        nursery.cancel_scope.deadline = trio.current_time() + args.drain_s
    elapsed = time.monotonic() - start_wall
    lat = sorted(stats.latencies_s)
    requests = len(lat)

    def q(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")

    return {
        "elapsed_s": elapsed,
        "requests": requests,
        "events_sent": stats.events_sent,
        "events_acked": len(stats.acked),
        "unsent_events": stats.unsent,
        "statuses": stats.statuses,
        "retry_after": stats.retry_after,
        "socket_errors": stats.socket_errors,
        "p50_ms": q(0.5),
        "p99_ms": q(0.99),
        "start_wall": time.time() - elapsed,
        "acked": stats.acked,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen")
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, default=1000.0, help="events/s; 0 = closed loop")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--drain-s", type=float, default=15.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--tag", default=str(int(time.time())))
    parser.add_argument("--out", required=True)
    parser.add_argument("--header", action="append", default=[], help="'Name: value', repeatable")
    args = parser.parse_args(argv)
    result = trio.run(run, args)
    Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
