"""Bisect a failing batch so that only the rows the warehouse rejects are set aside.

Invariant 4: bad input never poisons good input. A load attempt that fails
for a data reason is split in halves, recursively, until each rejected event
stands alone with its reason; everything else commits. A batch of n events
with k bad rows costs O(k log n) extra attempts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from afpipe.errors import PermanentError
from afpipe.event import Event
from afpipe.warehouse.base import LoadResult, Rejected

Attempt = Callable[[Sequence[Event]], Awaitable[int]]


async def load_isolating(events: Sequence[Event], attempt: Attempt) -> LoadResult:
    """Run ``attempt`` (all-or-nothing, returns rows inserted) bisecting on PermanentError.

    ``TransientError`` propagates: the caller retries the whole batch later,
    which is safe because every attempt is idempotent on id.
    """
    if not events:
        return LoadResult(loaded=0)
    try:
        return LoadResult(loaded=await attempt(events))
    except PermanentError as exc:
        if len(events) == 1:
            return LoadResult(loaded=0, rejected=[Rejected(events[0], str(exc))])
    middle = len(events) // 2
    left = await load_isolating(events[:middle], attempt)
    right = await load_isolating(events[middle:], attempt)
    return LoadResult(loaded=left.loaded + right.loaded, rejected=left.rejected + right.rejected)
