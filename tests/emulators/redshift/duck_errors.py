"""DuckDB exceptions, reworded as the Redshift errors a client would see."""

from __future__ import annotations

import re
from collections.abc import Callable

import duckdb

from tests.emulators.redshift.errors import SqlError

_Rewrite = Callable[[re.Match[str]], str]

SUPER_FROM_VARCHAR = (
    "emulator: a VARCHAR assigned to a SUPER column is parsed as JSON here, while Redshift "
    "would store it as a SUPER string scalar; wrap it in JSON_PARSE(...)"
)

# First match wins; our own CHECK constraints and macros raise Redshift's texts.
_REWRITES: tuple[tuple[re.Pattern[str], _Rewrite], ...] = (
    (re.compile(r"value too long for type [a-z ]+\(\d+\)"), lambda m: m[0]),
    (re.compile(r"JSON parsing error"), lambda m: m[0]),
    (re.compile(r"SUPER value exceeds the 16 MB limit"), lambda m: m[0]),
    (
        re.compile(r'invalid timestamp field format: "(.*?)"'),
        lambda m: f'invalid input syntax for type timestamp: "{m[1]}"',
    ),
    (
        re.compile(r'(?:timestamp|date) field value out of range: "(.*?)"'),
        lambda m: f'date/time field value out of range: "{m[1]}"',
    ),
    (
        re.compile(r'invalid date field format: "(.*?)"'),
        lambda m: f'invalid input syntax for type date: "{m[1]}"',
    ),
    (
        re.compile(r"Could not convert string '(.*?)' to INT\d+"),
        lambda m: f'invalid input syntax for integer: "{m[1]}"',
    ),
    (re.compile(r"Malformed JSON"), lambda m: SUPER_FROM_VARCHAR),
    (
        re.compile(r"Table with name (\S+) does not exist"),
        lambda m: f'relation "{m[1].lower()}" does not exist',
    ),
    (
        re.compile(r'Referenced column "(.*?)" not found'),
        lambda m: f'column "{m[1].lower()}" does not exist',
    ),
    (
        re.compile(r"NOT NULL constraint failed: \S+?\.(\S+)"),
        lambda m: f"Cannot insert a NULL value into column {m[1]}",
    ),
)
_PREFIX = re.compile(r"^[A-Za-z ]+ Error: ")


def redshift_error(exc: duckdb.Error) -> SqlError:
    message = str(exc)
    for pattern, rewrite in _REWRITES:
        match = pattern.search(message)
        if match:
            return SqlError(rewrite(match))
    first_line = message.strip().splitlines()[0] if message.strip() else type(exc).__name__
    return SqlError(_PREFIX.sub("", first_line))
