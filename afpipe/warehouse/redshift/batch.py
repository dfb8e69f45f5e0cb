"""A batch sorted out before any SQL: what to load, what can never load; pure, no I/O."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from afpipe.event import Event, Row, to_row
from afpipe.warehouse.base import Rejected


class Batch:
    """``events`` sorted out by ``reason``: why a row can never load, or None."""

    def __init__(self, events: Sequence[Event], reason: Callable[[Row], str | None]) -> None:
        self.stored: dict[str, tuple[Event, Row]] = {}  # by id, first event of each id
        self.twins: list[Event] = []  # later events with an id already stored
        self.rejected: list[Rejected] = []
        for event in events:
            row = to_row(event)
            why = reason(row)
            if why is not None:
                self.rejected.append(Rejected(event, why))
            elif row.id in self.stored:
                self.twins.append(event)
            else:
                self.stored[row.id] = (event, row)

    def events(self) -> list[Event]:
        """What to load: the first event of each id that can load."""
        return [event for event, _ in self.stored.values()]

    def rows(self) -> dict[str, Row]:
        """Their rows, by id."""
        return {event.id: row for event, row in self.stored.values()}

    def rejected_with(self, refused: list[Rejected]) -> list[Rejected]:
        """Every rejection: the batch's own, ``refused`` (the rows the warehouse
        refused), and their twins: a repeat shares its id, hence its payload, with
        a rejected event, so it shares its fate."""
        rejected = self.rejected + refused
        reasons = {item.event.id: item.reason for item in rejected}
        twins = [Rejected(event, reasons[event.id]) for event in self.twins if event.id in reasons]
        return rejected + twins
