"""The accounting: every event that leaves a queue, counted once per target by how
it left, so that what was accepted balances against what was settled and what is
still held or queued (the operator's "did we lose anything?").

Per target, over any window and summed over every process sharing the queue::

    accepted = settled{queue="main", target} + held{queue="main"} + still on the queue

and for the secondary's retry queue, ``handed_off`` plays the part of accepted.
A message counts when it leaves the queue: deleted after its load (``loaded``, or
``dead_lettered`` for the events that target rejected), or dead-lettered whole.
A delete that fails brings the message back and counts it again: the
redeliveries show in ``afpipe_messages_received_again_total``. An undecodable
message's events are unknown; it counts only in ``afpipe_dead_lettered_total``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Literal

from afpipe import metrics
from afpipe.event import Event

Outcome = Literal["loaded", "dead_lettered", "handed_off", "dropped"]


class Ledger:
    """Settlements of one queue's events into its consumer's targets."""

    def __init__(self, queue: str = "", targets: Sequence[str] = ()) -> None:
        self.queue = queue
        self.targets = tuple(targets)

    def open(self, secondary: str | None = None, *, retry_queue: bool = False) -> None:
        """Export every count this consumer can move, at 0, from its start. A labelled
        counter otherwise appears only at its first increment, and after a restart
        Prometheus's increase() cannot tell "came back at 1" from "stayed at 1"."""
        for target in self.targets:
            for outcome in ("loaded", "dead_lettered"):
                metrics.EVENTS_SETTLED.labels(self.queue, target, outcome)
            metrics.LOAD_FAILURES.labels(target)
        if secondary is not None:
            missed = "handed_off" if retry_queue else "dropped"
            metrics.EVENTS_SETTLED.labels(self.queue, secondary, missed)
        metrics.RECEIVED_AGAIN.labels(self.queue)
        for kind in ("event", "message"):
            metrics.DEAD_LETTERED.labels(kind)
        for cause in ("load", "delete", "receive"):
            metrics.RETRIES.labels(cause)

    def settle(self, target: str, events: Sequence[Event], outcome: Outcome) -> None:
        if events:
            metrics.EVENTS_SETTLED.labels(self.queue, target, outcome).inc(len(events))

    def settle_load(
        self, target: str, events: Sequence[Event], rejected_ids: Collection[str]
    ) -> None:
        """A committed load: the events ``target`` rejected were dead-lettered."""
        refused = [e for e in events if e.id in rejected_ids]
        self.settle(target, refused, "dead_lettered")
        self.settle(target, [e for e in events if e.id not in rejected_ids], "loaded")

    def dead_lettered_whole(self, events: Sequence[Event]) -> None:
        """A message dead-lettered unloaded: its events, for every target."""
        for target in self.targets:
            self.settle(target, events, "dead_lettered")
