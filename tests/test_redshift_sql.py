"""Redshift SQL generation: literals, identifiers, the load's shape and its splitting; no I/O.

Literals are decoded with the emulator's lexer, which applies Redshift's rules
(backslash escapes, doubled quotes), and statements are checked to translate.
"""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from afpipe.errors import ConfigError
from afpipe.event import Row
from afpipe.warehouse.redshift import load_sql, sql
from afpipe.warehouse.redshift.sql import SqlLimits, TableName
from tests.emulators.redshift.lexer import Kind, significant, tokenize
from tests.emulators.redshift.translate import translate

TABLE = sql.table_name("appsflyer_events")


def row(n: int, *, data: str = "{}", event_time: str | None = "2024-03-02 12:00:01.123000") -> Row:
    return Row(f"id-{n}", event_time, "af_purchase", "app", "user", "device", data)


def decoded(literal: str) -> str:
    tokens = significant(tokenize(literal))
    assert len(tokens) == 1 and tokens[0].kind is Kind.STRING
    return tokens[0].value


# --- literals -------------------------------------------------------------------------------


def test_literal_doubles_quotes_and_backslashes() -> None:
    assert sql.literal("it's a \\ path") == "'it''s a \\\\ path'"
    assert sql.literal(None) == "NULL"
    assert sql.literal("") == "''"


def test_literal_refuses_nul() -> None:
    with pytest.raises(ValueError, match="0x00"):
        sql.literal("a\x00b")


@given(st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00")))
def test_literal_decodes_to_the_same_string_under_redshift_rules(text: str) -> None:
    assert decoded(sql.literal(text)) == text


@pytest.mark.parametrize(
    "text", ["\\", "\\'", "'; DROP TABLE x; --", "\\\\n", "\n\r\t", "\\000", "\\x41", "😀 \u2028"]
)
def test_literal_tricky_strings(text: str) -> None:
    assert decoded(sql.literal(text)) == text


# --- identifiers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("appsflyer_events", TableName("public", "appsflyer_events")),
        ("Analytics.AF_Events$2", TableName("analytics", "af_events$2")),
        ("_x", TableName("public", "_x")),
    ],
)
def test_table_name_accepts_plain_names(name: str, expected: TableName) -> None:
    assert sql.table_name(name) == expected
    assert expected.sql == f'"{expected.schema}"."{expected.table}"'


@pytest.mark.parametrize(
    "name",
    [
        "",
        "events; DROP TABLE users",
        'events"; DROP TABLE users; --',
        "events' OR '1'='1",
        "a.b.c",
        ".events",
        "events.",
        "1events",
        "ev ents",
        "events--",
        "evénts",
        "events\x00",
        "x" * 128,
    ],
)
def test_table_name_rejects_anything_else(name: str) -> None:
    with pytest.raises(ConfigError):
        sql.table_name(name)


# --- statements ------------------------------------------------------------------------------


def test_create_table_matches_the_design_and_translates() -> None:
    text = sql.create_table_sql(TABLE)
    assert text.startswith('CREATE TABLE IF NOT EXISTS "public"."appsflyer_events" (')
    for column in ("id VARCHAR(255) NOT NULL", "event_time TIMESTAMP", "event_data SUPER"):
        assert column in text
    assert "created_at TIMESTAMP DEFAULT GETDATE()" in text
    translate(text, None)


def test_values_tuple_uses_json_parse_and_null() -> None:
    text = sql.values_tuple(Row("i", None, "n'", None, None, "d\\", '{"a":"\\n"}'))
    assert text == "('i', NULL, 'n''', NULL, NULL, 'd\\\\', JSON_PARSE('{\"a\":\"\\\\n\"}'))"


def test_unique_rows_keeps_the_first_of_each_id() -> None:
    first, again, other = row(1, data='{"a":1}'), row(1, data='{"a":2}'), row(2)
    assert load_sql.unique_rows([first, again, other]) == [first, other]


def test_load_is_a_stage_call_then_a_merge_of_two_statements_lock_first() -> None:
    rows = [row(1), row(2)]
    [call] = load_sql.stage_calls(rows, [sql.create_stage_sql()])
    create, insert = call.sqls
    assert call.rows == rows
    assert create.startswith("CREATE TEMP TABLE afpipe_stage")
    assert insert.startswith("INSERT INTO afpipe_stage (id, event_time,") and "),(" in insert
    assert sql.clear_stage_sql() == "DELETE FROM afpipe_stage"
    lock, final = load_sql.merge_sqls(TABLE, rows, window_s=0)
    assert lock == 'LOCK "public"."afpipe_load_lock"'
    assert final.startswith(
        'INSERT INTO "public"."appsflyer_events" (id, event_time, event_name, app_id, user_id,'
        " device_id, event_data) SELECT id, event_time, event_name, app_id, user_id, device_id,"
        ' event_data FROM afpipe_stage WHERE NOT EXISTS (SELECT 1 FROM "public"."appsflyer_events"'
        " AS known WHERE known.id = afpipe_stage.id AND (known.event_time BETWEEN"
    )
    for text in [*call.sqls, lock, final]:
        translate(text, None)


def test_dedup_window_spans_the_batch_times_plus_the_window() -> None:
    rows = [row(1, event_time="2024-03-02 12:00:00.000000"), row(2, event_time=None)]
    rows.append(row(3, event_time="2024-03-01 00:00:00.500000"))
    text = load_sql.insert_new_sql(TABLE, rows, window_s=3600)
    assert "BETWEEN CAST('2024-02-29 23:00:00.500000' AS TIMESTAMP)" in text
    assert "AND CAST('2024-03-02 13:00:00.000000' AS TIMESTAMP)" in text
    assert text.endswith("OR known.event_time IS NULL))")


def test_dedup_window_without_null_times_has_no_null_lookup() -> None:
    text = load_sql.insert_new_sql(TABLE, [row(1)], window_s=0)
    assert "IS NULL" not in text
    assert "BETWEEN CAST('2024-03-02 12:00:01.123000' AS TIMESTAMP) AND CAST('2024-03-02" in text


def test_dedup_window_with_only_null_times_looks_only_at_null_rows() -> None:
    text = load_sql.insert_new_sql(TABLE, [row(1, event_time=None)], window_s=60)
    assert "BETWEEN" not in text and text.endswith("(known.event_time IS NULL))")


def test_dedup_window_is_clamped_to_the_timestamp_range() -> None:
    rows = [row(1, event_time="0001-01-01 00:00:01.000000")]
    rows.append(row(2, event_time="9999-12-31 23:59:00.000000"))
    text = load_sql.insert_new_sql(TABLE, rows, window_s=86400)
    low = datetime.min.isoformat(sep=" ", timespec="microseconds")
    high = datetime.max.isoformat(sep=" ", timespec="microseconds")
    assert f"CAST('{low}' AS TIMESTAMP) AND CAST('{high}' AS TIMESTAMP)" in text


# --- what can never load -------------------------------------------------------------------


def test_nul_in_a_text_column_is_unstorable() -> None:
    bad = Row("i", None, "a\x00b", None, None, None, "{}")
    assert load_sql.unstorable_reason(bad, TABLE) == sql.NUL_REASON
    assert load_sql.unstorable_reason(row(1, data='{"k":"\\u0000"}'), TABLE) is None


def test_a_row_larger_than_a_statement_is_unstorable() -> None:
    reason = load_sql.unstorable_reason(row(1, data='"' + "x" * 99_500 + '"'), TABLE)
    assert reason is not None and "too large" in reason
    # escaping counts: 40,000 backslashes take 80,000 bytes of SQL
    assert load_sql.unstorable_reason(row(2, data='"' + "\\\\" * 20_000 + '"'), TABLE) is None
    escaped = '"' + "\\\\" * 30_000 + '"'
    assert load_sql.unstorable_reason(row(3, data=escaped), TABLE) is not None


def test_an_event_time_in_another_shape_is_unstorable() -> None:
    reason = load_sql.unstorable_reason(row(1, event_time="999-01-01 00:00:00.000000"), TABLE)
    assert reason is not None and "event_time" in reason


# --- splitting -------------------------------------------------------------------------------


def assert_within(calls: list[load_sql.StageCall], rows: list[Row], limits: SqlLimits) -> None:
    assert [r for call in calls for r in call.rows] == rows  # every row once, in order
    for call in calls:
        sizes = [len(text.encode()) for text in call.sqls]
        assert max(sizes) <= limits.max_sql_bytes
        assert sum(sizes) <= limits.max_batch_sql_bytes
        assert len(call.sqls) <= limits.max_statements
    merge = load_sql.merge_sqls(TABLE, rows, 0) if rows else []  # one call, whatever the rows
    assert sum(len(text.encode()) for text in merge) <= limits.max_batch_sql_bytes


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=60_000), min_size=1, max_size=60),
    quoting=st.sampled_from(["x", "'", "\\", "é", "😀"]),
)
def test_split_keeps_every_sql_within_the_data_api_limits(sizes: list[int], quoting: str) -> None:
    unit_bytes = 2 if quoting in "'\\" else len(quoting.encode())  # escaped size of one char
    rows = [row(n, data='"' + quoting * (size // unit_bytes) + '"') for n, size in enumerate(sizes)]
    rows = [r for r in rows if load_sql.unstorable_reason(r, TABLE) is None]
    calls = load_sql.stage_calls(rows, [sql.create_stage_sql()])
    assert_within(calls, rows, sql.DATA_API_LIMITS)


def test_split_packs_small_rows_into_few_calls() -> None:
    rows = [row(n, data='{"payload":"' + "v" * 900 + '"}') for n in range(1_000)]
    calls = load_sql.stage_calls(rows, [sql.create_stage_sql()])
    assert_within(calls, rows, sql.DATA_API_LIMITS)
    assert len(calls) <= 11  # about 1 KB of SQL a row: ~95 rows per 100 KB call


def test_split_caps_a_call_at_40_statements() -> None:
    limits = SqlLimits(max_sql_bytes=100_000, max_batch_sql_bytes=100_000_000)
    rows = [row(n, data='"' + "y" * 30_000 + '"') for n in range(300)]  # 3 rows per INSERT
    calls = load_sql.stage_calls(rows, [sql.clear_stage_sql()], limits)
    assert_within(calls, rows, limits)
    assert [len(call.sqls) for call in calls] == [40, 39, 22]  # DELETE and 39 INSERTs first
    assert calls[0].sqls[0] == sql.clear_stage_sql()
    assert not any(text.startswith("DELETE") for call in calls[1:] for text in call.sqls)


def test_split_refuses_a_row_that_can_never_fit() -> None:
    with pytest.raises(ValueError, match="too large"):
        load_sql.stage_calls([row(1, data='"' + "z" * 120_000 + '"')])
