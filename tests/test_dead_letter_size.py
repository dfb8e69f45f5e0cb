"""Any message body afpipe queues can be dead-lettered on SQS, with the longest reason.

SQS counts a message's attributes (name, type and value, in UTF-8 bytes) towards
its size limit, so the bodies afpipe packs stay ``DEAD_LETTER_HEADROOM_BYTES`` below
``AFPIPE_QUEUE_MAX_MESSAGE_BYTES``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from afpipe import backends, config
from afpipe.aws.sqs_api import MAX_REASON_CHARS, dead_letter_attributes
from afpipe.errors import ConfigError

NO_DOTENV = Path("/nonexistent/.env")
FOUR_BYTE_CHAR = "\U0001f600"  # 😀: four bytes in UTF-8, one character


def sqs_message_bytes(body: str, attributes: dict[str, dict[str, str]]) -> int:
    """The size SQS checks against MaximumMessageSize: body plus every attribute's
    name, data type and value."""
    size = len(body.encode())
    for name, attribute in attributes.items():
        size += len(name.encode()) + len(attribute["DataType"].encode())
        size += len(attribute["StringValue"].encode())
    return size


@pytest.mark.parametrize("queue_max_message_bytes", [16 * 1024, 256 * 1024, 1024 * 1024])
def test_a_maximum_body_with_the_longest_reason_fits_one_sqs_message(
    queue_max_message_bytes: int,
) -> None:
    settings = config.load(
        {"AFPIPE_QUEUE_MAX_MESSAGE_BYTES": str(queue_max_message_bytes)}, NO_DOTENV
    )
    body = "x" * backends.body_limit_bytes(settings)  # the largest body the producer packs
    reason = FOUR_BYTE_CHAR * (MAX_REASON_CHARS + 10)  # cut to MAX_REASON_CHARS characters
    source_id = FOUR_BYTE_CHAR * (MAX_REASON_CHARS + 10)
    attributes = dead_letter_attributes(reason, source_id, receive_count=2**63 - 1)
    assert len(attributes["afpipe_reason"]["StringValue"].encode()) == 4 * MAX_REASON_CHARS
    assert sqs_message_bytes(body, attributes) <= queue_max_message_bytes


def test_the_smallest_queue_message_setting_still_holds_an_event() -> None:
    smallest = config.load({"AFPIPE_QUEUE_MAX_MESSAGE_BYTES": "16384"}, NO_DOTENV)
    assert backends.body_limit_bytes(smallest) >= 4 * 1024
    with pytest.raises(ConfigError, match="AFPIPE_QUEUE_MAX_MESSAGE_BYTES"):
        config.load({"AFPIPE_QUEUE_MAX_MESSAGE_BYTES": "8192"}, NO_DOTENV)
