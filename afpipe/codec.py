"""Queue message bodies: many events per message; pure, no I/O.

A body is ``{"afpipe":1,"events":[{"id":...,"payload":{...}},...]}``. Each event
is encoded once, at ingest, into an ``EncodedEvent`` whose bytes are spliced
into the body, so a body's size is known exactly before it is sent. A body
holding a bare AppsFlyer object (what the Node.js service queued) decodes as
one event.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import msgspec

from afpipe.event import Event, canonical_json, event_id

_HEAD = b'{"afpipe":1,"events":['
_TAIL = b"]}"
BODY_OVERHEAD_BYTES = len(_HEAD) + len(_TAIL)


class DecodeError(ValueError):
    """A message body that can never become events; it goes to the dead letters."""


class EncodedEvent(msgspec.Struct, frozen=True):
    """An event ready to be queued: its id and its JSON item bytes."""

    id: str
    item: bytes


class _Item(msgspec.Struct, frozen=True):
    payload: dict[str, Any]
    id: str | None = None


class _Envelope(msgspec.Struct, frozen=True):
    afpipe: int
    events: list[_Item]


_envelope_decoder = msgspec.json.Decoder(_Envelope)
_any_decoder = msgspec.json.Decoder()


def encode_event(payload: dict[str, Any]) -> EncodedEvent:
    """Hash and encode a payload in one pass over its canonical JSON.

    The id hashes the canonical bytes; the item escapes what SQS would refuse,
    which decodes to the same payload (and so the same canonical bytes)."""
    canonical = canonical_json(payload)
    eid = event_id(canonical)
    item = b'{"id":"' + eid.encode() + b'","payload":' + sqs_safe(canonical) + b"}"
    return EncodedEvent(id=eid, item=item)


def sqs_safe(canonical: bytes) -> bytes:
    """msgspec's compact JSON with U+FFFE and U+FFFF written as ``\\u`` escapes.

    SQS refuses a whole call for one character outside #x9 #xA #xD #x20-#xD7FF
    #xE000-#xFFFD #x10000-#x10FFFF. msgspec already escapes control characters,
    and valid UTF-8 holds no surrogates: these two are all that is left. Compact
    JSON holds them only inside strings, where the escape is the same character.
    Two byte searches, not a regex: this runs for every event at ingest.
    """
    return canonical.replace(b"\xef\xbf\xbe", b"\\ufffe").replace(b"\xef\xbf\xbf", b"\\uffff")


def encode_body(items: Iterable[EncodedEvent]) -> str:
    return (_HEAD + b",".join(e.item for e in items) + _TAIL).decode("utf-8")


def pack(items: Sequence[EncodedEvent], max_body_bytes: int) -> Iterator[list[EncodedEvent]]:
    """Split ``items`` (in order) into groups whose bodies fit ``max_body_bytes``.

    An event too large for any body raises ValueError; ingest limits make that
    impossible for accepted requests (max body < max message).
    """
    group: list[EncodedEvent] = []
    size = BODY_OVERHEAD_BYTES
    for item in items:
        extra = len(item.item) + (1 if group else 0)
        if BODY_OVERHEAD_BYTES + len(item.item) > max_body_bytes:
            raise ValueError(f"event {item.id} is larger than one queue message")
        if size + extra > max_body_bytes:
            yield group
            group, size, extra = [], BODY_OVERHEAD_BYTES, len(item.item)
        group.append(item)
        size += extra
    if group:
        yield group


def decode_body(body: str | bytes) -> list[Event]:
    """Body -> events. Raises DecodeError with a readable reason."""
    try:
        return [
            Event(id=item.id or event_id(canonical_json(item.payload)), payload=item.payload)
            for item in _envelope_decoder.decode(body).events
        ]
    except msgspec.DecodeError:
        pass  # not an afpipe envelope: maybe a bare event from the old service
    try:
        value = _any_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise DecodeError(f"body is not valid JSON: {exc}") from exc
    if isinstance(value, dict) and "afpipe" not in value:
        if not value:
            raise DecodeError("body is an empty JSON object")
        return [Event(id=event_id(canonical_json(value)), payload=value)]
    raise DecodeError("body is neither an afpipe envelope nor an AppsFlyer JSON object")
