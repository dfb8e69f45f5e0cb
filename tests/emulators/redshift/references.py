"""The tables a statement names, for the lock manager: `LOCK`'s list, and the
tables any other statement may read."""

from __future__ import annotations

from tests.emulators.redshift.errors import SqlError
from tests.emulators.redshift.lexer import Kind, Token
from tests.emulators.redshift.names import TableName, read_name


def is_lock(sig: list[Token]) -> bool:
    return bool(sig) and sig[0].is_word("lock")


def parse_lock(sig: list[Token]) -> tuple[TableName, ...]:
    """`LOCK [TABLE] name [, ...]`: Redshift's LOCK has no lock modes (no IN ... MODE)."""
    start = 2 if len(sig) > 1 and sig[1].is_word("table") else 1
    names: list[TableName] = []
    while True:
        name, start = read_name(sig, start)
        names.append(name)
        if start == len(sig):
            return tuple(names)
        if sig[start].value != ",":
            raise SqlError(f'syntax error at or near "{sig[start].text}"')
        start += 1


def named_tables(sig: list[Token]) -> tuple[TableName, ...]:
    """Every table the statement may read, over-approximated from its name tokens:
    `a.b` names table b of schema a (`a.b.c` names a.b and b.c), a lone `a` names a
    temp table of the session or else public.a. Columns and aliases come along;
    they only matter if they equal a locked table's name (then the statement waits
    for the LOCK, a stricter answer than Redshift's)."""
    found: dict[TableName, None] = {}  # a dict keeps the order, for readable tests
    for i, token in enumerate(sig):
        if not _is_name(token):
            continue
        qualifies = i + 2 < len(sig) and sig[i + 1].value == "." and _is_name(sig[i + 2])
        if qualifies:
            found[TableName(_folded(token), _folded(sig[i + 2]))] = None
        elif not (i > 0 and sig[i - 1].value == "."):
            found[TableName(None, _folded(token))] = None
    return tuple(found)


def _is_name(token: Token) -> bool:
    return token.kind in (Kind.WORD, Kind.IDENT)


def _folded(token: Token) -> str:
    # Redshift folds even quoted identifiers (see names.read_name).
    return token.value.lower()
