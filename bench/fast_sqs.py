"""A fast, in-memory SQS (JSON protocol) for benchmarks; no signature checks.

moto serves only a few hundred messages a second; this serves thousands of
requests a second on one core. Operations: CreateQueue, GetQueueUrl,
SendMessage, SendMessageBatch, ReceiveMessage (long poll, visibility,
ApproximateReceiveCount, SentTimestamp), DeleteMessage(Batch),
ChangeMessageVisibility(Batch), GetQueueAttributes, PurgeQueue. Queues are
created on first use. ``GET /_bench/stats`` answers call counters and depths.

As strict as SQS where afpipe depends on it: a character outside SQS's set in
a body or attribute value fails the whole call (InvalidMessageContents); sizes
are UTF-8 bytes, body and attributes; queues are 256 KiB ones, as on older
SQS, for one message and for a SendMessageBatch in all (BatchRequestTooLong).

    python -m bench.fast_sqs --port 9324      # serve until SIGINT/SIGTERM
    python -m bench.fast_sqs --self-check     # boto3 against it, exits 0 on success
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import itertools
import json
import re
import signal
import struct
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

ACCOUNT = "123456789012"
MAX_WAIT_S = 20
MAX_ENTRIES = 10
MAX_MESSAGE_BYTES = 256 * 1024  # an older queue's limit: one message, and a batch in all
REFUSED_CHARACTERS = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
JsonDict = dict[str, Any]


class SqsError(Exception):
    """``code`` is the query error code (x-amzn-query-error), ``shape`` the JSON ``__type``."""

    def __init__(self, code: str, message: str, status: int = 400, shape: str = "") -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status
        self.shape = shape or code


def message_bytes(body: str, attributes: dict[str, JsonDict]) -> int:
    """What SQS counts against the size limits: body and attributes, in UTF-8 bytes."""
    size = len(body.encode("utf-8", "surrogatepass"))
    for name, attr in attributes.items():
        value = attr.get("StringValue", attr.get("BinaryValue", ""))
        size += len(name.encode()) + len(str(attr.get("DataType", "")).encode())
        size += len(str(value).encode("utf-8", "surrogatepass"))
    return size


def check_message(body: str, attributes: dict[str, JsonDict]) -> None:
    texts = [body, *(str(a.get("StringValue", "")) for a in attributes.values())]
    if any(REFUSED_CHARACTERS.search(text) for text in texts):
        raise SqsError("InvalidMessageContents", "characters outside the allowed set")
    if message_bytes(body, attributes) > MAX_MESSAGE_BYTES:
        raise SqsError(
            "InvalidParameterValue",
            f"One or more parameters are invalid. Reason: Message must be shorter than"
            f" {MAX_MESSAGE_BYTES} bytes.",
        )


def check_batch(entries: list[JsonDict]) -> None:
    """Every entry, before any is enqueued: one bad entry fails the whole call."""
    pairs = [(str(e.get("MessageBody", "")), e.get("MessageAttributes") or {}) for e in entries]
    for body, attributes in pairs:
        check_message(body, attributes)
    total = sum(message_bytes(body, attributes) for body, attributes in pairs)
    if total > MAX_MESSAGE_BYTES:
        raise SqsError(
            "AWS.SimpleQueueService.BatchRequestTooLong",
            f"Batch requests cannot be longer than {MAX_MESSAGE_BYTES} bytes."
            f" You have sent {total} bytes.",
            shape="BatchRequestTooLong",
        )


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def attributes_md5(attributes: dict[str, JsonDict]) -> str:
    """SQS's MD5OfMessageAttributes (botocore checks it)."""
    out = bytearray()
    for name in sorted(attributes):
        attr = attributes[name]
        data_type = str(attr["DataType"])
        for part in (name, data_type):
            raw = part.encode()
            out += struct.pack(">I", len(raw)) + raw
        if "BinaryValue" in attr:
            import base64

            value = base64.b64decode(attr["BinaryValue"])
            out += b"\x02"
        else:
            value = str(attr.get("StringValue", "")).encode()
            out += b"\x01"
        out += struct.pack(">I", len(value)) + value
    return md5_hex(bytes(out))


@dataclass
class Message:
    message_id: str
    body: str
    sent_ms: int
    attributes: dict[str, JsonDict]
    receive_count: int = 0
    visible_at: float = 0.0
    receipt: str = ""


@dataclass
class Queue:
    name: str
    url: str
    visibility_s: int = 30
    messages: dict[str, Message] = field(default_factory=dict)
    heap: list[tuple[float, int, str]] = field(default_factory=list)
    by_receipt: dict[str, str] = field(default_factory=dict)

    def push(self, message: Message, seq: int) -> None:
        heapq.heappush(self.heap, (message.visible_at, seq, message.message_id))

    def in_flight(self, now: float) -> int:
        return sum(1 for m in self.messages.values() if m.visible_at > now)


class FastSqs:
    """The queue state; every method holds ``cond`` (one lock: simple and fast enough)."""

    def __init__(self, base_url: str = "http://127.0.0.1") -> None:
        self.base_url = base_url
        self.queues: dict[str, Queue] = {}
        self.cond = threading.Condition()
        self.calls: Counter[str] = Counter()
        self._seq = itertools.count()

    # -- plumbing -------------------------------------------------------------------

    def queue(self, url_or_name: str) -> Queue:
        name = url_or_name.rstrip("/").rsplit("/", 1)[-1]
        if not name:
            raise SqsError("AWS.SimpleQueueService.NonExistentQueue", "no queue")
        found = self.queues.get(name)
        if found is None:
            found = self.queues[name] = Queue(name, f"{self.base_url}/{ACCOUNT}/{name}")
        return found

    def handle(self, operation: str, req: JsonDict) -> JsonDict:
        with self.cond:
            self.calls[operation] += 1
        method = getattr(self, "op_" + operation, None)
        if method is None:
            raise SqsError("UnsupportedOperation", f"{operation} is not supported")
        result: JsonDict = method(req)
        return result

    def _enqueue(self, q: Queue, body: str, attrs: dict[str, JsonDict], delay_s: int) -> JsonDict:
        if not body:
            raise SqsError("InvalidParameterValue", "empty message body")
        check_message(body, attrs)
        msg = Message(str(uuid.uuid4()), body, int(time.time() * 1000), attrs)
        msg.visible_at = time.monotonic() + delay_s
        q.messages[msg.message_id] = msg
        q.push(msg, next(self._seq))
        out = {"MessageId": msg.message_id, "MD5OfMessageBody": md5_hex(body.encode())}
        if attrs:
            out["MD5OfMessageAttributes"] = attributes_md5(attrs)
        return out

    def _batch(self, req: JsonDict, one: Any) -> JsonDict:
        entries = req.get("Entries") or []
        if not entries:
            raise SqsError("AWS.SimpleQueueService.EmptyBatchRequest", "no entries")
        if len(entries) > MAX_ENTRIES:
            raise SqsError("AWS.SimpleQueueService.TooManyEntriesInBatchRequest", "> 10")
        ok: list[JsonDict] = []
        failed: list[JsonDict] = []
        for entry in entries:
            try:
                ok.append({"Id": entry["Id"], **one(entry)})
            except SqsError as exc:
                failed.append(
                    {
                        "Id": entry["Id"],
                        "Code": exc.code,
                        "Message": exc.message,
                        "SenderFault": True,
                    }
                )
        return {"Successful": ok, "Failed": failed}

    # -- operations -------------------------------------------------------------------

    def op_CreateQueue(self, req: JsonDict) -> JsonDict:
        with self.cond:
            q = self.queue(req["QueueName"])
            q.visibility_s = int((req.get("Attributes") or {}).get("VisibilityTimeout", 30))
            return {"QueueUrl": q.url}

    def op_GetQueueUrl(self, req: JsonDict) -> JsonDict:
        with self.cond:
            return {"QueueUrl": self.queue(req["QueueName"]).url}

    def op_SendMessage(self, req: JsonDict) -> JsonDict:
        with self.cond:
            q = self.queue(req["QueueUrl"])
            out = self._enqueue(
                q,
                req.get("MessageBody", ""),
                req.get("MessageAttributes") or {},
                int(req.get("DelaySeconds", 0)),
            )
            self.cond.notify_all()
            return out

    def op_SendMessageBatch(self, req: JsonDict) -> JsonDict:
        with self.cond:
            q = self.queue(req["QueueUrl"])
            check_batch(req.get("Entries") or [])
            out = self._batch(
                req,
                lambda e: self._enqueue(
                    q,
                    e.get("MessageBody", ""),
                    e.get("MessageAttributes") or {},
                    int(e.get("DelaySeconds", 0)),
                ),
            )
            self.cond.notify_all()
            return out

    def op_ReceiveMessage(self, req: JsonDict) -> JsonDict:
        wait_s = min(MAX_WAIT_S, int(req.get("WaitTimeSeconds", 0)))
        limit = max(1, min(MAX_ENTRIES, int(req.get("MaxNumberOfMessages", 1))))
        deadline = time.monotonic() + wait_s
        with self.cond:
            q = self.queue(req["QueueUrl"])
            visibility_s = int(req.get("VisibilityTimeout", q.visibility_s))
            while True:
                got = self._take(q, limit, visibility_s)
                remaining = deadline - time.monotonic()
                if got or remaining <= 0:
                    break
                next_visible = q.heap[0][0] - time.monotonic() if q.heap else remaining
                self.cond.wait(max(0.001, min(remaining, next_visible)))
            return {"Messages": [self._render(m, req) for m in got]} if got else {}

    def _take(self, q: Queue, limit: int, visibility_s: int) -> list[Message]:
        now = time.monotonic()
        got: list[Message] = []
        while q.heap and len(got) < limit and q.heap[0][0] <= now:
            visible_at, _, message_id = heapq.heappop(q.heap)
            msg = q.messages.get(message_id)
            if msg is None or msg.visible_at != visible_at:
                continue  # deleted, or a stale heap entry after a visibility change
            msg.receive_count += 1
            q.by_receipt.pop(msg.receipt, None)
            msg.receipt = f"{message_id}#{msg.receive_count}#{uuid.uuid4().hex[:8]}"
            q.by_receipt[msg.receipt] = message_id
            msg.visible_at = now + visibility_s
            q.push(msg, next(self._seq))
            got.append(msg)
        return got

    @staticmethod
    def _render(m: Message, req: JsonDict) -> JsonDict:
        out: JsonDict = {
            "MessageId": m.message_id,
            "ReceiptHandle": m.receipt,
            "Body": m.body,
            "MD5OfBody": md5_hex(m.body.encode()),
        }
        names = set(req.get("MessageSystemAttributeNames") or req.get("AttributeNames") or [])
        if names:
            attrs = {
                "ApproximateReceiveCount": str(m.receive_count),
                "SentTimestamp": str(m.sent_ms),
                "ApproximateFirstReceiveTimestamp": str(m.sent_ms),
            }
            out["Attributes"] = (
                attrs if "All" in names else {k: v for k, v in attrs.items() if k in names}
            )
        if m.attributes and req.get("MessageAttributeNames"):
            out["MessageAttributes"] = m.attributes
            out["MD5OfMessageAttributes"] = attributes_md5(m.attributes)
        return out

    def _find(self, q: Queue, receipt: str) -> Message | None:
        message_id = q.by_receipt.get(receipt) or receipt.split("#", 1)[0]
        return q.messages.get(message_id)

    def _delete(self, q: Queue, receipt: str) -> JsonDict:
        msg = self._find(q, receipt)
        if msg is None and "#" not in receipt:
            raise SqsError("ReceiptHandleIsInvalid", f"bad receipt handle {receipt!r}")
        if msg is not None:
            del q.messages[msg.message_id]
            q.by_receipt.pop(msg.receipt, None)
        return {}

    def op_DeleteMessage(self, req: JsonDict) -> JsonDict:
        with self.cond:
            return self._delete(self.queue(req["QueueUrl"]), req["ReceiptHandle"])

    def op_DeleteMessageBatch(self, req: JsonDict) -> JsonDict:
        with self.cond:
            q = self.queue(req["QueueUrl"])
            return self._batch(req, lambda e: self._delete(q, e["ReceiptHandle"]))

    def _visibility(self, q: Queue, receipt: str, timeout_s: int) -> JsonDict:
        msg = self._find(q, receipt)
        if msg is None or msg.receipt != receipt:
            raise SqsError("AWS.SimpleQueueService.MessageNotInflight", "not in flight")
        msg.visible_at = time.monotonic() + int(timeout_s)
        q.push(msg, next(self._seq))
        self.cond.notify_all()
        return {}

    def op_ChangeMessageVisibility(self, req: JsonDict) -> JsonDict:
        with self.cond:
            q = self.queue(req["QueueUrl"])
            return self._visibility(q, req["ReceiptHandle"], req["VisibilityTimeout"])

    def op_ChangeMessageVisibilityBatch(self, req: JsonDict) -> JsonDict:
        with self.cond:
            q = self.queue(req["QueueUrl"])
            return self._batch(
                req, lambda e: self._visibility(q, e["ReceiptHandle"], e["VisibilityTimeout"])
            )

    def op_GetQueueAttributes(self, req: JsonDict) -> JsonDict:
        with self.cond:
            q = self.queue(req["QueueUrl"])
            in_flight = q.in_flight(time.monotonic())
            return {
                "Attributes": {
                    "ApproximateNumberOfMessages": str(len(q.messages) - in_flight),
                    "ApproximateNumberOfMessagesNotVisible": str(in_flight),
                    "VisibilityTimeout": str(q.visibility_s),
                    "QueueArn": f"arn:aws:sqs:us-east-1:{ACCOUNT}:{q.name}",
                    "MaximumMessageSize": str(MAX_MESSAGE_BYTES),
                }
            }

    def op_PurgeQueue(self, req: JsonDict) -> JsonDict:
        with self.cond:
            q = self.queue(req["QueueUrl"])
            q.messages.clear()
            q.heap.clear()
            q.by_receipt.clear()
            return {}

    def stats(self) -> JsonDict:
        with self.cond:
            now = time.monotonic()
            return {
                "calls": dict(self.calls),
                "depth": {n: len(q.messages) for n, q in self.queues.items()},
                "in_flight": {n: q.in_flight(now) for n, q in self.queues.items()},
            }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _HttpServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, doc: JsonDict, headers: dict[str, str] | None = None) -> None:
        raw = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("Content-Length", str(len(raw)))
        self.send_header("x-amzn-RequestId", uuid.uuid4().hex)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        if self.path == "/_bench/stats":
            self._send(200, self.server.sqs.stats())
        else:
            self._send(404, {"__type": "NotFound", "message": self.path})

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        target = self.headers.get("X-Amz-Target", "")
        operation = target.split(".", 1)[-1]
        try:
            result = self.server.sqs.handle(operation, json.loads(raw or b"{}"))
        except SqsError as exc:
            self._send(
                exc.status,
                {"__type": f"com.amazonaws.sqs#{exc.shape}", "message": exc.message},
                {"x-amzn-query-error": f"{exc.code};Sender"},
            )
        except (KeyError, TypeError, ValueError) as exc:
            self._send(
                400, {"__type": "com.amazonaws.sqs#InvalidParameterValue", "message": repr(exc)}
            )
        else:
            self._send(200, result)


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], sqs: FastSqs) -> None:
        super().__init__(address, _Handler)
        self.sqs = sqs

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up mid-answer (e.g. afpipe at shutdown) is not news


class FastSqsServer:
    """``with FastSqsServer() as s: s.url, s.sqs.stats()`` — the server in a thread."""

    def __init__(self, port: int = 0) -> None:
        self.sqs = FastSqs()
        self._http = _HttpServer(("127.0.0.1", port), self.sqs)
        self.sqs.base_url = self.url
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    def queue_url(self, name: str) -> str:
        return f"{self.url}/{ACCOUNT}/{name}"

    def __enter__(self) -> FastSqsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(5)


def self_check() -> None:
    """boto3 (with its MD5 checks) against the emulator: every operation afpipe uses."""
    import boto3
    from botocore.config import Config

    with FastSqsServer() as server:
        sqs = boto3.client(
            "sqs",
            endpoint_url=server.url,
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="y",
            config=Config(retries={"total_max_attempts": 1}),
        )
        url = sqs.create_queue(QueueName="check", Attributes={"VisibilityTimeout": "30"})[
            "QueueUrl"
        ]
        assert url == server.queue_url("check"), url
        assert sqs.get_queue_url(QueueName="check")["QueueUrl"] == url
        sent = sqs.send_message_batch(
            QueueUrl=url,
            Entries=[{"Id": str(i), "MessageBody": f"body-{i} ü"} for i in range(10)],
        )
        assert len(sent["Successful"]) == 10 and not sent.get("Failed"), sent
        attrs = {
            "reason": {"DataType": "String", "StringValue": "bad ✓"},
            "n": {"DataType": "Number", "StringValue": "3"},
        }
        sqs.send_message(QueueUrl=url, MessageBody="dead", MessageAttributes=attrs)
        t0 = time.monotonic()
        got = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            VisibilityTimeout=2,
            MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
            MessageAttributeNames=["All"],
        )["Messages"]
        assert len(got) == 10 and time.monotonic() - t0 < 0.5, got
        assert all(m["Attributes"]["ApproximateReceiveCount"] == "1" for m in got)
        assert abs(int(got[0]["Attributes"]["SentTimestamp"]) / 1000 - time.time()) < 5
        assert sorted(m["Body"] for m in got) == sorted(f"body-{i} ü" for i in range(10))
        last = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["All"])["Messages"]
        assert last[0]["MessageAttributes"]["reason"]["StringValue"] == "bad ✓", last
        # long poll returns empty after the wait when nothing is visible
        t0 = time.monotonic()
        assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)
        assert 0.9 <= time.monotonic() - t0 < 2.0
        # visibility expired: redelivered with ApproximateReceiveCount 2
        again = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=3,
            MessageSystemAttributeNames=["All"],
        )["Messages"]
        assert again and all(m["Attributes"]["ApproximateReceiveCount"] == "2" for m in again)
        handles = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(again)]
        vis = sqs.change_message_visibility_batch(
            QueueUrl=url, Entries=[{**h, "VisibilityTimeout": 0} for h in handles[:2]]
        )
        assert len(vis["Successful"]) == 2, vis
        deleted = sqs.delete_message_batch(QueueUrl=url, Entries=handles)
        assert len(deleted["Successful"]) == len(handles), deleted
        depth = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        left = int(depth["ApproximateNumberOfMessages"]) + int(
            depth["ApproximateNumberOfMessagesNotVisible"]
        )
        assert left == 11 - len(handles), depth
        check_strictness(sqs, url)
        sqs.purge_queue(QueueUrl=url)
        # throughput: batches of 10 through boto3 (sync, one connection)
        n_batches = 200
        t0 = time.monotonic()
        for b in range(n_batches):
            sqs.send_message_batch(
                QueueUrl=url,
                Entries=[{"Id": str(i), "MessageBody": f"{b}-{i}"} for i in range(10)],
            )
        rate = n_batches * 10 / (time.monotonic() - t0)
        calls = server.sqs.stats()["calls"]
    print(f"self-check ok: boto3 round trips pass; {rate:.0f} messages/s via boto3; calls {calls}")


def check_strictness(sqs: Any, url: str) -> None:
    """What SQS refuses, refused as SQS does: whole calls, nothing enqueued."""
    from botocore.exceptions import ClientError

    def refused(call: Any) -> str:
        try:
            call()
        except ClientError as exc:
            return str(exc.response["Error"]["Code"])
        raise AssertionError("accepted what SQS refuses")

    def depth() -> int:
        got = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        return int(got["ApproximateNumberOfMessages"]) + int(
            got["ApproximateNumberOfMessagesNotVisible"]
        )

    before = depth()
    bad = [{"Id": "0", "MessageBody": "fine"}, {"Id": "1", "MessageBody": "not \ufffe fine"}]
    assert refused(lambda: sqs.send_message_batch(QueueUrl=url, Entries=bad)) == (
        "InvalidMessageContents"
    )
    assert refused(lambda: sqs.send_message(QueueUrl=url, MessageBody="\uffff")) == (
        "InvalidMessageContents"
    )
    big = [{"Id": str(i), "MessageBody": "ü" * 30_000} for i in range(5)]  # 300 KB, 150 k chars
    assert refused(lambda: sqs.send_message_batch(QueueUrl=url, Entries=big)) == (
        "AWS.SimpleQueueService.BatchRequestTooLong"
    )
    assert refused(lambda: sqs.send_message(QueueUrl=url, MessageBody="ü" * 140_000)) == (
        "InvalidParameterValue"
    )
    assert depth() == before


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fast_sqs", description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--self-check", action="store_true")
    args = parser.parse_args(argv)
    if args.self_check:
        self_check()
        return
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with FastSqsServer(args.port) as server:
        print(json.dumps({"url": server.url}), flush=True)
        while not stop.wait(0.5):
            pass


if __name__ == "__main__":
    main()
