"""What every emulator database starts with: the `public` schema, macros for the
Redshift functions DuckDB lacks, an `information_schema.columns` view that
speaks Redshift's type names, COPY's `sys_load_error_detail` and
`stv_db_isolation_level` (translate.py routes catalog queries to them)."""

from __future__ import annotations

SUPER_MAX_BYTES = 16 * 1024 * 1024

# GETDATE() has second precision, SYSDATE microseconds; both are UTC timestamps
# without time zone (Redshift's default session time zone is UTC).
SETUP_SQL = (
    "CREATE SCHEMA IF NOT EXISTS public",
    "CREATE SCHEMA IF NOT EXISTS rs_catalog",
    "CREATE MACRO main.rs_getdate() AS date_trunc('second', timezone('UTC', now()))",
    "CREATE MACRO main.rs_sysdate() AS timezone('UTC', now())",
    f"""CREATE MACRO main.rs_json_parse(text) AS CASE
        WHEN text IS NULL THEN NULL
        WHEN strlen(text) > {SUPER_MAX_BYTES} THEN error('SUPER value exceeds the 16 MB limit')
        WHEN json_valid(text) THEN json(text)
        ELSE error('JSON parsing error') END""",
    "CREATE MACRO main.rs_json_serialize(value) AS CAST(value AS VARCHAR)",
    # Why a COPY failed; written outside the failed transaction, as Redshift does.
    # table_name and raw_field_value are the emulator's (Redshift has table_id).
    """CREATE TABLE IF NOT EXISTS rs_catalog.sys_load_error_detail (
        query_id BIGINT, transaction_id BIGINT, start_time TIMESTAMP, table_name VARCHAR,
        file_name VARCHAR, line_number BIGINT, column_name VARCHAR, column_type VARCHAR,
        column_length INTEGER, error_code INTEGER, error_message VARCHAR,
        raw_field_value VARCHAR)""",
    # One row: the database the statement targets and the emulator's isolation
    # level, both set per connection by the engine (SET VARIABLE). Redshift's columns
    # are character(128) and character(20); these are not blank-padded.
    """CREATE VIEW rs_catalog.stv_db_isolation_level AS
    SELECT CAST(getvariable('rs_db_name') AS VARCHAR) AS db_name,
        CAST(getvariable('rs_isolation_level') AS VARCHAR) AS isolation_level""",
    r"""CREATE VIEW rs_catalog.columns AS
    WITH lengths AS (
        SELECT schema_name, table_name, constraint_column_names[1] AS column_name,
            regexp_extract(expression, 'type ([a-z ]+)\((\d+)\)', ['kind', 'len']) AS t
        FROM duckdb_constraints()
        WHERE constraint_type = 'CHECK' AND expression LIKE '%value too long for type%'
    )
    SELECT c.table_catalog, c.table_schema, c.table_name, c.column_name,
        c.ordinal_position, c.column_default, c.is_nullable,
        CASE
            WHEN l.t.kind IS NOT NULL THEN l.t.kind
            WHEN c.data_type = 'VARCHAR' THEN 'character varying'
            WHEN c.data_type = 'JSON' THEN 'super'
            WHEN c.data_type = 'TIMESTAMP' THEN 'timestamp without time zone'
            WHEN c.data_type = 'TIMESTAMP WITH TIME ZONE' THEN 'timestamp with time zone'
            WHEN c.data_type = 'TIME' THEN 'time without time zone'
            WHEN c.data_type = 'DOUBLE' THEN 'double precision'
            WHEN c.data_type = 'FLOAT' THEN 'real'
            WHEN c.data_type LIKE 'DECIMAL%' THEN 'numeric'
            ELSE lower(c.data_type)
        END AS data_type,
        CAST(l.t.len AS INTEGER) AS character_maximum_length,
        c.numeric_precision, c.numeric_scale
    FROM information_schema.columns AS c
    LEFT JOIN lengths AS l
        ON l.schema_name = c.table_schema AND l.table_name = c.table_name
        AND l.column_name = c.column_name
    WHERE c.table_schema <> 'rs_catalog'
    """,
)
