"""CREATE TABLE, rewritten from Redshift to DuckDB.

Redshift accepts but does not enforce PRIMARY KEY, UNIQUE and REFERENCES, so they
are dropped (DuckDB would enforce them). VARCHAR(n)/CHAR(n) lengths count UTF-8
bytes in Redshift; DuckDB ignores declared lengths, so each becomes a CHECK that
raises Redshift's own error text (the engine maps it back). Distribution, sort,
encoding and backup attributes have no DuckDB meaning and are dropped.
"""

from __future__ import annotations

from tests.emulators.redshift.errors import SqlError
from tests.emulators.redshift.lexer import Kind, Token, render, render_spaced
from tests.emulators.redshift.names import TableName, read_name

_VARCHAR = frozenset({"varchar", "character varying", "nvarchar", "text"})
_CHAR = frozenset({"char", "character", "nchar", "bpchar"})
_MAX_BYTES = {"varchar": 65535, "char": 4096}
_STOP_WORDS = frozenset(
    {"default", "identity", "generated", "encode", "distkey", "sortkey", "collate"}
    | {"not", "null", "unique", "primary", "references", "constraint"}
)
_TABLE_ATTRIBUTE_WORDS = frozenset(
    {"backup", "yes", "no", "diststyle", "auto", "even", "key", "all", "distkey"}
    | {"sortkey", "compound", "interleaved", "encode"}
)


def is_create_table(sig: list[Token]) -> bool:
    words = [t.value if t.kind is Kind.WORD else "" for t in sig[:4]]
    i = 1
    if words[i : i + 1] == ["local"]:
        i += 1
    if words[i : i + 1] in (["temp"], ["temporary"]):
        i += 1
    return words[:1] == ["create"] and words[i : i + 1] == ["table"]


def rewrite_create_table(sig: list[Token]) -> tuple[str, TableName | None]:
    """DuckDB DDL, and the parent table of `CREATE TABLE x (LIKE parent)`, whose
    columns the engine copies from DuckDB's catalog (with their CHECKs)."""
    i = next(n for n, t in enumerate(sig) if t.is_word("table")) + 1
    temp = any(t.is_word("temp", "temporary") for t in sig[:i])
    if_not_exists = [t.value for t in sig[i : i + 3]] == ["if", "not", "exists"]
    i += 3 if if_not_exists else 0
    name, end = read_name(sig, i)
    head = "CREATE {}TABLE {}{}".format(
        "TEMP " if temp or name.table.startswith("#") else "",
        "IF NOT EXISTS " if if_not_exists else "",
        render(sig[i:end]),
    )
    if end < len(sig) and sig[end].value == "(":
        close = _matching_paren(sig, end)
        _check_table_attributes(sig[close + 1 :])
        items = _split_commas(sig[end + 1 : close])
        if items[0] and items[0][0].is_word("like"):
            return head, _like_parent(items)
        columns = [c for c in map(_column, items) if c]
        return f"{head} ({', '.join(columns)})", None
    as_at = next((n for n in range(end, len(sig)) if sig[n].is_word("as")), None)
    if as_at is None:
        raise SqlError(f'syntax error at or near "{_near(sig, end)}"')
    _check_table_attributes(sig[end:as_at])
    return f"{head} AS {render_spaced(sig[as_at + 1 :])}", None


def _like_parent(items: list[list[Token]]) -> TableName:
    """`(LIKE parent [INCLUDING | EXCLUDING DEFAULTS])`, alone in the column list."""
    item = items[0]
    parent, end = read_name(item, 1)
    rest = [t.value for t in item[end:]]
    if len(items) > 1 or rest not in ([], ["including", "defaults"], ["excluding", "defaults"]):
        raise SqlError("emulator: LIKE must be the only item of the column list")
    return parent


def _column(item: list[Token]) -> str | None:
    if not item:
        raise SqlError('syntax error at or near ","')
    if item[0].is_word("constraint"):
        item = item[2:]
    head = item[0]
    if head.is_word("primary", "unique", "foreign"):
        return None  # informational only in Redshift
    if head.is_word("check"):
        raise SqlError(f"emulator: {head.value.upper()} in CREATE TABLE is not supported")
    if head.kind not in (Kind.WORD, Kind.IDENT):
        raise SqlError(f'syntax error at or near "{head.text}"')
    column = render([head])
    type_end = _stop_position(item, 1)
    duck_type, check = _map_type(item[1:type_end], column)
    parts = [column, duck_type, *_attributes(item[type_end:])]
    return " ".join(parts + ([check] if check else []))


def _map_type(tokens: list[Token], column: str) -> tuple[str, str | None]:
    if not tokens:
        raise SqlError(f"column {column} has no data type")
    paren = next((n for n, t in enumerate(tokens) if t.value == "("), len(tokens))
    base = " ".join(t.value for t in tokens[:paren])
    args = [t.value for t in tokens[paren:] if t.kind in (Kind.NUMBER, Kind.WORD)]
    if base in _VARCHAR or base in _CHAR:
        family = "varchar" if base in _VARCHAR else "char"
        default = 1 if base in ("char", "character", "nchar") else 256
        limit = _length(args, default, family)
        redshift_type = "character varying" if family == "varchar" else "character"
        message = f"value too long for type {redshift_type}({limit})"
        check = (
            f"CHECK (CASE WHEN strlen({column}) > {limit} THEN error('{message}') ELSE true END)"
        )
        return "VARCHAR", check
    if base == "super":
        return "JSON", None
    if base in ("numeric", "decimal") and not args:
        return "DECIMAL(18,0)", None  # Redshift's default precision and scale
    return render_spaced(tokens), None


def _length(args: list[str], default: int, family: str) -> int:
    if not args:
        return default
    if args[0] == "max":
        return _MAX_BYTES[family]
    if not args[0].isdigit():
        raise SqlError(f'syntax error at or near "{args[0]}"')
    length = int(args[0])
    if length < 1:
        raise SqlError(f"length for type {family} must be at least 1")
    if length > _MAX_BYTES[family]:
        raise SqlError(f"length for type {family} cannot exceed {_MAX_BYTES[family]}")
    return length


def _attributes(tokens: list[Token]) -> list[str]:
    """Keep DEFAULT and NULL/NOT NULL; drop what Redshift does not enforce."""
    kept: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.is_word("default"):
            end = _stop_position(tokens, i + 1, skip_first=True)
            kept.append("DEFAULT " + render_spaced(tokens[i + 1 : end]))
            i = end
        elif token.is_word("not") and i + 1 < len(tokens) and tokens[i + 1].is_word("null"):
            kept.append("NOT NULL")
            i += 2
        elif token.is_word("null"):
            kept.append("NULL")
            i += 1
        else:
            i = _skip_attribute(tokens, i)
    return kept


def _skip_attribute(tokens: list[Token], i: int) -> int:
    token = tokens[i]
    if token.is_word("encode", "collate", "constraint"):
        return i + 2
    if token.is_word("distkey", "sortkey", "unique"):
        return i + 1
    if token.is_word("primary") and i + 1 < len(tokens) and tokens[i + 1].is_word("key"):
        return i + 2
    if token.is_word("references"):
        _, end = read_name(tokens, i + 1)
        if end < len(tokens) and tokens[end].value == "(":
            end = _matching_paren(tokens, end) + 1
        return end
    if token.is_word("identity", "generated"):
        raise SqlError("emulator: IDENTITY columns are not supported")
    raise SqlError(f'syntax error at or near "{token.text}"')


def _check_table_attributes(tokens: list[Token]) -> None:
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.value == "(":
            i = _matching_paren(tokens, i) + 1
        elif token.kind is Kind.WORD and token.value in _TABLE_ATTRIBUTE_WORDS:
            i += 1
        else:
            raise SqlError(f'syntax error at or near "{token.text}"')


def _stop_position(tokens: list[Token], start: int, *, skip_first: bool = False) -> int:
    """The first stop word at paren depth 0 from `start` (an expression may begin
    with one, as in DEFAULT NULL, hence skip_first)."""
    depth = 0
    for n in range(start, len(tokens)):
        token = tokens[n]
        if token.kind is Kind.OP and token.value in ("(", ")"):
            depth += 1 if token.value == "(" else -1
        stops = token.kind is Kind.WORD and token.value in _STOP_WORDS
        if stops and depth == 0 and not (skip_first and n == start):
            return n
    return len(tokens)


def _split_commas(tokens: list[Token]) -> list[list[Token]]:
    items: list[list[Token]] = [[]]
    depth = 0
    for token in tokens:
        if token.kind is Kind.OP and token.value in ("(", ")"):
            depth += 1 if token.value == "(" else -1
        if depth == 0 and token.kind is Kind.OP and token.value == ",":
            items.append([])
        else:
            items[-1].append(token)
    return items


def _matching_paren(tokens: list[Token], start: int) -> int:
    depth = 0
    for n in range(start, len(tokens)):
        if tokens[n].kind is Kind.OP and tokens[n].value in ("(", ")"):
            depth += 1 if tokens[n].value == "(" else -1
            if depth == 0:
                return n
    raise SqlError("syntax error at end of input")


def _near(sig: list[Token], i: int) -> str:
    return sig[i].text if i < len(sig) else "end of input"
