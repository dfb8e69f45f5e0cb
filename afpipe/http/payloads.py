"""Webhook request parsing: bytes or query args -> payloads, and the token check; pure, no I/O.

Every way a request can be wrong maps to a ``BadRequest`` with the status to
answer (400, 413); such a request is never enqueued.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import Any

import msgspec

from afpipe.codec import BODY_OVERHEAD_BYTES, EncodedEvent, encode_event

_decoder = msgspec.json.Decoder()


class BadRequest(ValueError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def payloads_from_json(body: bytes) -> tuple[list[dict[str, Any]], bool]:
    """POST body -> (payloads, is_array): one JSON object, or a non-empty array of objects."""
    if not body.strip():
        raise BadRequest(400, "request body is empty")
    try:
        value = _decoder.decode(body)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
        raise BadRequest(400, f"invalid JSON: {exc}") from exc
    if isinstance(value, dict):
        payloads = [value]
    elif isinstance(value, list) and value:
        payloads = value
    elif isinstance(value, list):
        raise BadRequest(400, "JSON array is empty")
    else:
        raise BadRequest(400, "JSON body must be an object or an array of objects")
    for index, payload in enumerate(payloads):
        if not isinstance(payload, dict):
            raise BadRequest(400, f"array item {index} is not a JSON object")
        if not payload:
            raise BadRequest(400, f"event {index} is an empty object")
    return payloads, isinstance(value, list)


def payload_from_query(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """GET query -> payload (values are all strings; a repeated field keeps its last)."""
    payload = dict(pairs)
    if not payload:
        raise BadRequest(400, "no event fields in the query string")
    return payload


def encode_all(payloads: list[dict[str, Any]], max_message_bytes: int) -> list[EncodedEvent]:
    """Encode each payload once (canonical JSON + id); each must fit one queue message."""
    encoded = []
    for index, payload in enumerate(payloads):
        try:
            event = encode_event(payload)
        except (msgspec.EncodeError, OverflowError, TypeError, ValueError) as exc:
            raise BadRequest(400, f"event {index} cannot be encoded: {exc}") from exc
        if len(event.item) + BODY_OVERHEAD_BYTES > max_message_bytes:
            raise BadRequest(413, f"event {index} is larger than a queue message")
        encoded.append(event)
    return encoded


def token_matches(expected: str, presented: str | None) -> bool:
    """Constant-time compare; ``Bearer <token>`` is accepted too."""
    if presented is None:
        return False
    given = presented.encode("utf-8", "surrogateescape")
    want = expected.encode("utf-8", "surrogateescape")  # os.environ may hold these too
    bearer = b"Bearer " + want
    # Both compares always run, so timing reveals nothing about which form was sent.
    return hmac.compare_digest(given, want) | hmac.compare_digest(given, bearer)
