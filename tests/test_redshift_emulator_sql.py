"""The emulator's Redshift -> DuckDB translation, without HTTP or threads."""

from __future__ import annotations

import threading

import pytest

from tests.emulators.redshift.errors import SqlError
from tests.emulators.redshift.lexer import Kind, tokenize
from tests.emulators.redshift.locks import LockManager, Mode
from tests.emulators.redshift.names import TableName
from tests.emulators.redshift.translate import referenced_parameters, translate


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        (r"'plain'", "plain"),
        (r"'it''s'", "it's"),
        (r"'it\'s'", "it's"),
        (r"'back\\slash'", "back\\slash"),
        (r"'a\nb\tc\rd\be\ff'", "a\nb\tc\rd\be\ff"),
        (r"'\101\60'", "A0"),  # octal escapes
        (r"'\q\x41'", "qx41"),  # any other escaped character stands for itself
        ("'emoji 😀 and é'", "emoji 😀 and é"),
        ("'line\nbreak'", "line\nbreak"),
    ],
)
def test_string_literals_decode_with_redshift_escapes(literal: str, value: str) -> None:
    (token,) = tokenize(literal)
    assert token.kind is Kind.STRING
    assert token.value == value


@pytest.mark.parametrize("sql", [r"SELECT 'open", r"SELECT 'ends with backslash\'", "SELECT /* x"])
def test_unterminated_tokens_fail(sql: str) -> None:
    with pytest.raises(SqlError):
        tokenize(sql)


@pytest.mark.parametrize("literal", [r"'\0'", r"'\000'", r"'\200'"])
def test_escapes_that_are_not_utf8_text_fail(literal: str) -> None:
    with pytest.raises(SqlError, match="invalid byte sequence"):
        tokenize(literal)


def test_literals_are_rendered_for_duckdb() -> None:
    plan = translate(r"SELECT 'a\\b', 'it\'s', E'x'", None)
    assert plan.sql == "SELECT 'a\\b', 'it''s', E 'x'"


def test_placeholders_are_found_outside_literals_comments_and_identifiers() -> None:
    sql = """SELECT :a, ':b', "c:d", x::int -- :e
             /* :f */ FROM t WHERE y = :g"""
    assert referenced_parameters(sql) == {"a", "g"}


def test_parameters_bind_as_literals() -> None:
    plan = translate("INSERT INTO t VALUES (:id, :n)", {"id": "o'neil\\", "n": "42"})
    assert plan.sql == "INSERT INTO t VALUES ('o''neil\\', '42')"


def test_placeholders_without_parameters_are_a_syntax_error() -> None:
    with pytest.raises(SqlError, match="syntax error"):
        translate("SELECT :a", None)


def test_create_table_drops_what_redshift_does_not_enforce() -> None:
    plan = translate(
        "CREATE TABLE IF NOT EXISTS public.events ("
        " id VARCHAR(255) NOT NULL PRIMARY KEY ENCODE zstd,"
        " name VARCHAR DISTKEY, body SUPER, n NUMERIC, ts TIMESTAMP DEFAULT GETDATE(),"
        " code CHAR, UNIQUE (name), CONSTRAINT fk FOREIGN KEY (id) REFERENCES other (id)"
        ") BACKUP NO DISTSTYLE KEY DISTKEY (id) COMPOUND SORTKEY (ts, id)",
        None,
    )
    assert plan.sql == (
        "CREATE TABLE IF NOT EXISTS public.events ("
        "id VARCHAR NOT NULL CHECK (CASE WHEN strlen(id) > 255 THEN "
        "error('value too long for type character varying(255)') ELSE true END), "
        "name VARCHAR CHECK (CASE WHEN strlen(name) > 256 THEN "
        "error('value too long for type character varying(256)') ELSE true END), "
        "body JSON, n DECIMAL(18,0), ts TIMESTAMP DEFAULT rs_getdate ( ), "
        "code VARCHAR CHECK (CASE WHEN strlen(code) > 1 THEN "
        "error('value too long for type character(1)') ELSE true END))"
    )
    assert plan.writes == (TableName("public", "events"),)


@pytest.mark.parametrize(
    ("column", "error"),
    [
        ("v VARCHAR(65536)", "cannot exceed 65535"),
        ("v VARCHAR(0)", "at least 1"),
        ("id INT IDENTITY(1, 1)", "IDENTITY"),
        ("v INT, CHECK (v > 0)", "CHECK"),
    ],
)
def test_create_table_rejects(column: str, error: str) -> None:
    with pytest.raises(SqlError, match=error):
        translate(f"CREATE TABLE t ({column})", None)


def test_varchar_max_is_65535_bytes() -> None:
    assert "strlen(v) > 65535" in translate("CREATE TABLE t (v VARCHAR(MAX))", None).sql


def test_temp_tables_are_not_locked_and_like_copies_the_parent() -> None:
    plan = translate("CREATE TEMP TABLE stage (LIKE public.events)", None)
    assert plan.sql == "CREATE TEMP TABLE stage"
    assert plan.like == TableName("public", "events")
    assert plan.writes == ()
    assert plan.creates_temp == TableName(None, "stage")
    hash_temp = translate("CREATE TABLE #stage (id INT)", None)
    assert hash_temp.sql.startswith('CREATE TEMP TABLE "#stage"')


@pytest.mark.parametrize(
    ("sql", "writes"),
    [
        ("INSERT INTO Events (id) VALUES ('a')", ("public", "events")),
        ('DELETE FROM "S"."T" USING s WHERE 1 = 1', ("s", "t")),
        ("UPDATE t SET a = 1", ("public", "t")),
        (
            "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE "
            "WHEN NOT MATCHED THEN INSERT VALUES (s.id)",
            ("public", "t"),
        ),
        ("TRUNCATE t", ("public", "t")),
        ("DROP TABLE IF EXISTS x.y", ("x", "y")),
    ],
)
def test_written_tables(sql: str, writes: tuple[str, str]) -> None:
    (name,) = translate(sql, None).writes
    assert name.qualified() == ".".join(writes)


def test_selects_have_a_result_set_and_write_nothing() -> None:
    plan = translate("WITH x AS (SELECT 1) SELECT * FROM x", None)
    assert plan.has_result_set
    assert plan.writes == ()
    assert not translate("INSERT INTO t SELECT 1", None).has_result_set


@pytest.mark.parametrize(
    "clauses",
    [
        "WHEN MATCHED THEN DELETE",
        "WHEN NOT MATCHED THEN INSERT VALUES (s.id)",
        "WHEN MATCHED THEN DELETE WHEN MATCHED THEN DELETE WHEN NOT MATCHED THEN INSERT VALUES (1)",
    ],
)
def test_merge_needs_one_matched_and_one_not_matched_clause(clauses: str) -> None:
    with pytest.raises(SqlError, match="MERGE requires"):
        translate(f"MERGE INTO t USING s ON t.id = s.id {clauses}", None)


def test_redshift_functions_and_catalog_views() -> None:
    plan = translate(
        "SELECT JSON_PARSE(a), GETDATE(), SYSDATE, NVL(b, 1), c::SUPER "
        "FROM information_schema.columns, pg_catalog.svv_columns",
        None,
    )
    assert plan.sql == (
        "SELECT rs_json_parse(a), rs_getdate(), rs_sysdate(), coalesce(b, 1), c::JSON "
        "FROM rs_catalog.columns, rs_catalog.columns"
    )


@pytest.mark.parametrize(
    ("sql", "error"),
    [
        ("SELECT 1; SELECT 2", "multiple commands"),
        ("  ; -- nothing", "end of input"),
        ("BEGIN", "transaction control"),
    ],
)
def test_one_statement_per_call(sql: str, error: str) -> None:
    with pytest.raises(SqlError, match=error):
        translate(sql, None)


def test_trailing_semicolon_and_comments_are_fine() -> None:
    assert translate("SELECT 1; -- done\n", None).sql.strip() == "SELECT 1"


def test_lock_cycles_are_reported_as_deadlocks() -> None:
    locks = LockManager("serializable")
    locks.acquire(1, ["a"], Mode.WRITE, lambda: None)
    locks.acquire(2, ["b"], Mode.WRITE, lambda: None)
    deadlocked: list[int] = []

    def wants(txn_id: int, table: str) -> None:
        try:
            locks.acquire(txn_id, [table], Mode.WRITE, lambda: None)
        except SqlError as exc:
            assert "deadlock detected" in str(exc)
            deadlocked.append(txn_id)
        locks.release(txn_id)  # the loser aborts; the winner then commits

    threads = [threading.Thread(target=wants, args=args) for args in ((1, "b"), (2, "a"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert len(deadlocked) == 1
    assert not any(thread.is_alive() for thread in threads)


class _Waited(Exception):
    """Raised by the cancellation check: the lock was not granted at once."""


def _waited() -> None:
    raise _Waited


@pytest.mark.parametrize(
    ("isolation", "held", "wanted", "waits"),
    [
        ("snapshot", Mode.SHARE, Mode.SHARE, False),
        ("snapshot", Mode.SHARE, Mode.WRITE, False),
        ("snapshot", Mode.WRITE, Mode.WRITE, False),
        ("serializable", Mode.WRITE, Mode.WRITE, True),
        ("serializable", Mode.WRITE, Mode.SHARE, False),
        ("snapshot", Mode.EXCLUSIVE, Mode.SHARE, True),
        ("snapshot", Mode.SHARE, Mode.EXCLUSIVE, True),
        ("serializable", Mode.WRITE, Mode.EXCLUSIVE, True),
    ],
)
def test_lock_modes(isolation: str, held: Mode, wanted: Mode, waits: bool) -> None:
    locks = LockManager(isolation)
    locks.acquire(1, ["public.t"], held, _waited)
    locks.acquire(2, ["public.other"], Mode.EXCLUSIVE, _waited)
    locks.acquire(1, ["public.t"], Mode.EXCLUSIVE, _waited)  # its own locks never wait
    locks.release(1)
    locks.acquire(1, ["public.t"], held, _waited)
    if waits:
        with pytest.raises(_Waited):
            locks.acquire(2, ["public.t"], wanted, _waited)
    else:
        locks.acquire(2, ["public.t"], wanted, _waited)


@pytest.mark.parametrize(
    ("sql", "locked"),
    [
        ("LOCK t", ["public.t"]),
        ('lock table "S"."T", u', ["s.t", "public.u"]),
        ("LOCK dev.public.T", ["public.t"]),
    ],
)
def test_lock_names_its_tables_and_runs_nothing(sql: str, locked: list[str]) -> None:
    plan = translate(sql, None)
    assert [name.qualified() for name in plan.locks] == locked
    assert (plan.sql, plan.writes, plan.reads) == ("", (), ())


def test_tables_a_statement_may_read() -> None:
    reads = translate(
        "INSERT INTO t SELECT x.id FROM s AS x JOIN a.b ON x.id = b.id WHERE c <> 'lk'", None
    ).reads
    assert {TableName(None, "t"), TableName(None, "s"), TableName("a", "b")} <= set(reads)
    assert TableName(None, "lk") not in reads  # a string, not a name
    assert TableName(None, "b") not in reads  # b of a.b is not public.b


def test_alter_drop_and_truncate_lock_exclusively() -> None:
    for sql in ("TRUNCATE t", "DROP TABLE t", "ALTER TABLE t ADD COLUMN c INT"):
        assert translate(sql, None).exclusive
    for sql in ("INSERT INTO t VALUES (1)", "CREATE TABLE t (c INT)", "DELETE FROM t"):
        assert not translate(sql, None).exclusive
