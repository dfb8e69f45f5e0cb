"""End to end: the real ``afpipe serve`` process on the embedded backends."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
from contextlib import closing
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from afpipe.codec import decode_body
from tests.daemon import afpipe_process, queue_depth, wait_for_rows, warehouse_rows
from tests.load import post_batches, purchase

pytestmark = [
    pytest.mark.slow,
    # Load generators are cut off mid-request when the daemon stops; httpx then leaves
    # request-body generators unfinished, which is the client's business, not afpipe's.
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

INSTALL = {
    "api_version": "2.0",
    "app_id": "com.example.app",
    "platform": "android",
    "appsflyer_id": "1698811503838-6471005703857226631",
    "customer_user_id": "u-42",
    "advertising_id": "d3cd52f1-0ca5-488c-85ab-7af988744f30",
    "event_name": "install",
    "event_time": "2023-11-01 04:05:07.925",
    "media_source": "Facebook Ads",
}


async def test_post_object_array_and_get_land_exactly_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with trio.fail_after(60):
        async with (
            afpipe_process(data_dir, {"AFPIPE_BATCH_LINGER_MS": "50"}) as daemon,
            httpx.AsyncClient(base_url=daemon.url, timeout=30) as client,
        ):
            one = await client.post("/webhook/appsflyer", json=purchase(1))
            assert one.status_code == 200, one.text
            many = await client.post("/webhook/appsflyer", json=[purchase(2), purchase(3)])
            assert many.status_code == 200, many.text
            got = await client.get("/webhook/appsflyer", params=INSTALL)
            assert got.status_code == 200, got.text
            again = await client.post("/webhook/appsflyer", json=purchase(1))
            assert again.json()["eventId"] == one.json()["eventId"]

            ids = {one.json()["eventId"], got.json()["eventId"], *many.json()["eventIds"]}
            assert len(ids) == 4
            await wait_for_rows(data_dir, 4)
            await trio.sleep(0.5)  # a duplicate row, if made, would have landed by now
            rows = warehouse_rows(data_dir)
            assert {row[0] for row in rows} == ids
            assert len(rows) == 4
            by_id = {row[0]: row for row in rows}
            get_row = by_id[got.json()["eventId"]]
            assert get_row[1:3] == ("install", "com.example.app")
            assert json.loads(get_row[3]) == INSTALL  # every GET value, as a string
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait() == 0
    assert queue_depth(data_dir) == 0


async def test_bad_input_is_rejected_and_nothing_is_enqueued(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {"AFPIPE_MAX_BODY_BYTES": "2048", "ENABLE_SQS_CONSUMER": "false"}
    with trio.fail_after(60):
        async with (
            afpipe_process(data_dir, env) as daemon,
            httpx.AsyncClient(base_url=daemon.url, timeout=30) as client,
        ):
            hook = "/webhook/appsflyer"
            deep = b"[" * 5000 + b"]" * 5000
            cases: list[tuple[str, bytes | None, int]] = [
                ("POST", b"{not json", 400),
                ("POST", b'"a string"', 400),
                ("POST", b"[]", 400),
                ("POST", b"[1, 2]", 400),
                ("POST", b"{}", 400),
                ("POST", b"", 400),
                ("POST", b'{"a": "\\ud800"}', 400),
                ("POST", b"[" + deep[:1000] + b"]", 400),
                ("POST", deep, 413),
                ("POST", json.dumps({"x": "y" * 4096}).encode(), 413),
                ("PUT", b"{}", 405),
                ("DELETE", None, 405),
                ("GET", None, 400),
            ]
            for method, body, status in cases:
                # A fresh connection each: after a 413 the server may close the socket.
                response = await client.request(
                    method, hook, content=body, headers={"Connection": "close"}
                )
                assert response.status_code == status, (method, body, response.text)
                assert response.json()["success"] is False
                assert response.json()["error"]
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait() == 0
    assert queue_depth(data_dir) == 0


async def test_token_is_required_when_configured(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {"AFPIPE_WEBHOOK_TOKEN": "s3cret-token", "AFPIPE_WEBHOOK_TOKEN_HEADER": "X-Af-Token"}
    with trio.fail_after(60):
        async with (
            afpipe_process(data_dir, env) as daemon,
            httpx.AsyncClient(base_url=daemon.url, timeout=30) as client,
        ):
            denied = await client.post("/webhook/appsflyer", json=purchase(1))
            wrong = await client.post(
                "/webhook/appsflyer", json=purchase(1), headers={"X-Af-Token": "nope"}
            )
            ok = await client.post(
                "/webhook/appsflyer", json=purchase(2), headers={"X-Af-Token": "s3cret-token"}
            )
            assert (denied.status_code, wrong.status_code, ok.status_code) == (401, 401, 200)
            await wait_for_rows(data_dir, 1)
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait() == 0
    assert [row[0] for row in warehouse_rows(data_dir)] == [ok.json()["eventId"]]
    assert "s3cret-token" not in daemon.output()


async def test_health_ready_and_hello_keep_the_old_shapes(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with (
            afpipe_process(tmp_path / "data", {"ENABLE_SQS_CONSUMER": "false"}) as daemon,
            httpx.AsyncClient(base_url=daemon.url, timeout=30) as client,
        ):
            health = (await client.get("/health")).json()
            assert health["status"] == "ok" and health["consumer"] == "disabled"
            assert health["timestamp"].endswith("Z")
            ready = await client.get("/ready")
            assert ready.status_code == 200
            hello = (await client.get("/api/hello")).json()
            assert "/webhook/appsflyer" in hello["endpoints"] and hello["version"]
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait() == 0


def _idle_keep_alive_connection(url: str) -> socket.socket:
    """A connection that made one request and now sits idle, kept alive."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
    assert b"200" in sock.recv(4096)
    return sock


async def test_sigterm_under_load_keeps_every_acknowledged_event(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    drain_timeout_s = 6.0
    acked: set[str] = set()
    failures: list[int] = []
    env = {"AFPIPE_DRAIN_TIMEOUT_S": str(drain_timeout_s), "AFPIPE_BATCH_LINGER_MS": "200"}
    with trio.fail_after(90):
        async with afpipe_process(data_dir, env) as daemon:
            idle = _idle_keep_alive_connection(daemon.url)

            async def post_forever(worker: int, client: httpx.AsyncClient) -> None:
                for n in range(100_000):
                    try:
                        response = await client.post(
                            "/webhook/appsflyer", json=purchase(worker * 1_000_000 + n)
                        )
                    except httpx.TransportError:
                        return  # the server closed: shutdown
                    if response.status_code == 200:
                        acked.add(response.json()["eventId"])
                    else:
                        failures.append(response.status_code)

            async with (
                httpx.AsyncClient(base_url=daemon.url, timeout=30) as client,
                trio.open_nursery() as n,
            ):
                for worker in range(8):
                    n.start_soon(post_forever, worker, client)
                while len(acked) < 200:
                    await trio.sleep(0.01)
                daemon.signal(signal.SIGTERM)
                started = trio.current_time()
                code = await daemon.wait()
                elapsed = trio.current_time() - started
            idle.close()
    assert code == 0, daemon.output()[-3000:]
    print(f"drain took {elapsed:.2f} s")
    assert elapsed < drain_timeout_s + 1, elapsed
    assert set(failures) <= {503}
    loaded = {row[0] for row in warehouse_rows(data_dir)}
    assert acked <= loaded, f"{len(acked - loaded)} acknowledged events have no row"
    assert len(warehouse_rows(data_dir)) == len(loaded)  # no duplicates


async def test_kill_9_then_restart_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    acked: set[str] = set()
    env = {"AFPIPE_BATCH_LINGER_MS": "20", "AFPIPE_VISIBILITY_TIMEOUT_S": "2"}
    with trio.fail_after(120):
        async with afpipe_process(data_dir, env) as daemon, trio.open_nursery() as nursery:
            nursery.start_soon(partial(post_batches, daemon.url, acked, workers=4))
            while len(warehouse_rows(data_dir)) < 300:
                await trio.sleep(0.01)
            daemon.signal(signal.SIGKILL)  # mid-load, mid-HTTP
            assert await daemon.wait() == -signal.SIGKILL
        # Whatever was acknowledged is on disk; a restart loads it, each once.
        pending = queue_depth(data_dir)
        async with afpipe_process(data_dir, env) as daemon:
            await wait_for_rows(data_dir, len(acked), timeout_s=60)
            while queue_depth(data_dir):
                await trio.sleep(0.05)
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait() == 0
    rows = warehouse_rows(data_dir)
    assert acked <= {row[0] for row in rows}
    assert len(rows) == len({row[0] for row in rows})
    assert pending >= 0


async def test_roles_run_as_separate_processes_sharing_the_files(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with trio.fail_after(60):
        async with (
            afpipe_process(data_dir, {"ENABLE_SQS_CONSUMER": "false"}) as ingest,
            httpx.AsyncClient(base_url=ingest.url, timeout=30) as client,
        ):
            response = await client.post("/webhook/appsflyer", json=[purchase(1), purchase(2)])
            assert response.status_code == 200
            assert queue_depth(data_dir) >= 1
            body_events = len(decode_body(_first_body(data_dir)))
            assert body_events == 2
            assert warehouse_rows(data_dir) == []  # no consumer in this process
            async with afpipe_process(
                data_dir, {"AFPIPE_BATCH_LINGER_MS": "20"}, args=("--no-ingest",)
            ) as consumer:
                await wait_for_rows(data_dir, 2)
                consumer.signal(signal.SIGTERM)
                assert await consumer.wait() == 0
            ingest.signal(signal.SIGTERM)
            assert await ingest.wait() == 0
    assert queue_depth(data_dir) == 0


def _first_body(data_dir: Path) -> str:
    with closing(sqlite3.connect(data_dir / "queue.db")) as conn:
        return str(conn.execute("SELECT body FROM messages ORDER BY seq LIMIT 1").fetchone()[0])
