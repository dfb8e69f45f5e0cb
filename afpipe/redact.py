"""Secrets out of log text: pure, no I/O.

At debug botocore logs the canonical request (with ``x-amz-security-token``) and
each signature, and its parsers log STS and IMDS answers (``SecretAccessKey``,
``SessionToken``); hpack logs HTTP/2 headers (``authorization``). Wherever one of
these names is followed by a value, in a header line, a dict or JSON dump, an
XML element or a query string, the value is replaced; so is any secret afpipe
knows by value (the webhook token, the keys in the environment).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "<redacted>"
# Known values shorter than this are not searched for: they would blank common words.
MIN_SECRET_CHARS = 8

_NAMES = (
    "authorization",
    "proxy-authorization",
    "x-amz-security-token",
    "x-amz-signature",
    "x-amz-credential",
    "signature",
    "aws_secret_access_key",
    "secret_access_key",
    "secretaccesskey",
    "secret_key",
    "secretkey",
    "aws_session_token",
    "session_token",
    "sessiontoken",
    "security_token",
    "securitytoken",
    "token",
    "password",
    "secretstring",
)
_NAME = "(?:" + "|".join(re.escape(name) for name in _NAMES) + ")"
_ANY_NAME = re.compile(_NAME, re.IGNORECASE)  # a cheap first look: most lines have none
_RULES = (
    # 'Name': 'v', "name": "v", 'Name': b'v', (b'name', b'v'): up to the closing quote
    re.compile(rf"""(?i)(['"]{_NAME}['"]\s*[:,]\s*b?(['"]))(?:\\.|(?!\2).)*"""),
    # <Name>v</Name>
    re.compile(rf"(?i)(<{_NAME}>)[^<]*"),
    # name: v (a header line; botocore's "Signature:\n<hex>"): to the end of the line
    re.compile(rf"(?im)((?<![\w-]){_NAME}:[ \t]*(?:\r?\n)?)[^\r\n]+"),
    # name=v, name = v (query strings, Authorization's Signature=, config files)
    re.compile(rf"""(?i)((?<![\w-]){_NAME}[ \t]*=[ \t]*)[^&\s'",;]+"""),
)


class Redactor:
    """Replaces secrets in text; ``known`` are exact values to hide wherever they appear."""

    def __init__(self, known: Iterable[str] = ()) -> None:
        values = {value for value in known if len(value) >= MIN_SECRET_CHARS}
        self._known = sorted(values, key=len, reverse=True)  # a longer value first

    def __call__(self, text: str) -> str:
        for value in self._known:
            if value in text:
                text = text.replace(value, REDACTED)
        if _ANY_NAME.search(text) is None:
            return text
        for rule in _RULES:
            text = rule.sub(lambda match: match[1] + REDACTED, text)
        return text

    def secret_name(self, name: str) -> bool:
        """Whether a field called ``name`` holds a secret (its value is hidden whole)."""
        return _ANY_NAME.fullmatch(name) is not None
