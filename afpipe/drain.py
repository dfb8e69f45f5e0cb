"""The drain's deadline for shielded cleanups.

A few cleanups must run even when their caller is cancelled by the drain: a
CancelStatement for a statement still running, the delete of a staged S3
object. They shield themselves from the cancellation, so no outer deadline
bounds them: each caps itself with ``cleanup_scope``, at the earlier of its own
budget and the moment the supervisor set for cleanups to end
(``DrainDeadline.cleanup_by``), so that the whole drain fits in
AFPIPE_DRAIN_TIMEOUT_S. The supervisor owns the ``DrainDeadline`` of a run
(``current``); outside a run nothing caps the budgets.
"""

from __future__ import annotations

import math
from contextvars import ContextVar

import trio

# Cleanups get at most this much of the drain budget (and 20 % of a short one).
CLEANUP_RESERVE_S = 2.0


class DrainDeadline:
    """When shielded cleanups, and the very last one (the release of what is still
    held), must end (trio clock); infinity until a drain starts."""

    def __init__(self) -> None:
        self.cleanup_by = math.inf
        self.end_by = math.inf

    def start(self, now: float, drain_timeout_s: float, release_s: float) -> float:
        """Plan a drain starting ``now``: cleanups, then the release, end by
        ``now + drain_timeout_s``; returns when the work itself must end."""
        release_s = min(release_s, drain_timeout_s / 4)
        cleanup_s = min(CLEANUP_RESERVE_S, drain_timeout_s / 5)
        self.end_by = now + drain_timeout_s
        self.cleanup_by = self.end_by - release_s
        return self.cleanup_by - cleanup_s


def new_run() -> DrainDeadline:
    """A fresh deadline for a run; call before starting the run's tasks."""
    deadline = DrainDeadline()
    _current.set(deadline)
    return deadline


_current: ContextVar[DrainDeadline] = ContextVar("afpipe_drain_deadline")


def current() -> DrainDeadline:
    """The run's deadline object (set by the supervisor before it starts any task,
    so every task shares it); a fresh, unbounded one outside a run."""
    try:
        return _current.get()
    except LookupError:
        deadline = DrainDeadline()
        _current.set(deadline)
        return deadline


def cleanup_scope(budget_s: float, *, last: bool = False) -> trio.CancelScope:
    """A shielded scope that ends after ``budget_s`` or at the drain's cleanup
    deadline (``last``: its very end), whichever comes first."""
    planned = current()
    cap = planned.end_by if last else planned.cleanup_by
    return trio.CancelScope(shield=True, deadline=min(trio.current_time() + budget_s, cap))
