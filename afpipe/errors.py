"""afpipe's error hierarchy.

Each branch is a decision for the caller: a ``TransientError`` is retried (with
backoff, within a budget), a ``PermanentError`` goes to the dead-letter path, a
``ConfigError`` stops the process with exit status 2. I/O boundaries map
library and service errors into these once, always ``raise ... from exc``.
"""

from __future__ import annotations


class AfpipeError(Exception):
    """Base class of every error afpipe raises on purpose."""


class ConfigError(AfpipeError):
    """A setting is missing or invalid; the process exits with status 2."""


class AccessDenied(ConfigError):
    """AWS refused the call for lack of a permission or valid credentials: no retry
    can help until an operator changes the identity's policy or the settings."""


class TransientError(AfpipeError):
    """The operation may succeed if tried again later (throttling, 5xx, I/O)."""

    def __init__(self, message: str, *, code: str = "", request_id: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.request_id = request_id


class PermanentError(AfpipeError):
    """Retrying cannot help: the input or the request is wrong."""

    def __init__(self, message: str, *, code: str = "", request_id: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.request_id = request_id


class RefusedContent(PermanentError):
    """The queue refuses a message's characters (SQS: InvalidMessageContents).

    The codec escapes every character SQS refuses, so this means a bug or a new
    rule at SQS: the sender isolates the request at fault, which can never
    succeed (4xx), and sends the requests packed with it."""


class Overloaded(TransientError):
    """A bounded buffer is full; the caller sheds load (503 with Retry-After)."""
