"""The queue seam: SQS in production, an SQLite file when embedded."""

from afpipe.queue.base import Queue, ReceivedMessage

__all__ = ["Queue", "ReceivedMessage"]
