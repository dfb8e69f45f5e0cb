"""The memory ceiling the settings imply for ingest: pure arithmetic, no I/O.

What ingest holds under any HTTP load, hostile included, is bounded by settings:

- request bodies being read or parsed: ``AFPIPE_MAX_BODY_BUFFER_BYTES`` in all,
  counted chunk by chunk (refused requests never read theirs);
- the one body being decoded and encoded: decoding and encoding are synchronous,
  so one request at a time, ``PARSE_FACTOR`` times its bytes at worst (an array
  of tiny objects: ~26 times as Python objects);
- accepted events waiting for the queue: ``AFPIPE_PRODUCER_MAX_PENDING_BYTES``
  (each event counted with its bookkeeping, ``producer.EVENT_OVERHEAD_BYTES``);
- the sends in flight: ``SEND_FACTOR`` copies of a message per sender (its
  events, the body, the escaped request, the transport's buffers).

On top comes the process's own ``BASE_BYTES``: the interpreter, the libraries and
the consumer's buffers at the default settings, measured at ~80 MB under load
(docs/benchmarks.md), rounded up.
"""

from __future__ import annotations

from afpipe.config import Settings

MIB = 1024 * 1024
BASE_BYTES = 96 * MIB
PARSE_FACTOR = 32
SEND_FACTOR = 8


def ingest_ceiling_bytes(settings: Settings) -> dict[str, int]:
    """Each term of the ceiling, in bytes, and ``total``."""
    terms = {
        "base": BASE_BYTES,
        "bodies being read": settings.max_body_buffer_bytes,
        "one body being parsed": PARSE_FACTOR * settings.max_body_bytes,
        "events waiting for the queue": settings.producer_max_pending_bytes,
        "sends in flight": SEND_FACTOR
        * settings.producer_senders
        * settings.queue_max_message_bytes,
    }
    terms["total"] = sum(terms.values())
    return terms
