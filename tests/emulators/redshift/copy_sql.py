"""COPY from S3, parsed from tokens (lexer.py), for the subset the emulator loads:

    COPY table [ ( column [, ...] ) ]
    FROM 's3://bucket/prefix'
    option [ ... ]                       -- in any order, each at most once
      IAM_ROLE { 'arn:aws:iam::<account>:role/<name>[,<chained role arn>...]' | DEFAULT }
      [ FORMAT [ AS ] ] JSON [ AS ] { 'auto' | 'auto ignorecase' }
      GZIP
      TIMEFORMAT [ AS ] 'auto'
      REGION [ AS ] 'aws-region'

Everything else Redshift accepts (CSV, MANIFEST, MAXERROR, CREDENTIALS, a JSONPaths
file...) fails with "emulator: COPY option X is not supported": a test must never
get silently different semantics.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tests.emulators.redshift.errors import SqlError
from tests.emulators.redshift.lexer import Kind, Token
from tests.emulators.redshift.names import TableName, read_name

# What Redshift answers when a COPY carries no authorization at all.
MISSING_CREDENTIALS = (
    "Invalid credentials. Must be of the format: credentials 'aws_iam_role=...' or "
    "'aws_access_key_id=...;aws_secret_access_key=...[;token=...]'"
)
_ROLE_ARN = r"arn:aws(?:-cn|-us-gov)?:iam::\d{12}:role/[\w+=.@/-]{1,512}"
_ROLE_ARNS = re.compile(rf"{_ROLE_ARN}(?:,{_ROLE_ARN}){{0,9}}")  # up to 10 chained roles
_OTHER_AUTH = frozenset({"credentials", "access_key_id", "secret_access_key", "session_token"})
_FORMATS = frozenset({"csv", "avro", "parquet", "orc", "fixedwidth", "shapefile", "delimiter"})


@dataclass(frozen=True, slots=True)
class CopyCommand:
    table: TableName
    columns: tuple[str, ...] | None  # None: every column of the table, in order
    bucket: str
    prefix: str  # every object whose key starts with it is loaded
    region: str | None  # the bucket's region (None: the cluster's)
    iam_role: str  # an ARN (or chained ARNs), or "default"
    ignorecase: bool  # JSON 'auto ignorecase': keys match column names case-insensitively
    gzip: bool
    timeformat_auto: bool  # TIMEFORMAT 'auto'; else Redshift's default YYYY-MM-DD HH:MI:SS


def is_copy(sig: list[Token]) -> bool:
    return bool(sig) and sig[0].is_word("copy")


def parse_copy(sig: list[Token]) -> CopyCommand:
    table, i = read_name(sig, 1)
    columns: tuple[str, ...] | None = None
    if _op(sig, i, "("):
        columns, i = _column_list(sig, i + 1)
    if not _word(sig, i, "from"):
        raise _syntax_error(sig, i)
    source = _string(sig, i + 1)
    bucket, prefix = _s3_path(source)
    options = _Options(sig, i + 2)
    if options.iam_role is None:
        raise SqlError(MISSING_CREDENTIALS)
    if options.json is None:
        raise SqlError(
            "emulator: COPY without FORMAT AS JSON 'auto' (Redshift's pipe-delimited text "
            "default) is not supported"
        )
    return CopyCommand(
        table=table,
        columns=columns,
        bucket=bucket,
        prefix=prefix,
        region=options.region,
        iam_role=options.iam_role,
        ignorecase=options.json == "auto ignorecase",
        gzip=options.gzip,
        timeformat_auto=options.timeformat_auto,
    )


class _Options:
    """The options after FROM, in any order."""

    def __init__(self, sig: list[Token], start: int) -> None:
        self.iam_role: str | None = None
        self.json: str | None = None
        self.region: str | None = None
        self.gzip = False
        self.timeformat_auto = False
        self._sig = sig
        self._seen: set[str] = set()
        i = start
        while i < len(sig):
            i = self._option(i)

    def _option(self, i: int) -> int:
        token = self._sig[i]
        if token.kind is not Kind.WORD:
            raise _syntax_error(self._sig, i)
        word = token.value
        if word == "iam_role":
            self._once("iam_role")
            return self._iam_role(i + 1)
        if word == "format":
            return self._format(self._skip_as(i + 1))
        if word == "json":
            return self._json(i + 1)
        if word == "gzip":
            self._once("gzip")
            self.gzip = True
            return i + 1
        if word == "timeformat":
            self._once("timeformat")
            i = self._skip_as(i + 1)
            value = _string(self._sig, i)
            if value.lower() != "auto":
                raise _unsupported(f"TIMEFORMAT '{value}'")
            self.timeformat_auto = True
            return i + 1
        if word == "region":
            self._once("region")
            i = self._skip_as(i + 1)
            self.region = _string(self._sig, i)
            return i + 1
        if word == "with" and _word(self._sig, i + 1, "credentials"):
            word = "credentials"
        if word in _OTHER_AUTH:
            raise _unsupported(word.upper(), "; use IAM_ROLE")
        raise _unsupported(word.upper())

    def _iam_role(self, i: int) -> int:
        if _word(self._sig, i, "default"):
            self.iam_role = "default"
            return i + 1
        value = _string(self._sig, i)
        if not _ROLE_ARNS.fullmatch(value):
            raise SqlError(
                f"Invalid IAM_ROLE '{value}': expected 'arn:aws:iam::<account-id>:role/"
                "<role-name>' (comma-separated when chained) or default"
            )
        self.iam_role = value
        return i + 1

    def _format(self, i: int) -> int:
        if _word(self._sig, i, "json"):
            return self._json(i + 1)
        if i < len(self._sig) and self._sig[i].value in _FORMATS:
            raise _unsupported(f"FORMAT AS {self._sig[i].value.upper()}")
        raise _syntax_error(self._sig, i)

    def _json(self, i: int) -> int:
        self._once("format")
        i = self._skip_as(i)
        if i >= len(self._sig) or self._sig[i].kind is not Kind.STRING:
            raise _unsupported("JSON without 'auto'")
        value = self._sig[i].value
        if value.lower() not in ("auto", "auto ignorecase"):
            raise _unsupported(f"JSON '{value}'")
        self.json = value.lower()
        return i + 1

    def _skip_as(self, i: int) -> int:
        return i + 1 if _word(self._sig, i, "as") else i

    def _once(self, option: str) -> None:
        if option in self._seen:
            raise SqlError("conflicting or redundant options")
        self._seen.add(option)


def _column_list(sig: list[Token], i: int) -> tuple[tuple[str, ...], int]:
    columns: list[str] = []
    while True:
        if i >= len(sig) or sig[i].kind not in (Kind.WORD, Kind.IDENT):
            raise _syntax_error(sig, i)
        name = sig[i].value.lower()
        if name in columns:
            raise SqlError(f'column "{name}" specified more than once')
        columns.append(name)
        if _op(sig, i + 1, ")"):
            return tuple(columns), i + 2
        if not _op(sig, i + 1, ","):
            raise _syntax_error(sig, i + 1)
        i += 2


def _s3_path(source: str) -> tuple[str, str]:
    scheme, sep, rest = source.partition("://")
    if not sep or scheme.lower() != "s3":
        raise SqlError(f"emulator: COPY FROM '{source}' is not supported; only s3:// paths are")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise SqlError(f"Invalid S3 path: '{source}'")
    return bucket, prefix


def _string(sig: list[Token], i: int) -> str:
    if i >= len(sig) or sig[i].kind is not Kind.STRING:
        raise _syntax_error(sig, i)
    return sig[i].value


def _word(sig: list[Token], i: int, word: str) -> bool:
    return i < len(sig) and sig[i].is_word(word)


def _op(sig: list[Token], i: int, op: str) -> bool:
    return i < len(sig) and sig[i].kind is Kind.OP and sig[i].value == op


def _syntax_error(sig: list[Token], i: int) -> SqlError:
    near = sig[i].text if i < len(sig) else "end of input"
    return SqlError(f'syntax error at or near "{near}"')


def _unsupported(option: str, hint: str = "") -> SqlError:
    return SqlError(f"emulator: COPY option {option} is not supported{hint}")
