"""The consumer's tuning and its backoff; shared by the poll loops and the writers."""

from __future__ import annotations

import random

import msgspec

RECEIVE_MAX_MESSAGES = 10
RELEASE_TIMEOUT_S = 1.0
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0


class ConsumerConfig(msgspec.Struct, frozen=True, kw_only=True):
    pollers: int = 2
    writers: int = 4
    channel_messages: int = 20
    batch_max_rows: int = 5000
    batch_max_bytes: int = 4 * 1024 * 1024
    batch_linger_s: float = 1.0
    visibility_s: int | None = None  # None: the queue's own (the heartbeat reads it)
    # Default = AFPIPE_MAX_RECEIVES's (afpipe.config.Settings), so the two cannot disagree.
    # Past it a message is loaded alone; past twice it, dead-lettered (pipeline.polling).
    max_receives: int = 5
    empty_receive_pause_s: float = 1.0
    # Default = AFPIPE_RECEIVE_PAUSE_MS's: the pause after a receive of 1 to 9 messages
    # (pipeline.polling.pause_after_s).
    short_receive_pause_s: float = 0.5
    # A long poll cut short at shutdown may still claim a message on the server
    # side, hiding it for visibility_s: shorter waits narrow that window.
    receive_wait_s: float = 20


# 2**MAX_BACKOFF_EXPONENT * base is far past the cap, and the float stays finite
# however long an outage lasts (attempt counts grow for ever: retries never end).
MAX_BACKOFF_EXPONENT = 32


def backoff_s(attempt: int) -> float:
    """Capped exponential backoff with full jitter; any attempt number, however large."""
    exponent = min(max(attempt, 0), MAX_BACKOFF_EXPONENT)
    return random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2.0**exponent))
