"""The emulator's three kinds of failure, mapped to the wire in one place each."""

from __future__ import annotations


class SqlError(Exception):
    """A statement failed in the database: its Redshift error text (without `ERROR: `)."""


class StatementAborted(Exception):
    """The statement was cancelled (CancelStatement or emulator shutdown)."""


class ApiError(Exception):
    """A request-level error, answered as `{"__type": code, "message": ...}`."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


def validation_error(message: str) -> ApiError:
    return ApiError("ValidationException", message)
