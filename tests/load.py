"""Load for end-to-end tests: realistic events and posters that record what was acked."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import trio


def purchase(n: int) -> dict[str, Any]:
    """An in-app purchase as AppsFlyer posts it; ``n`` makes it unique."""
    return {
        "app_id": "id123456789",
        "platform": "ios",
        "idfv": f"6F1A2B3C-{n:04d}",
        "event_name": "af_purchase",
        "event_time": "2024-03-02 12:00:01.123",
        "event_value": json.dumps({"af_revenue": "9.99", "n": n}),
        "is_retargeting": False,
    }


async def post_batches(
    url: str,
    acked: set[str],
    *,
    workers: int = 3,
    until: Callable[[], bool] = lambda: False,
    events_per_post: int = 10,
) -> None:
    """Post arrays of events from ``workers`` tasks until ``until()`` or the server goes away.

    The ids of every event answered 200 are added to ``acked``.
    """

    async def post(worker: int, client: httpx.AsyncClient) -> None:
        for n in range(100_000):
            if until():
                return
            first = worker * 10_000_000 + n * events_per_post
            batch = [purchase(first + i) for i in range(events_per_post)]
            try:
                response = await client.post("/webhook/appsflyer", json=batch)
            except httpx.TransportError:
                return  # the daemon stopped or was killed
            if response.status_code == 200:
                acked.update(response.json()["eventIds"])

    async with (
        httpx.AsyncClient(base_url=url, timeout=30) as client,
        trio.open_nursery() as nursery,
    ):
        for worker in range(workers):
            nursery.start_soon(post, worker, client)
