"""Hostile input: fuzzed requests, slow clients, header floods, token handling, SQL escaping.

The HTTP ingest runs in-process (``create_app`` + ``serve_ingest`` on port 0) with a
queue that records what it was given, one server per test function. Hypothesis drives
requests from a worker thread that calls back into the test's trio loop, so every
example hits the same server, one request at a time, and the queue's growth during a
request is exactly what that request enqueued.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import signal
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from afpipe.aws import AwsClient, CredentialCache, static_credentials
from afpipe.aws.service import redshift_data_service
from afpipe.codec import decode_body
from afpipe.event import to_row
from afpipe.health import Health
from afpipe.http.app import create_app
from afpipe.http.config import IngestConfig
from afpipe.http.payloads import token_matches
from afpipe.http.server import hypercorn_config, serve_ingest
from afpipe.producer import Producer
from afpipe.warehouse.redshift import RedshiftWarehouse, Target
from tests.daemon import afpipe_process
from tests.emulators.redshift_data import (
    TEST_CLUSTER,
    TEST_DATABASE,
    TEST_DB_USER,
    RedshiftDataEmulator,
)
from tests.events import from_payload
from tests.fixtures.moto import FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY, MOTO_REGION
from tests.fixtures.redshift import REDSHIFT_REGION

HOOK = "/webhook/appsflyer"
MAX_BODY_BYTES = 16 * 1024
MAX_MESSAGE_BYTES = 64 * 1024


class RecordingQueue:
    """A queue that accepts everything and keeps the message bodies it was given."""

    name = "recording"

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send_batch(self, bodies: Sequence[str]) -> list[str]:
        start = len(self.sent)
        self.sent.extend(bodies)
        return [f"m-{start + i}" for i in range(len(bodies))]

    def events_since(self, mark: int) -> list[tuple[str, dict[str, Any]]]:
        return [(e.id, e.payload) for body in self.sent[mark:] for e in decode_body(body)]


@dataclass
class Server:
    url: str
    queue: RecordingQueue


@asynccontextmanager
async def ingest(
    *,
    token: str = "",
    read_timeout_s: int = 30,
    keep_alive_timeout_s: float = 5,
    body_timeout_s: float = 30,
) -> AsyncIterator[Server]:
    queue = RecordingQueue()
    health = Health(fail_after_s=30)
    producer = Producer(
        queue,  # type: ignore[arg-type]
        max_message_bytes=MAX_MESSAGE_BYTES,
        max_pending_events=10_000,
        senders=1,
        health=health,
    )
    config = IngestConfig(
        max_body_bytes=MAX_BODY_BYTES,
        max_message_bytes=MAX_MESSAGE_BYTES,
        enqueue_timeout_s=5,
        token=token,
        body_timeout_s=body_timeout_s,
    )
    app = create_app(producer, health, config)
    hconfig = hypercorn_config("127.0.0.1", 0, 2, keep_alive_timeout_s=keep_alive_timeout_s)
    hconfig.read_timeout = read_timeout_s
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(producer.run)
        binds = await nursery.start(serve_ingest, app, hconfig, stop)
        health.serving = True
        try:
            yield Server(binds[0], queue)
        finally:
            stop.set()
            producer.close()


# --- fuzzed requests -------------------------------------------------------------------------


@dataclass
class Req:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: list[tuple[str, str]]
    body: bytes
    # Payloads this request must be accepted with (None: no opinion, may be rejected).
    expect: list[dict[str, Any]] | None = None
    is_array: bool = False
    notes: list[str] = field(default_factory=list)


_scalars = (
    st.none()
    | st.booleans()
    | st.integers()  # unbounded: 2**70 and beyond
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
_json_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_events = st.dictionaries(st.text(max_size=12), _json_values, min_size=1, max_size=6)

_TOKENS = [
    b'{"a":1e400}',
    b'{"a":-1e400}',
    b'{"a":2e308}',
    b'{"a":1180591620717411303424}',  # 2**70
    b'{"a":-1180591620717411303424}',
    b'{"a":1e-400}',
    b'{"a":NaN}',
    b'{"a":Infinity}',
    b'{"a":-Infinity}',
    b'{"a":nan}',
    b'{"a":1,"a":2}',
    b'{"a":1,"a":{"b":2},"a":[3]}',
    b'{"a":"\\ud800"}',
    b'{"a":"\\udc00\\ud800"}',
    b'{"a":"\\u0000"}',
    b'\xef\xbb\xbf{"a":1}',
    b'{"a":1}garbage',
    b'{"a":1}{"b":2}',
    b"[{}]",
    b"[{},{}]",
    b'[{"a":1},[]]',
    b"null",
    b"true",
    b"0",
    b'""',
    b"   \n\t ",
    b'{"a":"\xff\xfe"}',
    b'{"\xc3\x28":1}',
    b'{"a":"\xed\xa0\x80"}',  # a UTF-8 encoded surrogate
    b'{"a":"x\x00y"}',
]


def _nested(depth: int, array: bool) -> bytes:
    if array:
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


@st.composite
def _posts(draw: st.DrawFn) -> tuple[bytes, list[dict[str, Any]] | None, bool]:
    kind = draw(st.sampled_from(["event", "array", "any_json", "bytes", "token", "nested", "big"]))
    if kind == "event":
        event = draw(_events)
        return json.dumps(event, ensure_ascii=draw(st.booleans())).encode(), [event], False
    if kind == "array":
        events = draw(st.lists(_events, min_size=1, max_size=5))
        return json.dumps(events).encode(), events, True
    if kind == "any_json":
        return json.dumps(draw(_json_values)).encode(), None, False
    if kind == "bytes":
        return draw(st.binary(max_size=600)), None, False
    if kind == "token":
        return draw(st.sampled_from(_TOKENS)), None, False
    if kind == "nested":
        return _nested(draw(st.integers(1, 5000)), draw(st.booleans())), None, False
    size = draw(st.integers(MAX_BODY_BYTES - 64, 3 * MAX_BODY_BYTES))
    return json.dumps({"a": "x" * size}).encode(), None, False


_header_names = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_!#$%&'*+.^`|~",
    min_size=1,
    max_size=20,
).filter(lambda n: n.lower() not in {"content-length", "transfer-encoding", "host", "connection"})
_header_values = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40
).map(str.strip)
_content_types = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/json; charset=latin-1",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=xyz",
        "multipart/form-data",
        "application/octet-stream",
        "",
        ";;;",
        "*/*",
    ]
)


@st.composite
def requests(draw: st.DrawFn) -> Req:
    method = draw(
        st.sampled_from(["POST"] * 6 + ["GET"] * 3 + ["PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
    )
    path = draw(st.sampled_from([HOOK] * 8 + ["/", "/webhook", "/webhook/appsflyer/", "/x/../y"]))
    query = draw(st.lists(st.tuples(st.text(max_size=10), st.text(max_size=20)), max_size=6))
    headers = draw(st.lists(st.tuples(_header_names, _header_values), max_size=40))
    content_type = draw(_content_types)
    if content_type:
        headers.append(("Content-Type", content_type))
    req = Req(method, path, query, headers, b"")
    if method in ("POST", "PUT", "PATCH", "DELETE"):
        req.body, expect, req.is_array = draw(_posts())
        if method == "POST" and path == HOOK:
            req.expect = expect
    if method == "GET" and path == HOOK and query:
        req.expect = [dict(query)]  # a repeated field keeps its last value
    return req


def _canon(payloads: Sequence[dict[str, Any]]) -> Counter[str]:
    return Counter(json.dumps(p, sort_keys=True) for p in payloads)


async def _send(client: httpx.AsyncClient, req: Req) -> httpx.Response:
    return await client.request(
        req.method,
        req.path,
        params=tuple(req.query),
        headers=[*req.headers, ("Connection", "close")],
        content=req.body if req.body or req.method in ("POST", "PUT", "PATCH") else None,
    )


async def test_fuzzed_requests_never_5xx_and_enqueue_exactly_what_is_acknowledged() -> None:
    with trio.fail_after(120):
        async with ingest() as server, httpx.AsyncClient(base_url=server.url, timeout=10) as client:

            @settings(
                max_examples=300,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(req=requests())
            @example(req=Req("POST", HOOK, [], [], b'{"a":1e400}'))
            @example(req=Req("POST", HOOK, [], [], b'{"a":1,"a":2}'))
            @example(req=Req("POST", HOOK, [], [], _nested(100_000, False)))
            def check(req: Req) -> None:
                mark = len(server.queue.sent)
                response = trio.from_thread.run(_send, client, req)
                enqueued = server.queue.events_since(mark)
                assert response.status_code < 500, (response.status_code, response.text)
                if response.status_code != 200:
                    assert enqueued == [], f"rejected ({response.status_code}) yet enqueued"
                    assert req.expect is None, (response.status_code, response.text)
                    if req.method != "HEAD" and response.status_code != 404:
                        assert response.json()["success"] is False
                    return
                if req.method == "OPTIONS":  # the framework's automatic answer
                    assert enqueued == []
                    return
                assert req.method in ("POST", "GET", "HEAD") and req.path == HOOK
                ids = [event_id for event_id, _ in enqueued]
                if req.method == "HEAD":  # a probe: answered like GET, never enqueued
                    assert enqueued == []
                    return
                body = response.json()
                assert body["success"] is True
                assert ids == (body["eventIds"] if "eventIds" in body else [body["eventId"]])
                if req.expect is not None:
                    assert _canon([p for _, p in enqueued]) == _canon(req.expect)
                # Every enqueued event's id is the hash of what was enqueued.
                assert all(from_payload(p).id == i for i, p in enqueued)

            await trio.to_thread.run_sync(check)


# --- slow clients and header floods ----------------------------------------------------------


def _host_port(url: str) -> tuple[str, int]:
    parsed = httpx.URL(url)
    assert parsed.host and parsed.port
    return parsed.host, parsed.port


async def _read_until_closed(stream: trio.SocketStream, limit_s: float) -> bytes:
    """Everything the server sends until it closes (bounded in time and size)."""
    data = b""
    with trio.move_on_after(limit_s):
        while len(data) < 1_000_000:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                break
            if not chunk:
                break
            data += chunk
    return data


async def _trickle(
    stream: trio.SocketStream, head: bytes, drip: bytes, every_s: float, limit_s: float
) -> tuple[float, bytes]:
    """Send ``head``, then one byte of ``drip`` every ``every_s``; returns (cut after, answer)."""
    start = trio.current_time()
    answer = b""
    await stream.send_all(head)

    async def read() -> None:
        nonlocal answer
        answer = await _read_until_closed(stream, limit_s)
        nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        for byte in drip:
            try:
                await stream.send_all(bytes([byte]))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                break
            await trio.sleep(every_s)
        await trio.sleep(limit_s)  # bounded: wait for the server's verdict
    return trio.current_time() - start, answer


async def _served_promptly(url: str, count: int = 5) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        for n in range(count):
            with trio.fail_after(2):
                response = await client.post(HOOK, json={"event_name": "ok", "n": n})
            assert response.status_code == 200


@pytest.mark.parametrize("phase", ["headers", "body"])
async def test_a_slowloris_trickle_is_cut_off_while_others_are_served(phase: str) -> None:
    with trio.fail_after(30):
        async with ingest(read_timeout_s=1, keep_alive_timeout_s=1, body_timeout_s=1) as server:
            host, port = _host_port(server.url)
            body = json.dumps({"event_name": "slow", "pad": "x" * 300}).encode()
            request_head = (
                f"POST {HOOK} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n"
            ).encode()
            if phase == "headers":
                head, drip = b"", request_head + b"X-Slow: " + b"a" * 200 + b"\r\n\r\n" + body
            else:
                head, drip = request_head + b"\r\n", body
            results: list[tuple[float, bytes]] = []

            async def slow_client() -> None:
                stream = await trio.open_tcp_stream(host, port)
                async with stream:
                    results.append(await _trickle(stream, head, drip, 0.1, 3))

            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    nursery.start_soon(slow_client)
                await trio.sleep(0.3)
                await _served_promptly(server.url)  # while 20 slow clients hold connections
            assert len(results) == 20
            for elapsed, answer in results:
                # The whole trickle would take > 30 s; it is cut after about a second.
                assert elapsed < 8, elapsed
                status = answer.split(b" ", 2)[1] if answer.startswith(b"HTTP/1.1 ") else b""
                assert status in (b"", b"408", b"400"), answer[:200]
            assert server.queue.sent == [] or all(
                payload.get("event_name") == "ok" for _, payload in server.queue.events_since(0)
            )


@pytest.mark.parametrize("count", [2_000, 20_000])
async def test_a_huge_header_count_is_refused_without_starving_others(count: int) -> None:
    with trio.fail_after(30):
        async with ingest() as server:
            host, port = _host_port(server.url)
            headers = b"".join(b"X-H%d: v\r\n" % n for n in range(count))
            body = b'{"event_name":"flood"}'
            request_bytes = (
                f"POST {HOOK} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n"
            ).encode()
            answers: list[bytes] = []

            async def flood() -> None:
                stream = await trio.open_tcp_stream(host, port)
                async with stream:
                    # The server may close the connection while we are still sending.
                    with contextlib.suppress(trio.BrokenResourceError):
                        await stream.send_all(request_bytes + headers + b"\r\n" + body)
                    answers.append(await _read_until_closed(stream, 5))

            async with trio.open_nursery() as nursery:
                for _ in range(10):
                    nursery.start_soon(flood)
                await _served_promptly(server.url)
            assert len(answers) == 10
            for answer in answers:
                status = answer.split(b" ", 2)[1] if answer.startswith(b"HTTP/1.1 ") else b""
                if len(headers) > 64 * 1024:  # above h11_max_incomplete_size
                    assert status in (b"", b"431", b"400"), answer[:200]
                else:
                    assert status in (b"200", b"431", b"400"), answer[:200]


# --- the token --------------------------------------------------------------------------------


def test_the_token_compare_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    token = "s3cr3t-token"
    cases = [
        (token, True),
        (f"Bearer {token}", True),
        ("s3cr3t-tokeX", False),
        ("s", False),
        ("", False),
        (token + "x", False),
        ("Bearer wrong", False),
        ("\udcff", False),
    ]
    for presented, expected in cases:
        before = len(calls)
        assert token_matches(token, presented) is expected
        # Every compare goes through hmac.compare_digest, and both forms are always compared.
        assert len(calls) - before == 2, presented
    assert token_matches(token, None) is False
    # No early exit on a length mismatch or a prefix: it is all bytes to compare_digest.
    assert all(isinstance(a, bytes) and isinstance(b, bytes) for a, b in calls)


TOKEN = "tok-9f8e7d6c5b4a-secret"
AWS_SECRET = "aws-secret-1a2b3c4d5e6f7a8b9c0d"
REDSHIFT_SECRET_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:rs-creds-XyZ123"


async def test_secrets_never_appear_in_logs_or_error_bodies(
    tmp_path: Path, moto_endpoint: str, make_sqs_queue: Callable[..., str]
) -> None:
    env = {
        "AFPIPE_WEBHOOK_TOKEN": TOKEN,
        "AWS_ACCESS_KEY_ID": FAKE_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        "AWS_REGION": MOTO_REGION,
        "AWS_ENDPOINT_URL_SQS": moto_endpoint,
        "SQS_QUEUE_URL": make_sqs_queue("afpipe-hostile", VisibilityTimeout="30"),
        "LOG_LEVEL": "debug",
        "AFPIPE_RECEIVE_WAIT_S": "1",
        "AFPIPE_BATCH_LINGER_MS": "50",
    }
    wrong = [
        TOKEN[:-1],
        TOKEN + "x",
        f"Bearer {TOKEN[:-1]}",
        TOKEN.upper(),
        "guess-wrong-token-1234",
    ]
    bodies: list[str] = []
    with trio.fail_after(60):
        async with (
            afpipe_process(tmp_path / "data", env) as daemon,
            httpx.AsyncClient(base_url=daemon.url, timeout=10) as client,
        ):
            for presented in wrong:
                for headers in ({"Authorization": presented}, {"X-Token": presented}):
                    response = await client.post(HOOK, json={"event_name": "x"}, headers=headers)
                    assert response.status_code == 401
                    bodies.append(response.text + json.dumps(dict(response.headers)))
                response = await client.get(HOOK, params={"token": presented, "a": "1"})
                assert response.status_code == 401
                bodies.append(response.text)
            ok = await client.post(HOOK, json={"event_name": "x"}, headers={"Authorization": TOKEN})
            assert ok.status_code == 200
            bodies.append(ok.text)
            for path in ("/metrics", "/health", "/ready", "/api/hello", "/nope"):
                bodies.append((await client.get(path)).text)
            await trio.sleep(1.5)  # let the consumer log a poll or two
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait() == 0
    output = daemon.output()
    assert "afpipe serving" in output
    for secret in (TOKEN, AWS_SECRET, *wrong):
        assert secret not in output, f"{secret!r} leaked into the logs"
        for body in bodies:
            assert secret not in body, f"{secret!r} leaked into an answer"


# --- SQL injection through the Redshift emulator -----------------------------------------------

_INJECTIONS = [
    "'); DROP TABLE x; --",
    "'; DROP TABLE x; --",
    "\\'); DROP TABLE x; --",
    "\\\\'); DROP TABLE x; --",
    "' OR '1'='1",
    "$$; DROP TABLE x; $$",
    "$1 :name %s %(a)s ?",
    "\\",
    "\\\\",
    "'",
    "''",
    "\\'",
    "\\x27",
    "\\047",
    "E'\\''",
    '"',
    '"; DROP TABLE x; --',
    "*/ DROP TABLE x; /*",
    "😀'\\\n\r\t\u2028\u2029\x7f\x01",
    "é\u0301 ﬁ ß ẞ",
]
_hostile_text = st.one_of(
    st.sampled_from(_INJECTIONS),
    st.text(
        alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=30
    ),
    st.lists(st.sampled_from([*_INJECTIONS, "a", " ", "\\", "'"]), max_size=5).map("".join),
)
_hostile_payloads = st.fixed_dictionaries(
    {
        "event_name": _hostile_text,
        "app_id": _hostile_text,
        "customer_user_id": _hostile_text,
        "idfa": _hostile_text,
        "event_time": st.just("2024-03-02 12:00:01.123"),
    },
    optional={
        "event_value": st.text(max_size=30),
        _INJECTIONS[0]: _hostile_text,
        "nested": st.dictionaries(_hostile_text, _hostile_text, max_size=3),
    },
)


@settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(payloads=st.lists(_hostile_payloads, min_size=1, max_size=6))
@example(
    payloads=[{"event_name": i, "app_id": i, "customer_user_id": i, "idfa": i} for i in _INJECTIONS]
)
def test_sql_built_from_any_payload_cannot_escape_its_literal(
    redshift_emulator: RedshiftDataEmulator, payloads: list[dict[str, Any]]
) -> None:
    trio.run(_load_hostile, redshift_emulator, payloads)


TARGET = Target(cluster_identifier=TEST_CLUSTER, database=TEST_DATABASE, db_user=TEST_DB_USER)


def _tables(emu: RedshiftDataEmulator) -> set[str]:
    rows = emu.query("SELECT table_name FROM information_schema.tables")
    return {str(name) for (name,) in rows}


async def _load_hostile(emu: RedshiftDataEmulator, payloads: list[dict[str, Any]]) -> None:
    credentials = CredentialCache(static_credentials(FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY))
    service = redshift_data_service(REDSHIFT_REGION, {"AWS_ENDPOINT_URL_REDSHIFT_DATA": emu.url})
    table = f"hostile_{uuid.uuid4().hex[:12]}"
    events = [from_payload(p) for p in payloads]
    with trio.fail_after(30):
        async with AwsClient(credentials=credentials) as aws:
            warehouse = RedshiftWarehouse(
                aws, service, TARGET, table, statement_timeout_s=10.0, max_wait_s=200
            )
            await warehouse.data.run("CREATE TABLE IF NOT EXISTS x (a INTEGER)")
            await warehouse.ensure_table()
            tables_before = _tables(emu)
            result = await warehouse.load(events)
            records = await warehouse.data.query(
                "SELECT id, event_name, app_id, user_id, device_id, JSON_SERIALIZE(event_data)"
                f" FROM {table}"
            )
    assert result.rejected == []
    assert _tables(emu) == tables_before, "a table appeared or disappeared"
    assert "x" in tables_before
    expected = {e.id: e for e in events}
    assert len(records) == len(expected)
    for id_, name, app, user, device, data in records:
        event = expected[str(id_)]
        row = to_row(event)
        got = [name, app, user, device]
        want = [row.event_name, row.app_id, row.user_id, row.device_id]
        assert [None if v is None else str(v).encode() for v in got] == [
            None if w is None else w.encode() for w in want
        ]
        # Short values are not truncated: what was sent is what is stored, byte for byte.
        sent = [event.payload[k] for k in ("event_name", "app_id", "customer_user_id", "idfa")]
        assert [w or "" for w in want] == sent
        assert json.loads(str(data)) == event.payload


# --- methods and repeated fields ------------------------------------------------------------------


async def test_head_never_enqueues() -> None:
    with trio.fail_after(20):
        async with ingest() as server, httpx.AsyncClient(base_url=server.url, timeout=5) as client:
            response = await client.head(HOOK, params={"event_name": "probe"})
    assert response.status_code == 405 or server.queue.sent == []


async def test_a_repeated_get_field_keeps_its_last_value_as_documented() -> None:
    with trio.fail_after(20):
        async with ingest() as server, httpx.AsyncClient(base_url=server.url, timeout=5) as client:
            response = await client.get(HOOK, params=[("event_name", "a"), ("event_name", "b")])
    assert response.status_code == 200
    [(_, payload)] = server.queue.events_since(0)
    assert payload == {"event_name": "b"}
