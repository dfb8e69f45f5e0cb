"""Translate one Redshift statement into DuckDB SQL, with what the engine must know.

The translation is token based (see lexer.py). It binds `:name` parameters as
literals (Redshift types a parameter by context, as DuckDB does a string
literal), re-renders every string literal for DuckDB, maps the few Redshift
functions DuckDB lacks, rewrites CREATE TABLE (ddl.py), parses COPY (copy_sql.py)
and LOCK (references.py) for the engine, names the tables a statement writes and
may read for the lock manager, and rejects what the Data API or Redshift would
reject.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tests.emulators.redshift.copy_sql import CopyCommand, is_copy, parse_copy
from tests.emulators.redshift.ddl import is_create_table, rewrite_create_table
from tests.emulators.redshift.errors import SqlError
from tests.emulators.redshift.lexer import Kind, Token, render, significant, tokenize
from tests.emulators.redshift.names import TableName, read_name
from tests.emulators.redshift.references import is_lock, named_tables, parse_lock

# Functions DuckDB lacks under their Redshift names; the rs_* macros are created
# by the engine (engine_setup.py).
_FUNCTION_RENAMES = {
    "json_parse": "rs_json_parse",
    "getdate": "rs_getdate",
    "json_serialize": "rs_json_serialize",
    "is_valid_json": "json_valid",
    "nvl": "coalesce",
}
_RESULT_SET_WORDS = frozenset({"select", "with", "values", "show", "explain", "table"})
_TRANSACTION_WORDS = frozenset({"begin", "start", "commit", "end", "rollback", "abort"})
# Catalog relations the engine creates in rs_catalog (catalog.py), by their Redshift
# names; each may also be written pg_catalog.<name>.
_CATALOG_RELATIONS = {
    "sys_load_error_detail": "rs_catalog.sys_load_error_detail",
    "stv_db_isolation_level": "rs_catalog.stv_db_isolation_level",
}


@dataclass(frozen=True, slots=True)
class Plan:
    """A translated statement."""

    sql: str
    has_result_set: bool
    writes: tuple[TableName, ...]  # tables this statement writes, for the lock manager
    creates_temp: TableName | None  # a temp table it creates (private to the transaction)
    like: TableName | None = None  # CREATE TABLE ... (LIKE like): sql is the head only
    copy: CopyCommand | None = None  # COPY from S3: run by the engine, sql is empty
    reads: tuple[TableName, ...] = ()  # tables it may read (references.named_tables)
    exclusive: bool = False  # ALTER/DROP/TRUNCATE: `writes` are locked ACCESS EXCLUSIVE
    locks: tuple[TableName, ...] = ()  # LOCK: the tables to lock; sql is empty


def referenced_parameters(sql: str) -> set[str] | None:
    """The `:name` placeholders in `sql`, or None when it does not even tokenize."""
    try:
        return {t.value for t in tokenize(sql) if t.kind is Kind.PARAM}
    except SqlError:
        return None


def translate(sql: str, parameters: Mapping[str, str] | None) -> Plan:
    tokens = _single_statement(tokenize(sql))
    tokens = _bind(tokens, parameters)
    if is_lock(significant(tokens)):
        return Plan("", False, (), None, locks=parse_lock(significant(tokens)))
    if is_copy(significant(tokens)):
        command = parse_copy(significant(tokens))
        return Plan("", False, (command.table,), None, copy=command)
    tokens = _rename_functions(tokens)
    sig = significant(tokens)
    first = sig[0]
    if first.kind is Kind.WORD and first.value in _TRANSACTION_WORDS:
        raise SqlError(
            "emulator: transaction control statements are not supported; each Data API "
            "call is its own transaction (use BatchExecuteStatement)"
        )
    writes, temp = _written_tables(sig)
    like = None
    if is_create_table(sig):
        text, like = rewrite_create_table(sig)
    else:
        if first.is_word("merge"):
            _check_merge(sig)
        text = render(tokens)
    # Redshift takes ACCESS EXCLUSIVE for these; CREATE TABLE and DML write.
    exclusive = first.is_word("alter", "drop", "truncate")
    reads = named_tables(sig)
    return Plan(text, _has_result_set(sig), writes, temp, like, reads=reads, exclusive=exclusive)


def _single_statement(tokens: list[Token]) -> list[Token]:
    statements: list[list[Token]] = [[]]
    for token in tokens:
        if token.kind is Kind.OP and token.value == ";":
            statements.append([])
        else:
            statements[-1].append(token)
    non_empty = [s for s in statements if significant(s)]
    if not non_empty:
        raise SqlError("syntax error at end of input")
    if len(non_empty) > 1:
        # What PostgreSQL's extended protocol (used by the Data API) answers.
        raise SqlError("cannot insert multiple commands into a prepared statement")
    return non_empty[0]


def _bind(tokens: list[Token], parameters: Mapping[str, str] | None) -> list[Token]:
    out: list[Token] = []
    for token in tokens:
        if token.kind is not Kind.PARAM:
            out.append(token)
        elif parameters is None:
            raise SqlError('syntax error at or near ":"')
        elif token.value not in parameters:
            raise SqlError(f"parameter {token.value!r} was not supplied")
        else:
            out.append(Token(Kind.STRING, "", parameters[token.value]))
    return out


def _rename_functions(tokens: list[Token]) -> list[Token]:
    out: list[Token] = []
    for i, token in enumerate(tokens):
        after = _next_significant(tokens, i)
        calls = after is not None and after.value == "("
        if token.kind is Kind.WORD and calls and token.value in _FUNCTION_RENAMES:
            name = _FUNCTION_RENAMES[token.value]
            out.append(Token(Kind.WORD, name, name))
        elif token.is_word("sysdate") and not calls and not _after_dot(out):
            out.append(Token(Kind.WORD, "rs_sysdate()", "rs_sysdate()"))
        elif token.is_word("super") and _after_cast(out):
            out.append(Token(Kind.WORD, "JSON", "json"))
        elif token.is_word("columns", "svv_columns") and _is_catalog_columns(out, token):
            _drop_qualifier(out)
            out.append(Token(Kind.WORD, "rs_catalog.columns", "rs_catalog.columns"))
        elif token.is_word(*_CATALOG_RELATIONS) and _qualifier(out) in (None, "pg_catalog"):
            _drop_qualifier(out)
            name = _CATALOG_RELATIONS[token.value]
            out.append(Token(Kind.WORD, name, name))
        else:
            out.append(token)
    return out


def _next_significant(tokens: list[Token], i: int) -> Token | None:
    return next((t for t in tokens[i + 1 :] if t.kind is not Kind.SPACE), None)


def _after_dot(out: list[Token]) -> bool:
    return bool(out) and out[-1].value == "."


def _after_cast(out: list[Token]) -> bool:
    previous = [t for t in out[-2:] if t.kind is not Kind.SPACE]
    return bool(previous) and previous[-1].value == "::"


def _qualifier(out: list[Token]) -> str | None:
    return out[-2].value if len(out) >= 2 and out[-1].value == "." else None


def _is_catalog_columns(out: list[Token], token: Token) -> bool:
    """`information_schema.columns`, `svv_columns` or `pg_catalog.svv_columns`."""
    qualifier = _qualifier(out)
    if token.value == "svv_columns":
        return qualifier in (None, "pg_catalog")
    return qualifier == "information_schema"


def _drop_qualifier(out: list[Token]) -> None:
    if out and out[-1].value == ".":
        del out[-2:]


def _has_result_set(sig: list[Token]) -> bool:
    first_word = next((t for t in sig if t.kind is Kind.WORD), None)
    return first_word is not None and first_word.value in _RESULT_SET_WORDS


def _written_tables(sig: list[Token]) -> tuple[tuple[TableName, ...], TableName | None]:
    words = [t.value if t.kind is Kind.WORD else "" for t in sig[:8]]
    if words[:1] == ["create"] and is_create_table(sig):
        start = words.index("table") + 1
        if words[start : start + 3] == ["if", "not", "exists"]:
            start += 3
        name, _ = read_name(sig, start)
        temp = bool({"temp", "temporary"} & set(words[:start])) or name.table.startswith("#")
        return ((), name) if temp else ((name,), None)
    target = _target_position(words)
    if target is None:
        return (), None
    name, _ = read_name(sig, target)
    return (name,), None


def _target_position(words: list[str]) -> int | None:
    """Where the written table's name starts, for the statements that write one."""
    prefixes = {
        ("insert", "into"): 2,
        ("merge", "into"): 2,
        ("delete", "from"): 2,
        ("truncate", "table"): 2,
        ("alter", "table"): 2,
        ("drop", "table"): 2,
    }
    position = prefixes.get((words[0], words[1])) if len(words) >= 2 else None
    if position is None and words[:1] in (["update"], ["delete"], ["truncate"]):
        position = 1
    if position is not None and words[:2] == ["drop", "table"] and words[2:4] == ["if", "exists"]:
        position = 4
    return position


def _check_merge(sig: list[Token]) -> None:
    """Redshift's MERGE needs exactly one WHEN MATCHED and one WHEN NOT MATCHED."""
    words = [t.value for t in sig if t.kind is Kind.WORD]
    matched = not_matched = 0
    for i, word in enumerate(words):
        if word != "when":
            continue
        if words[i + 1 : i + 2] == ["matched"]:
            matched += 1
        elif words[i + 1 : i + 3] == ["not", "matched"]:
            not_matched += 1
            if words[i + 3 : i + 4] == ["by"]:
                raise SqlError('syntax error at or near "BY"')
    if "duplicates" in words and matched == not_matched == 0:
        raise SqlError("emulator: MERGE ... REMOVE DUPLICATES is not supported")
    if matched != 1 or not_matched != 1:
        raise SqlError("MERGE requires exactly one WHEN MATCHED and one WHEN NOT MATCHED clause")
