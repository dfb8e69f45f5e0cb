"""JSON-lines logging on stdout: one object per line (level, time, message, context).

Libraries' own loggers are held at WARNING unless ``AFPIPE_LOG_THIRD_PARTY``: at
info httpx writes a line per AWS call, at debug botocore writes canonical
requests. Every line, afpipe's or a library's, passes the redactor first.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

import msgspec

from afpipe.redact import REDACTED, Redactor

# LOG_LEVEL keeps the Node.js service's (pino) level names.
LEVELS = {
    "trace": 5,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,
    "silent": logging.CRITICAL + 10,
}

# Loggers of the libraries afpipe runs on (children included: "botocore.auth"...).
THIRD_PARTY_LOGGERS = (
    "botocore",
    "boto3",
    "s3transfer",
    "urllib3",
    "httpx",
    "httpcore",
    "hpack",
    "h2",
    "h11",
    "hypercorn.access",
    "hypercorn.error",
    "quart",
    "werkzeug",
    "asyncio",
)

_RESERVED = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


def _default(value: Any) -> Any:
    return repr(value)


_encoder = msgspec.json.Encoder(enc_hook=_default)


class JsonFormatter(logging.Formatter):
    def __init__(self, redact: Redactor | None = None) -> None:
        super().__init__()
        self.redact = redact or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "level": record.levelname.lower(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "logger": record.name,
            "message": self.redact(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = self._clean(key, value)
        if record.exc_info:
            entry["exception"] = self.redact(self.formatException(record.exc_info))
        return _encoder.encode(entry).decode("utf-8")

    def _clean(self, key: str, value: Any) -> Any:
        """``value`` with secrets hidden: a secret's name hides it whole, text is redacted."""
        if self.redact.secret_name(key) and value:
            return REDACTED
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {k: self._clean(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._clean("", v) for v in value]
        if isinstance(value, int | float | bool) or value is None:
            return value
        return self.redact(repr(value))


def configure(
    level_name: str,
    *,
    third_party: bool = False,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Log at ``level_name`` to ``stream`` (stdout); ``secrets`` are hidden wherever they
    appear; libraries log at WARNING and above unless ``third_party``."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter(Redactor(secrets)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    level = LEVELS.get(level_name, logging.INFO)
    root.setLevel(level)
    for name in THIRD_PARTY_LOGGERS:
        # A logger's own level is the only one checked for its records (not its
        # parents'), so a held-back library never logs below the root's level either.
        logging.getLogger(name).setLevel(
            logging.NOTSET if third_party else max(level, logging.WARNING)
        )
    # hypercorn's own access/error loggers would print plain text: route them here.
    for name in ("hypercorn.error", "hypercorn.access", "quart.app", "quart.serving"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
