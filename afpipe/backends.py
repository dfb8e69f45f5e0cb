"""Choose and open the queue and warehouse backends from the settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from afpipe.config import Settings
from afpipe.errors import ConfigError
from afpipe.queue.base import Queue
from afpipe.queue.embedded import EmbeddedQueue
from afpipe.warehouse.base import Warehouse
from afpipe.warehouse.embedded import EmbeddedWarehouse


def describe(settings: Settings) -> dict[str, str]:
    """Which backends are in use, for the startup log."""
    data_dir = Path(settings.data_dir)
    return {
        "queue": settings.sqs_queue_url
        if settings.uses_sqs
        else f"embedded:{data_dir / 'queue.db'}",
        "warehouse": (
            f"redshift:{settings.redshift_cluster_identifier or settings.redshift_workgroup_name}"
            if settings.uses_redshift
            else f"embedded:{data_dir / 'warehouse.db'}"
        ),
    }


@asynccontextmanager
async def open_queue(settings: Settings) -> AsyncIterator[Queue]:
    if settings.uses_sqs:
        raise ConfigError("SQS_QUEUE_URL: the SQS backend is not available in this build")
    queue = EmbeddedQueue(Path(settings.data_dir) / "queue.db")
    try:
        yield queue
    finally:
        await queue.aclose()


@asynccontextmanager
async def open_warehouse(settings: Settings) -> AsyncIterator[Warehouse]:
    if settings.uses_redshift:
        raise ConfigError(
            "REDSHIFT_CLUSTER_IDENTIFIER: the Redshift backend is not available in this build"
        )
    warehouse = EmbeddedWarehouse(
        Path(settings.data_dir) / "warehouse.db", settings.redshift_table_name
    )
    try:
        yield warehouse
    finally:
        await warehouse.aclose()
