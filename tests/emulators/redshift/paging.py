"""NextToken of GetStatementResult and ListStatements: where the next page starts,
valid only for the listing (`scope`) that issued it."""

from __future__ import annotations

import base64
import binascii

from tests.emulators.redshift.errors import validation_error


def encode_token(scope: str, offset: int) -> str:
    return base64.urlsafe_b64encode(f"{scope}|{offset}".encode()).decode()


def decode_token(token: str | None, scope: str) -> int:
    if token is None:
        return 0
    try:
        token_scope, _, offset = base64.urlsafe_b64decode(token.encode()).decode().partition("|")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise validation_error("Invalid NextToken.") from exc
    if token_scope != scope or not offset.isdigit():
        raise validation_error("Invalid NextToken.")
    return int(offset)
