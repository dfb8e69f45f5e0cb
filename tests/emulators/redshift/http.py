"""The wire: AWS JSON 1.1 over HTTP/1.1 (`X-Amz-Target: RedshiftData.<Operation>`).

Every answer carries `x-amzn-RequestId`; errors are `{"__type", "message"}` with
the status the service uses. The order of checks follows AWS: the signature
first, then injected 500s and throttling, then the operation itself (`calls`
counts signed requests only).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.emulators.redshift import sigv4
from tests.emulators.redshift.api import Api
from tests.emulators.redshift.errors import ApiError
from tests.emulators.redshift.faults import Faults
from tests.emulators.redshift.settings import Settings

CONTENT_TYPE = "application/x-amz-json-1.1"
_TARGET_PREFIX = "RedshiftData."
_MAX_BODY_BYTES = 16 * 1024 * 1024
_IDLE_TIMEOUT_S = 30.0  # idle keep-alive connections close after this


class Counters:
    """Calls per operation and error answers per code, for tests and benchmarks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()

    def count_call(self, operation: str) -> None:
        with self._lock:
            self.calls[operation] += 1

    def count_error(self, code: str) -> None:
        with self._lock:
            self.errors[code] += 1

    def snapshot(self) -> tuple[dict[str, int], dict[str, int]]:
        with self._lock:
            return dict(self.calls), dict(self.errors)

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()
            self.errors.clear()


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], api: Api, faults: Faults, settings: Settings
    ) -> None:
        super().__init__(address, Handler)
        self.api = api
        self.faults = faults
        self.settings = settings
        self.counters = Counters()
        self.crashes: list[BaseException] = []
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Wake handler threads blocked on idle keep-alive connections."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the peer
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client hanging up mid-request is not the emulator's problem


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = _IDLE_TIMEOUT_S
    # Headers and body go out as two writes; with Nagle's algorithm and delayed
    # ACKs each answer would wait ~40 ms.
    disable_nagle_algorithm = True
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests assert on responses, not logs

    def do_POST(self) -> None:
        request_id = str(uuid.uuid4())
        try:
            status, body = 200, self._answer()
        except ApiError as exc:
            self.server.counters.count_error(exc.code)
            status, body = exc.status, {"__type": exc.code, "message": exc.message}
        except Exception as exc:
            self.server.crashes.append(exc)
            status, body = 500, {"__type": "InternalServerException", "message": repr(exc)}
        self._send(status, body, request_id)

    def do_GET(self) -> None:
        self._send(404, {"__type": "UnknownOperationException", "message": "POST only"}, "-")

    def _answer(self) -> dict[str, Any]:
        body = self._read_body()
        headers = {
            name.lower(): ",".join(self.headers.get_all(name) or []) for name in self.headers
        }
        sigv4.verify("POST", self.path, headers, body, self.server.settings)
        operation = self._operation()
        self.server.counters.count_call(operation)
        if self.server.faults.unavailable:
            raise ApiError("ServiceUnavailableException", "Service Unavailable", status=503)
        if self.server.faults.internal_error(operation):
            raise ApiError("InternalServerException", "emulator: injected failure", status=500)
        if not self.server.faults.allow(operation):
            raise ApiError("ThrottlingException", "Rate exceeded")
        if headers.get("content-type", "").split(";")[0].strip() != CONTENT_TYPE:
            raise ApiError("SerializationException", f"Content-Type must be {CONTENT_TYPE}")
        return self.server.api.handle(operation, _parse_json(body))

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit() or int(length) > _MAX_BODY_BYTES:
            self.close_connection = True  # the unread body would garble the next request
            raise ApiError("SerializationException", "Content-Length missing or too large")
        return self.rfile.read(int(length))

    def _operation(self) -> str:
        target = self.headers.get("X-Amz-Target", "")
        if self.path != "/" or not target.startswith(_TARGET_PREFIX):
            raise ApiError("UnknownOperationException", f"Unknown target {target!r}")
        return target.removeprefix(_TARGET_PREFIX)

    def _send(self, status: int, body: dict[str, Any], request_id: str) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-amzn-RequestId", request_id)
        self.end_headers()
        self.wfile.write(payload)


def _parse_json(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError("SerializationException", f"Malformed JSON body: {exc}") from exc
    if not isinstance(parsed, dict):
        raise ApiError("SerializationException", "The body must be a JSON object")
    return parsed
