"""Events as the pipeline sees them, built from payloads for tests."""

from __future__ import annotations

from typing import Any

from afpipe.event import Event, canonical_json, event_id


def from_payload(payload: dict[str, Any]) -> Event:
    """The event ``payload`` becomes: its id is the SHA-256 of its canonical JSON."""
    return Event(id=event_id(canonical_json(payload)), payload=payload)
