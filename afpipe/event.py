"""AppsFlyer payload -> ``Event`` -> warehouse ``Row``; pure, no I/O.

The event id is the hex SHA-256 of the payload's canonical JSON (keys sorted
at every depth, compact separators, UTF-8), so the same payload always gets
the same id and a repeated or redelivered event can be deduplicated on load.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any, NamedTuple

import msgspec

VARCHAR_MAX_BYTES = 255

# DESIGN.md section 5: the first of these that is present becomes device_id.
DEVICE_ID_FIELDS = (
    "idfa",
    "advertising_id",
    "idfv",
    "android_id",
    "oaid",
    "amazon_aid",
    "appsflyer_id",
)

_EVENT_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f")

_encoder = msgspec.json.Encoder(order="sorted")


class Event(msgspec.Struct, frozen=True):
    """One AppsFlyer event: its deterministic id and the whole payload."""

    id: str
    payload: dict[str, Any]


class Row(NamedTuple):
    """The warehouse columns of one event (``created_at`` is the table's default)."""

    id: str
    event_time: str | None
    event_name: str | None
    app_id: str | None
    user_id: str | None
    device_id: str | None
    event_data: str


def canonical_json(payload: dict[str, Any]) -> bytes:
    """The payload's canonical encoding: what the id hashes and what is queued."""
    return _encoder.encode(payload)


def event_id(canonical: bytes) -> str:
    return hashlib.sha256(canonical).hexdigest()


def truncate_utf8(text: str, max_bytes: int = VARCHAR_MAX_BYTES) -> str:
    """Cut ``text`` to at most ``max_bytes`` UTF-8 bytes at a character boundary.

    Redshift measures VARCHAR in bytes; the full value stays in event_data.
    """
    if len(text) * 4 <= max_bytes:  # fast path: cannot be too long
        return text
    raw = text.encode("utf-8")
    if len(raw) <= max_bytes:
        return text
    # Valid UTF-8 cut mid-character leaves only a partial tail; "ignore" drops it.
    return raw[:max_bytes].decode("utf-8", "ignore")


def _text(value: Any) -> str | None:
    """A payload value as column text; absent or empty values become NULL."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = _encoder.encode(value).decode("utf-8")
    return truncate_utf8(text) if text else None


def parse_event_time(value: Any) -> str | None:
    """``yyyy-mm-dd hh:mm:ss.sss`` (UTC) -> ``YYYY-MM-DD HH:MM:SS.ffffff``, else None.

    An unparseable value gives NULL; the raw value stays in event_data.
    """
    if not isinstance(value, str) or not 10 <= len(value) <= 40:
        return None
    text = value.strip()
    for fmt in _EVENT_TIME_FORMATS:
        try:
            parsed = datetime.strptime(text, fmt)
        except ValueError:
            continue
        # Not strftime("%Y"): glibc writes year 999 as "999", which Redshift refuses.
        return parsed.isoformat(sep=" ", timespec="microseconds")
    return None


def to_row(event: Event) -> Row:
    payload = event.payload
    device_id = None
    for field in DEVICE_ID_FIELDS:
        device_id = _text(payload.get(field))
        if device_id is not None:
            break
    return Row(
        id=event.id,
        event_time=parse_event_time(payload.get("event_time")),
        event_name=_text(payload.get("event_name")),
        app_id=_text(payload.get("app_id")),
        user_id=_text(payload.get("customer_user_id")),
        device_id=device_id,
        event_data=canonical_json(payload).decode("utf-8"),
    )
