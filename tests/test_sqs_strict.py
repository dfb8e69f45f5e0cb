"""The suite's moto refuses what SQS refuses, as SQS says it (checked with boto3).

moto alone accepts any character and counts sizes in characters
(tests/fixtures/moto_server.py makes it strict); a kinder emulator would hide
exactly the bugs these limits cause in production.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import botocore.exceptions
import pytest

from tests.fixtures.moto import sqs_depth

ALLOWED_EDGES = "\t\n\r \ud7ff\ue000\ufffd\U00010000\U0010ffff"
MIB = 1_048_576


def refused(call: Callable[[], Any]) -> dict[str, Any]:
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        call()
    return dict(caught.value.response)


@pytest.mark.parametrize("character", ["\ufffe", "\uffff", "\x00", "\x1f", "\ud800"])
def test_send_message_with_a_refused_character_fails(
    character: str, boto_sqs: Any, sqs_queue_url: str
) -> None:
    response = refused(
        lambda: boto_sqs.send_message(QueueUrl=sqs_queue_url, MessageBody=f"a{character}b")
    )
    assert response["Error"]["Code"] == "InvalidMessageContents"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert sqs_depth(boto_sqs, sqs_queue_url) == (0, 0)


def test_one_refused_entry_fails_the_whole_batch(boto_sqs: Any, sqs_queue_url: str) -> None:
    entries = [
        {"Id": "good", "MessageBody": "fine"},
        {"Id": "bad", "MessageBody": "not \uffff fine"},
    ]
    response = refused(lambda: boto_sqs.send_message_batch(QueueUrl=sqs_queue_url, Entries=entries))
    assert response["Error"]["Code"] == "InvalidMessageContents"
    assert sqs_depth(boto_sqs, sqs_queue_url) == (0, 0)  # not even the good one


def test_a_refused_character_in_an_attribute_value_fails(boto_sqs: Any, sqs_queue_url: str) -> None:
    attributes = {"reason": {"DataType": "String", "StringValue": "bad \ufffe"}}
    response = refused(
        lambda: boto_sqs.send_message(
            QueueUrl=sqs_queue_url, MessageBody="x", MessageAttributes=attributes
        )
    )
    assert response["Error"]["Code"] == "InvalidMessageContents"


def test_the_allowed_edges_are_accepted_and_round_trip(boto_sqs: Any, sqs_queue_url: str) -> None:
    boto_sqs.send_message_batch(
        QueueUrl=sqs_queue_url, Entries=[{"Id": "0", "MessageBody": ALLOWED_EDGES}]
    )
    [message] = boto_sqs.receive_message(QueueUrl=sqs_queue_url)["Messages"]
    assert message["Body"] == ALLOWED_EDGES


def test_a_batch_over_one_mib_in_bytes_is_too_long(boto_sqs: Any, sqs_queue_url: str) -> None:
    body = "ü" * 100_000  # 200,000 bytes, 100,000 characters: moto alone counts the latter
    entries = [{"Id": str(i), "MessageBody": body} for i in range(6)]
    response = refused(lambda: boto_sqs.send_message_batch(QueueUrl=sqs_queue_url, Entries=entries))
    assert response["Error"]["Code"] == "AWS.SimpleQueueService.BatchRequestTooLong"
    assert response["Error"]["QueryErrorCode"] == "BatchRequestTooLong"
    assert response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-query-error"] == (
        "AWS.SimpleQueueService.BatchRequestTooLong;Sender"
    )
    assert sqs_depth(boto_sqs, sqs_queue_url) == (0, 0)


def test_a_batch_of_exactly_one_mib_is_accepted(boto_sqs: Any, sqs_queue_url: str) -> None:
    entries = [{"Id": str(i), "MessageBody": "x" * (MIB // 4)} for i in range(4)]
    sent = boto_sqs.send_message_batch(QueueUrl=sqs_queue_url, Entries=entries)
    assert len(sent["Successful"]) == 4


def test_message_size_counts_utf8_bytes_and_attributes(
    boto_sqs: Any, make_sqs_queue: Callable[..., str]
) -> None:
    url = make_sqs_queue("afpipe-small", MaximumMessageSize="1024")
    boto_sqs.send_message(QueueUrl=url, MessageBody="x" * 1024)
    response = refused(lambda: boto_sqs.send_message(QueueUrl=url, MessageBody="ü" * 513))
    assert response["Error"]["Code"] == "InvalidParameterValue"
    attributes = {"n": {"DataType": "String", "StringValue": "y"}}
    response = refused(
        lambda: boto_sqs.send_message(
            QueueUrl=url, MessageBody="x" * 1020, MessageAttributes=attributes
        )
    )
    assert response["Error"]["Code"] == "InvalidParameterValue"
    assert sqs_depth(boto_sqs, url) == (1, 0)
