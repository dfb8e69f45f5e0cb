"""The DuckDB database behind the emulator: one file or in-memory database, a
connection per transaction (engine.py), and the direct access tests use."""

from __future__ import annotations

import threading
from typing import Any

import duckdb

from tests.emulators.redshift.catalog import SETUP_SQL
from tests.emulators.redshift.copy_load import LoadErrorDetail

_KEPT_SCHEMAS = ("main", "rs_catalog", "information_schema", "pg_catalog")


class Database:
    def __init__(self, path: str | None = None) -> None:
        self._root = duckdb.connect(path or ":memory:")
        self._lock = threading.Lock()  # cursor() on the root connection is not thread safe
        for statement in SETUP_SQL:
            self._root.execute(statement)

    def connect(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            con = self._root.cursor()
        con.execute("SET schema = 'public'")  # Redshift's default schema
        return con

    def query(self, sql: str, params: list[object] | None = None) -> list[tuple[Any, ...]]:
        """Run DuckDB SQL directly (test inspection, catalog look-ups outside any
        transaction's snapshot), in its own connection."""
        con = self.connect()
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()

    def record_load_error(
        self, detail: LoadErrorDetail, table: str, query_id: int, txn_id: int
    ) -> None:
        """A row of sys_load_error_detail, committed on its own: it outlives the
        failed COPY's transaction."""
        con = self.connect()
        try:
            con.execute(
                "INSERT INTO rs_catalog.sys_load_error_detail VALUES "
                "(?, ?, timezone('UTC', now()), ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    query_id,
                    txn_id,
                    table,
                    detail.file_name,
                    detail.line_number,
                    detail.column_name,
                    detail.column_type,
                    detail.column_length,
                    detail.error_code,
                    detail.error_message,
                    detail.raw_field_value,
                ],
            )
        finally:
            con.close()

    def drop_everything(self) -> None:
        """Drop every user schema and table; keep the macros and catalog views."""
        with self._lock:
            self._root.execute("DELETE FROM rs_catalog.sys_load_error_detail")
            schemas = self._root.execute(
                "SELECT schema_name FROM duckdb_schemas() "
                "WHERE database_name = current_database() AND NOT internal"
            ).fetchall()
            for (schema,) in schemas:
                if schema not in _KEPT_SCHEMAS:
                    self._root.execute(f'DROP SCHEMA "{schema}" CASCADE')
            self._root.execute("CREATE SCHEMA IF NOT EXISTS public")

    def close(self) -> None:
        with self._lock:
            self._root.close()
