"""A tokenizer for Redshift SQL.

Translation works on tokens, never on raw text, so that quotes, comments and
`:name` placeholders inside string literals or quoted identifiers are left alone.
String literals are decoded with Redshift's rules: backslash is an escape
character (PostgreSQL 8.0 behaviour, which Redshift keeps) and `''` is a quote.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from tests.emulators.redshift.errors import SqlError


class Kind(enum.Enum):
    WORD = "word"  # keyword or unquoted identifier; value is lower-cased
    IDENT = "ident"  # "quoted identifier"; value is the unescaped name
    STRING = "string"  # '...' literal; value is the decoded string
    NUMBER = "number"
    PARAM = "param"  # :name placeholder; value is the name
    OP = "op"  # punctuation and operators, one token per character except `::`
    SPACE = "space"  # whitespace and comments


@dataclass(frozen=True, slots=True)
class Token:
    kind: Kind
    text: str  # the source text, emitted unchanged unless translation replaces it
    value: str

    def is_word(self, *words: str) -> bool:
        return self.kind is Kind.WORD and self.value in words


_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"#?[^\W\d][\w$]*")
_NUMBER = re.compile(r"(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_PARAM = re.compile(r":([0-9A-Za-z_]+)")
# A run of operator characters is one token (so `>=` survives re-rendering), but
# it stops before `--` or `/*`, which start comments.
_OPERATOR = re.compile(r"(?:(?!--|/\*)[-+*/<>=~!@%^&|?])+")

# Redshift's backslash escapes; any other escaped character stands for itself.
_SIMPLE_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_OCTAL = re.compile(r"[0-7]{1,3}")

NUL_ERROR = 'invalid byte sequence for encoding "UTF8": 0x00'


def tokenize(sql: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(sql):
        token, pos = _next_token(sql, pos)
        tokens.append(token)
    return tokens


def _next_token(sql: str, pos: int) -> tuple[Token, int]:
    char = sql[pos]
    if char == "'":
        return _string(sql, pos)
    if char == '"':
        return _quoted_ident(sql, pos)
    if sql.startswith("--", pos):
        end = sql.find("\n", pos)
        end = len(sql) if end < 0 else end
        return Token(Kind.SPACE, " ", ""), end
    if sql.startswith("/*", pos):
        end = sql.find("*/", pos + 2)
        if end < 0:
            raise SqlError("unterminated /* comment")
        return Token(Kind.SPACE, " ", ""), end + 2
    if sql.startswith("::", pos):
        return Token(Kind.OP, "::", "::"), pos + 2
    for kind, pattern in _PATTERNS:
        match = pattern.match(sql, pos)
        if match:
            value = match.group(1) if kind is Kind.PARAM else match.group(0)
            if kind is Kind.WORD:
                value = value.lower()
            return Token(kind, match.group(0), value), match.end()
    return Token(Kind.OP, char, char), pos + 1


_PATTERNS = (
    (Kind.SPACE, _SPACE),
    (Kind.WORD, _WORD),
    (Kind.NUMBER, _NUMBER),
    (Kind.PARAM, _PARAM),
    (Kind.OP, _OPERATOR),
)


def _string(sql: str, start: int) -> tuple[Token, int]:
    out: list[str] = []
    pos = start + 1
    while pos < len(sql):
        char = sql[pos]
        if char == "\\":
            decoded, pos = _escape(sql, pos + 1)
            out.append(decoded)
        elif char == "'" and sql.startswith("''", pos):
            out.append("'")
            pos += 2
        elif char == "'":
            return Token(Kind.STRING, sql[start : pos + 1], "".join(out)), pos + 1
        else:
            out.append(char)
            pos += 1
    raise SqlError(f"unterminated quoted string at or near {sql[start : start + 20]!r}")


def _escape(sql: str, pos: int) -> tuple[str, int]:
    if pos >= len(sql):
        raise SqlError("unterminated quoted string")
    octal = _OCTAL.match(sql, pos)
    if octal:
        code = int(octal.group(0), 8)
        # A NUL or a lone byte above 0x7f is not valid UTF-8 text in Redshift.
        if code == 0:
            raise SqlError(NUL_ERROR)
        if code > 0x7F:
            raise SqlError(f'invalid byte sequence for encoding "UTF8": 0x{code:02x}')
        return chr(code), octal.end()
    char = sql[pos]
    return _SIMPLE_ESCAPES.get(char, char), pos + 1


def _quoted_ident(sql: str, start: int) -> tuple[Token, int]:
    pos = start + 1
    while True:
        end = sql.find('"', pos)
        if end < 0:
            raise SqlError(f"unterminated quoted identifier at or near {sql[start : start + 20]!r}")
        if sql.startswith('""', end):
            pos = end + 2
            continue
        text = sql[start : end + 1]
        return Token(Kind.IDENT, text, text[1:-1].replace('""', '"')), end + 1


def duckdb_string(value: str) -> str:
    """A DuckDB literal for `value`: DuckDB strings have no backslash escapes."""
    if "\x00" in value:
        raise SqlError(NUL_ERROR)
    return "'" + value.replace("'", "''") + "'"


def significant(tokens: list[Token]) -> list[Token]:
    return [t for t in tokens if t.kind is not Kind.SPACE]


def render(tokens: list[Token]) -> str:
    """DuckDB text for tokens: literals re-quoted, everything else as written."""
    out: list[str] = []
    previous: Token | None = None
    for token in tokens:
        if token.kind is Kind.STRING:
            # A word right before a literal (E'..', N'..') would change its meaning
            # in DuckDB; a space turns it into a plain typed literal or an error.
            if previous is not None and previous.kind is Kind.WORD:
                out.append(" ")
            out.append(duckdb_string(token.value))
        elif token.kind is Kind.WORD and token.value.startswith("#"):
            out.append('"' + token.value + '"')  # Redshift's #name temp tables
        else:
            out.append(token.text)
        previous = token
    return "".join(out)


def render_spaced(tokens: list[Token]) -> str:
    """Like render, one space between tokens (for rebuilt DDL)."""
    return " ".join(render([t]) for t in tokens)
