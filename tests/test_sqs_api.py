"""SQS request pieces and response parsing; pure, no event loop."""

from __future__ import annotations

from afpipe.aws import sqs_api
from afpipe.aws.sqs_api import EntryFailure
from afpipe.queue.base import group_by_size


def test_split_batch_result_sorts_entries() -> None:
    result = {
        "Successful": [{"Id": "0", "MessageId": "m0"}],
        "Failed": [
            {"Id": "1", "SenderFault": False, "Code": "InternalError", "Message": "oops"},
            {"Id": "2", "SenderFault": True, "Code": "InvalidMessageContents", "Message": "bad"},
            {"Id": "3", "SenderFault": True, "Code": "RequestThrottled", "Message": "slow down"},
        ],
    }
    outcome = sqs_api.split_batch_result(result, ["0", "1", "2", "3", "4"])
    assert outcome.succeeded == {"0": {"Id": "0", "MessageId": "m0"}}
    assert outcome.retry_ids == ["1", "3", "4"]  # "4" is missing from the answer: retry it
    assert outcome.permanent == [EntryFailure("2", "InvalidMessageContents", "bad", True)]


def test_receipt_handle_is_invalid_is_permanent() -> None:
    result = {"Failed": [{"Id": "0", "SenderFault": True, "Code": "ReceiptHandleIsInvalid"}]}
    outcome = sqs_api.split_batch_result(result, ["0"])
    assert outcome.retry_ids == []
    assert [f.code for f in outcome.permanent] == ["ReceiptHandleIsInvalid"]


def test_parse_messages_reads_system_and_message_attributes() -> None:
    result = {
        "Messages": [
            {
                "MessageId": "m1",
                "ReceiptHandle": "h1",
                "Body": "{}",
                "MD5OfBody": "x",
                "Attributes": {"ApproximateReceiveCount": "3", "SentTimestamp": "1700000000123"},
                "MessageAttributes": {
                    "afpipe_reason": {"DataType": "String", "StringValue": "bad json"}
                },
            }
        ]
    }
    [message] = sqs_api.parse_messages(result)
    assert message.receive_count == 3
    assert message.sent_at_s == 1700000000.123
    assert message.attribute("afpipe_reason") == "bad json"
    assert message.attribute("missing") == ""
    assert sqs_api.parse_messages({}) == []


def test_sanitize_keeps_attribute_values_acceptable() -> None:
    assert sqs_api.sanitize("ok ✓ \U0001f600\ttab") == "ok ✓ \U0001f600\ttab"
    assert (
        sqs_api.sanitize("nul\x00 and \x1b esc, lone \ud800")
        == "nul\ufffd and \ufffd esc, lone \ufffd"
    )
    assert sqs_api.sanitize("") == "-"
    assert len(sqs_api.sanitize("x" * 5000)) == sqs_api.MAX_REASON_CHARS


def test_dead_letter_attributes() -> None:
    attributes = sqs_api.dead_letter_attributes("why", "m-1", 4)
    assert attributes == {
        "afpipe_reason": {"DataType": "String", "StringValue": "why"},
        "afpipe_source_message_id": {"DataType": "String", "StringValue": "m-1"},
        "afpipe_receive_count": {"DataType": "Number", "StringValue": "4"},
    }


def test_chunks_of_ten() -> None:
    assert [len(c) for c in sqs_api.chunks(list(range(23)))] == [10, 10, 3]
    assert list(sqs_api.chunks([])) == []


def test_group_by_size_respects_entries_and_bytes() -> None:
    assert list(group_by_size(["a"] * 12, 1000)) == [list(range(10)), [10, 11]]
    bodies = ["x" * 40, "y" * 40, "é" * 20, "z" * 90]  # "é" is 2 bytes
    assert list(group_by_size(bodies, 100)) == [[0, 1], [2], [3]]
    assert list(group_by_size(["w" * 500], 100)) == [[0]]  # alone, however big
