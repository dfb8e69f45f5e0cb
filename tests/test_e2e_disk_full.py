"""End to end: the embedded backends on a full disk.

A file-size limit set on the running process (RLIMIT_FSIZE, raised again later;
root may) makes every write that would grow a file fail with EFBIG, as a full
disk does (Python ignores SIGXFSZ). Ingest must answer 503 with Retry-After,
never 200 for an event it could not store, lose nothing it acknowledged, and
recover by itself when space returns.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterable
from pathlib import Path

import httpx
import pytest
import trio

from tests.daemon import afpipe_process, queue_depth, wait_for_rows, warehouse_rows
from tests.load import purchase

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="raising RLIMIT_FSIZE back needs root"),
]


def set_file_size_limit(pid: int, limit_bytes: int) -> None:
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit_bytes, resource.RLIM_INFINITY))


async def post_range(
    client: httpx.AsyncClient, numbers: Iterable[int]
) -> dict[int, httpx.Response]:
    answers: dict[int, httpx.Response] = {}
    for n in numbers:
        answers[n] = await client.post("/webhook/appsflyer", json=purchase(n))
    return answers


async def test_a_full_disk_answers_503_loses_nothing_and_recovers(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {"AFPIPE_BATCH_LINGER_MS": "50", "AFPIPE_ENQUEUE_TIMEOUT_S": "2"}
    acked: set[str] = set()
    with trio.fail_after(90):
        async with (
            afpipe_process(data_dir, env) as daemon,
            httpx.AsyncClient(base_url=daemon.url, timeout=30) as client,
        ):
            before = await post_range(client, range(20))
            assert {r.status_code for r in before.values()} == {200}
            acked |= {r.json()["eventId"] for r in before.values()}
            await wait_for_rows(data_dir, len(acked))

            set_file_size_limit(daemon.process.pid, 0)  # the disk is full
            during = await post_range(client, range(20, 60))
            refused = [r for r in during.values() if r.status_code != 200]
            assert refused, "nothing can be stored, yet everything was acknowledged"
            for answer in refused:
                assert answer.status_code == 503, answer.text
                assert answer.headers.get("retry-after")
                assert answer.json()["success"] is False
            acked |= {r.json()["eventId"] for r in during.values() if r.status_code == 200}
            assert (await client.get("/health")).status_code == 200  # alive all along

            set_file_size_limit(daemon.process.pid, resource.RLIM_INFINITY)  # space returns
            retried = await post_range(
                client, [n for n, r in during.items() if r.status_code != 200]
            )
            after = await post_range(client, range(60, 80))
            for answer in [*retried.values(), *after.values()]:
                assert answer.status_code == 200, answer.text
                acked.add(answer.json()["eventId"])
            await wait_for_rows(data_dir, len(acked), timeout_s=30)
            while queue_depth(data_dir):
                await trio.sleep(0.05)
    ids = [row[0] for row in warehouse_rows(data_dir)]
    assert sorted(ids) == sorted(acked) and len(acked) == 80
