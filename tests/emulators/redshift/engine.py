"""The SQL engine: one DuckDB database, one connection per Data API transaction."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Any

import duckdb

from tests.emulators.redshift.catalog import SETUP_SQL
from tests.emulators.redshift.control import Control
from tests.emulators.redshift.copy_load import LoadError, LoadErrorDetail, copy_from_s3, load_failed
from tests.emulators.redshift.copy_sql import CopyCommand
from tests.emulators.redshift.duck_errors import redshift_error
from tests.emulators.redshift.errors import SqlError, StatementAborted
from tests.emulators.redshift.locks import LockManager, serializable_violation
from tests.emulators.redshift.names import TableName
from tests.emulators.redshift.results import ResultSet, result_set
from tests.emulators.redshift.s3 import S3Reader
from tests.emulators.redshift.translate import Plan

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

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Run DuckDB SQL directly (test inspection), in its own connection."""
        con = self.connect()
        try:
            return con.execute(sql).fetchall()
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


@dataclass(frozen=True, slots=True)
class Outcome:
    result: ResultSet | None  # rows, when the statement has a result set
    result_rows: int  # rows returned, or rows affected by DML


class Transaction:
    """The statements of one ExecuteStatement / BatchExecuteStatement call."""

    def __init__(
        self,
        db: Database,
        locks: LockManager,
        txn_id: int,
        control: Control,
        s3: S3Reader | None = None,
    ) -> None:
        self._db = db
        self._s3 = s3
        self._locks = locks
        self._id = txn_id
        self._control = control
        self._con: duckdb.DuckDBPyConnection | None = None
        self._snapshot = 0
        self._temp_tables: set[str] = set()
        self._written: set[str] = set()
        self._committed = False

    def execute(self, plan: Plan, query_id: int = 0) -> Outcome:
        tables = self._permanent_tables(plan)
        self._locks.acquire(self._id, tables, self._control.check)
        con = self._begin()
        self._locks.check_serializable(self._id, self._snapshot, tables)
        self._written.update(tables)
        if plan.copy is not None:
            return Outcome(None, self._copy(con, plan.copy, query_id))
        sql = plan.sql if plan.like is None else plan.sql + self._columns_of(con, plan.like)
        rows, description = self._run(con, sql)
        if plan.creates_temp is not None:
            self._temp_tables.add(plan.creates_temp.table)
        if plan.has_result_set:
            return Outcome(result_set(description, rows), len(rows))
        # DuckDB reports affected rows of DML as a one-row "Count" result.
        affected = rows[0][0] if rows and isinstance(rows[0][0], int) else 0
        return Outcome(None, affected)

    def commit(self) -> None:
        self._control.check()
        con = self._con
        if con is None:
            return

        def commit() -> None:
            self._run(con, "COMMIT")

        self._locks.commit(self._id, self._written, commit)
        self._committed = True

    def close(self) -> None:
        """Roll back unless committed; release the locks and the connection."""
        con, self._con = self._con, None
        try:
            if con is not None and not self._committed:
                # A failed statement may have rolled DuckDB's transaction back already.
                with contextlib.suppress(duckdb.Error):
                    con.execute("ROLLBACK")
            if con is not None:
                con.close()
        finally:
            self._locks.release(self._id)

    def _copy(self, con: duckdb.DuckDBPyConnection, command: CopyCommand, query_id: int) -> int:
        table = command.table
        temp = table.schema is None and table.table in self._temp_tables

        def run(sql: str, params: list[object] | None) -> list[tuple[Any, ...]]:
            return self._run(con, sql, params)[0]

        try:
            return copy_from_s3(command, run, temp=temp, s3=self._s3, check=self._control.check)
        except LoadError as exc:
            self._db.record_load_error(exc.detail, table.table, query_id, self._id)
            raise load_failed(table) from exc

    def _permanent_tables(self, plan: Plan) -> set[str]:
        """Tables this statement writes, except this session's temp tables."""
        return {
            name.qualified()
            for name in plan.writes
            if not (name.schema is None and name.table in self._temp_tables)
        }

    def _columns_of(self, con: duckdb.DuckDBPyConnection, parent: TableName) -> str:
        """The column list of `parent` as DuckDB would recreate it, CHECKs included.
        An unqualified name is this session's temp table first, then public's."""
        temp = parent.schema is None and parent.table in self._temp_tables
        database, schema = ("temp", "main") if temp else (None, parent.schema or "public")
        rows, _ = self._run(
            con,
            "SELECT sql FROM duckdb_tables() WHERE table_name = ? AND schema_name = ? "
            "AND database_name = coalesce(?, current_database())",
            [parent.table, schema, database],
        )
        if not rows:
            raise SqlError(f'relation "{parent.qualified()}" does not exist')
        ddl = str(rows[0][0])
        return ddl[ddl.index("(") :].rstrip(";")

    def _begin(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            # DuckDB takes its snapshot at the first query after BEGIN, so this
            # snapshot number is never newer than DuckDB's (the check errs strict).
            self._snapshot = self._locks.snapshot()
            self._con = self._db.connect()
            self._con.execute("BEGIN TRANSACTION")
        return self._con

    def _run(
        self, con: duckdb.DuckDBPyConnection, sql: str, params: list[object] | None = None
    ) -> tuple[list[tuple[Any, ...]], list[Any]]:
        """Rows and description; fetching is inside the guard because DuckDB may
        do the actual work (and fail, or be interrupted) while fetching."""
        with self._control.interrupts(con.interrupt):
            try:
                cursor = con.execute(sql, params)
                return cursor.fetchall(), list(cursor.description or [])
            except duckdb.TransactionException as exc:
                raise serializable_violation("(write-write conflict)", self._id, 0) from exc
            except duckdb.Error as exc:
                if self._control.cancelled:
                    raise StatementAborted from exc
                raise redshift_error(exc) from exc
