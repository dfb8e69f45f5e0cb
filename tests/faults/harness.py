"""Pieces the fault cases are built from: moto, a fault-injecting SQS proxy, load, counts.

Everything listens on and talks to 127.0.0.1 only; every loop is bounded in count and time.
"""

from __future__ import annotations

import json
import os
import random
import socket
import sqlite3
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import h11
import httpx
import trio

from afpipe.codec import DecodeError, decode_body
from bench import slow_clients
from tests.emulators.redshift_data import RedshiftDataEmulator
from tests.events import from_payload
from tests.fixtures.moto import (
    _SERVER_SCRIPT,
    FAKE_ACCESS_KEY_ID,
    FAKE_SECRET_ACCESS_KEY,
    MOTO_REGION,
    _read_port,
    _stop,
)

HOOK = "/webhook/appsflyer"
REASON_ATTRIBUTE = "afpipe_reason"


# --- moto ---------------------------------------------------------------------------------


class Moto:
    """moto in server mode in a child process, and a boto3 SQS client on it."""

    def __init__(self, log_dir: Path) -> None:
        log_path = log_dir / "moto.log"
        with log_path.open("wb") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _SERVER_SCRIPT],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        try:
            self.url = f"http://127.0.0.1:{_read_port(self._process, log_path)}"
        except BaseException:
            self.close()
            raise
        self.sqs: Any = boto3.client(
            "sqs",
            region_name=MOTO_REGION,
            endpoint_url=self.url,
            aws_access_key_id=FAKE_ACCESS_KEY_ID,
            aws_secret_access_key=FAKE_SECRET_ACCESS_KEY,
        )

    def queue(self, prefix: str, visibility_s: int = 30) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        attributes = {"VisibilityTimeout": str(visibility_s)}
        return str(self.sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])

    def depth(self, url: str) -> tuple[int, int]:
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        got = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
        return int(got[names[0]]), int(got[names[1]])

    def dead_letters(self, url: str) -> list[tuple[str, list[str]]]:
        """(reason, event ids) of every message on ``url`` (read once, then released)."""
        found: list[tuple[str, list[str]]] = []
        handles: list[str] = []
        for _ in range(200):  # bounded: 2,000 messages at most
            answer = self.sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=0,
                VisibilityTimeout=60,
                MessageAttributeNames=["All"],
            )
            messages = answer.get("Messages", [])
            if not messages:
                break
            for message in messages:
                handles.append(message["ReceiptHandle"])
                attribute = message.get("MessageAttributes", {}).get(REASON_ATTRIBUTE, {})
                found.append((str(attribute.get("StringValue", "")), _ids(message["Body"])))
        for handle in handles:
            self.sqs.change_message_visibility(
                QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=0
            )
        return found

    def close(self) -> None:
        _stop(self._process)


def _ids(body: str) -> list[str]:
    try:
        return [event.id for event in decode_body(body)]
    except DecodeError:
        return []


def aws_env(tmp: Path) -> dict[str, str]:
    """Fake credentials and region for a child ``afpipe serve``; no real AWS config."""
    return {
        "AWS_ACCESS_KEY_ID": FAKE_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": FAKE_SECRET_ACCESS_KEY,
        "AWS_REGION": MOTO_REGION,
        "AWS_DEFAULT_REGION": MOTO_REGION,
        "AWS_CONFIG_FILE": str(tmp / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def scrub_real_aws_environment() -> None:
    """The runner's own environment must never point a child at a real AWS account."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            del os.environ[name]


def free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the SQS fault proxy ------------------------------------------------------------------


class SqsProxy:
    """HTTP/1.1 proxy in front of moto that fails a share of requests, or all of them.

    Half the injected errors are answered instead of forwarding; the other half are
    forwarded and their real answer replaced by the error (the nastier case: SQS did
    it, the client does not know).
    """

    def __init__(self, upstream: str, seed: int = 7) -> None:
        self.upstream = upstream
        self.error_rate = 0.0
        self.down = False
        self.port = 0
        self.counts: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._client: httpx.AsyncClient | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = int(listeners[0].socket.getsockname()[1])
        async with httpx.AsyncClient(base_url=self.upstream, timeout=30) as client:
            self._client = client
            task_status.started()
            await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        try:
            await self._exchange(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            self.counts["client gone"] += 1  # the daemon was killed mid-request

    async def _exchange(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            for _ in range(100_000):
                request, body = await self._read_request(conn, stream)
                if request is None or self.down:
                    self.counts["refused" if self.down else "closed"] += 1
                    return
                status, headers, content = await self._answer(request, body)
                headers = [*headers, ("content-length", str(len(content)))]
                await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)))
                await stream.send_all(conn.send(h11.Data(data=content)))
                await stream.send_all(conn.send(h11.EndOfMessage()))
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()

    async def _read_request(
        self, conn: h11.Connection, stream: trio.SocketStream
    ) -> tuple[h11.Request | None, bytes]:
        request: h11.Request | None = None
        body = b""
        for _ in range(100_000):
            event = conn.next_event()
            if event is h11.NEED_DATA:
                with trio.move_on_after(120):
                    try:
                        conn.receive_data(await stream.receive_some(65536))
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        return None, b""
                    continue
                return None, b""
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return request, body
            else:
                return None, b""
        return None, b""

    async def _answer(
        self, request: h11.Request, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        assert self._client is not None
        roll = self._rng.random()
        inject = roll < self.error_rate
        if inject and roll < self.error_rate / 2:
            self.counts["injected before"] += 1
            return _sqs_error(self._rng)
        headers = [
            (name.decode(), value.decode("latin-1"))
            for name, value in request.headers
            if name.lower() not in (b"host", b"content-length", b"connection")
        ]
        try:
            answer = await self._client.request(
                request.method.decode(), request.target.decode(), headers=headers, content=body
            )
        except httpx.HTTPError:
            self.counts["upstream error"] += 1
            return 502, [("content-type", "text/plain")], b"bad gateway"
        if inject:
            self.counts["injected after"] += 1
            return _sqs_error(self._rng)
        self.counts["forwarded"] += 1
        keep = ("content-type", "x-amzn-requestid", "x-amz-crc32", "x-amzn-query-error")
        out = [(k, v) for k, v in answer.headers.items() if k.lower() in keep]
        return answer.status_code, out, answer.content


def _sqs_error(rng: random.Random) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = [("content-type", "application/x-amz-json-1.0")]
    if rng.random() < 0.5:
        body = {"__type": "com.amazonaws.sqs#RequestThrottled", "message": "injected throttle"}
        return 400, headers, json.dumps(body).encode()
    body = {"__type": "com.amazonaws.sqs#InternalError", "message": "injected 500"}
    return 500, headers, json.dumps(body).encode()


# --- load ---------------------------------------------------------------------------------


@dataclass
class Load:
    """A few workers posting arrays of events; every 7th post repeats an earlier one."""

    url: str
    workers: int = 3
    batch: int = 10
    pause_s: float = 0.02
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    acked: set[str] = field(default_factory=set)
    sent: set[str] = field(default_factory=set)
    statuses: Counter[str] = field(default_factory=Counter)
    extra: list[dict[str, Any]] = field(default_factory=list)  # payloads to mix in once
    headers: dict[str, str] = field(default_factory=dict)  # e.g. the webhook token

    def event(self, worker: int, n: int) -> dict[str, Any]:
        return {
            "app_id": "id-faults",
            "platform": "ios",
            "event_name": "af_purchase",
            "event_time": "2024-03-02 12:00:01.123",
            "idfv": f"{self.run_id}-{worker}-{n}",
            "event_value": json.dumps({"af_revenue": "9.99", "n": n}),
        }

    async def run(self, stop: trio.Event, max_posts: int = 50_000) -> None:
        async with trio.open_nursery() as nursery:
            for worker in range(self.workers):
                nursery.start_soon(self._worker, worker, stop, max_posts)

    async def _worker(self, worker: int, stop: trio.Event, max_posts: int) -> None:
        previous: list[dict[str, Any]] = []
        async with httpx.AsyncClient(base_url=self.url, timeout=15) as client:
            for n in range(max_posts):
                if stop.is_set():
                    return
                if n % 7 == 6 and previous:
                    batch = previous
                else:
                    batch = [self.event(worker, n * self.batch + i) for i in range(self.batch)]
                    if worker == 0 and self.extra:
                        batch, self.extra = [*batch, *self.extra], []
                previous = batch
                self.sent.update(from_payload(p).id for p in batch)
                try:
                    response = await client.post(HOOK, json=batch, headers=self.headers)
                except httpx.TransportError:
                    self.statuses["no answer"] += 1
                    await trio.sleep(0.1)
                    continue
                self.statuses[str(response.status_code)] += 1
                if response.status_code == 200:
                    self.acked.update(response.json()["eventIds"])
                else:
                    await trio.sleep(0.1)
                await trio.sleep(self.pause_s)


async def slow_tokenless_client(url: str, stop: trio.Event, answers: Counter[str]) -> None:
    """Posts without a token, trickling a 100 kB body a byte every 50 ms; connects again
    each time the server closes the connection. ``answers`` counts the statuses it got."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    await slow_clients.client(host, int(port), 0.05, stop, answers)


# --- counting -----------------------------------------------------------------------------


def emulator_ids(emu: RedshiftDataEmulator, table: str = "appsflyer_events") -> list[str]:
    try:
        return [str(row[0]) for row in emu.query(f"SELECT id FROM public.{table}")]
    except Exception:  # the table does not exist yet
        return []


def embedded_ids(data_dir: Path) -> list[str]:
    path = data_dir / "warehouse.db"
    if not path.exists():
        return []
    with closing(sqlite3.connect(path, timeout=5)) as conn:
        try:
            return [str(r[0]) for r in conn.execute("SELECT id FROM appsflyer_events")]
        except sqlite3.OperationalError:
            return []


def embedded_dead_letters(data_dir: Path) -> list[tuple[str, list[str]]]:
    path = data_dir / "queue.db"
    if not path.exists():
        return []
    with closing(sqlite3.connect(path, timeout=5)) as conn:
        rows = conn.execute("SELECT reason, body FROM dead_letters").fetchall()
    return [(str(reason), _ids(str(body))) for reason, body in rows]


def embedded_depth(data_dir: Path) -> int:
    path = data_dir / "queue.db"
    if not path.exists():
        return 0
    with closing(sqlite3.connect(path, timeout=5)) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0])


def integrity(path: Path) -> str:
    with closing(sqlite3.connect(path, timeout=5)) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


@contextmanager
def emulator() -> Iterator[RedshiftDataEmulator]:
    from tests.fixtures.redshift import start_emulator

    emu = start_emulator()
    try:
        yield emu
    finally:
        emu.close()
