"""SQS JSON-protocol shapes: request pieces and response parsing; no I/O."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

import msgspec

from afpipe.aws.responses import RETRYABLE_CODES
from afpipe.errors import PermanentError, RefusedContent, TransientError

MAX_BATCH_ENTRIES = 10
MAX_WAIT_S = 20  # SQS long poll limit
MAX_VISIBILITY_S = 12 * 60 * 60
MAX_REASON_CHARS = 1024  # a message attribute counts toward the message size: keep it small
SYSTEM_ATTRIBUTES = ("ApproximateReceiveCount", "SentTimestamp")
REASON_ATTRIBUTE = "afpipe_reason"
SOURCE_ID_ATTRIBUTE = "afpipe_source_message_id"
RECEIVE_COUNT_ATTRIBUTE = "afpipe_receive_count"

T = TypeVar("T")

# A receipt handle SQS no longer honours: its message was deleted (a heartbeat racing
# the writer's delete) or its visibility ran out. Expected; nothing to do about it.
GONE_CODES = frozenset(
    {"ReceiptHandleIsInvalid", "MessageNotInflight", "AWS.SimpleQueueService.MessageNotInflight"}
)
CONTENT_REFUSED_CODES = frozenset(
    {"InvalidMessageContents", "AWS.SimpleQueueService.InvalidMessageContents"}
)

# Characters SQS refuses in bodies and attribute values (it accepts only #x9 #xA #xD
# #x20-#xD7FF #xE000-#xFFFD #x10000-#x10FFFF): InvalidMessageContents for the whole call.
REFUSED_CHARACTERS = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class MessageAttribute(msgspec.Struct, frozen=True, rename="pascal"):
    data_type: str
    string_value: str = ""


class SqsMessage(msgspec.Struct, frozen=True, rename="pascal"):
    message_id: str
    receipt_handle: str
    body: str
    attributes: dict[str, str] = {}
    message_attributes: dict[str, MessageAttribute] = {}

    @property
    def receive_count(self) -> int:
        return int(self.attributes.get("ApproximateReceiveCount", "1"))

    @property
    def sent_at_s(self) -> float:
        return int(self.attributes.get("SentTimestamp", "0")) / 1000

    def attribute(self, name: str) -> str:
        found = self.message_attributes.get(name)
        return found.string_value if found else ""


class _ReceiveResult(msgspec.Struct, frozen=True, rename="pascal"):
    messages: list[SqsMessage] = []


class EntryFailure(msgspec.Struct, frozen=True, rename="pascal"):
    id: str
    code: str = ""
    message: str = ""
    sender_fault: bool = False

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE_CODES or not self.sender_fault


class _BatchResult(msgspec.Struct, frozen=True, rename="pascal"):
    successful: list[dict[str, Any]] = []
    failed: list[EntryFailure] = []


class BatchOutcome(msgspec.Struct, frozen=True):
    succeeded: dict[str, dict[str, Any]]  # result entries by Id
    retry_ids: list[str]  # failed for now, or missing from the answer
    permanent: list[EntryFailure]


def parse_messages(result: dict[str, Any]) -> list[SqsMessage]:
    return _convert(result, _ReceiveResult).messages


def split_batch_result(result: dict[str, Any], sent_ids: Iterable[str]) -> BatchOutcome:
    """Sort a *Batch answer's entries into done, to retry, and failed for good."""
    parsed = _convert(result, _BatchResult)
    succeeded = {str(entry["Id"]): entry for entry in parsed.successful}
    failed = {f.id: f for f in parsed.failed}
    retry_ids = [
        i for i in sent_ids if i not in succeeded and (i not in failed or failed[i].retryable)
    ]
    permanent = [f for f in parsed.failed if not f.retryable]
    return BatchOutcome(succeeded, retry_ids, permanent)


def handle_gone(code: str) -> bool:
    """Whether an entry's error code says its receipt handle is no longer held."""
    return code in GONE_CODES


def refused_content(error: PermanentError) -> RefusedContent:
    """A whole call's InvalidMessageContents, as the class callers decide on."""
    return RefusedContent(str(error), code=error.code, request_id=error.request_id)


def entry_error(operation: str, failure: EntryFailure) -> PermanentError:
    """One entry's failure for good, as afpipe's error."""
    text = f"{operation}: {failure.code}: {failure.message}"
    if failure.code in CONTENT_REFUSED_CODES:
        return RefusedContent(text, code=failure.code)
    return PermanentError(text, code=failure.code)


def sanitize(text: str, max_chars: int = MAX_REASON_CHARS) -> str:
    """A non-empty attribute value SQS accepts: bad characters replaced, length capped."""
    return REFUSED_CHARACTERS.sub("\ufffd", text[:max_chars]) or "-"


def string_attribute(value: str) -> dict[str, str]:
    return {"DataType": "String", "StringValue": sanitize(value)}


def dead_letter_attributes(
    reason: str, source_message_id: str, receive_count: int
) -> dict[str, dict[str, str]]:
    return {
        REASON_ATTRIBUTE: string_attribute(reason),
        SOURCE_ID_ATTRIBUTE: string_attribute(source_message_id),
        RECEIVE_COUNT_ATTRIBUTE: {"DataType": "Number", "StringValue": str(receive_count)},
    }


def chunks(items: Sequence[T], size: int = MAX_BATCH_ENTRIES) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _convert(result: dict[str, Any], shape: type[T]) -> T:
    try:
        return msgspec.convert(result, shape)
    except msgspec.ValidationError as exc:
        raise TransientError(f"unexpected SQS response: {exc}", code="InvalidResponse") from exc
