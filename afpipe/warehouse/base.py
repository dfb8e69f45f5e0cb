"""What the pipeline needs of a warehouse: idempotent batch loads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec

from afpipe.event import Event


class Rejected(msgspec.Struct, frozen=True):
    event: Event
    reason: str


class LoadResult(msgspec.Struct, frozen=True):
    """After ``load`` returns, every event not in ``rejected`` is committed."""

    loaded: int  # rows newly inserted (repeats of committed ids are not counted)
    rejected: list[Rejected] = []


class Warehouse(Protocol):
    name: str  # "primary" or "secondary"

    async def ensure_table(self) -> None: ...

    async def load(self, events: Sequence[Event]) -> LoadResult:
        """Commit ``events`` idempotently on ``Event.id``.

        Rows the warehouse rejects for a data reason are isolated (bisecting
        the batch) and returned in ``LoadResult.rejected``; the rest commit.
        Raises ``TransientError`` when nothing could be decided now.
        """
        ...

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...
