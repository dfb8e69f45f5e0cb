"""The SQL engine: one DuckDB connection and transaction per Data API transaction.

Isolation as Redshift does it (the lock modes and both levels are in locks.py):
each statement first takes the locks of the tables it reads and writes; then the
first statement other than LOCK begins DuckDB's transaction and takes the
snapshot (Redshift's "first SELECT, DML or CREATE/ALTER/DROP TABLE"), so a
statement blocked by a LOCK reads what the holder committed. DuckDB takes its
snapshot at the first query that reads the main database, not at BEGIN, so
_begin makes it take it at once, together with the lock manager's commit count.
DuckDB's own MVCC does the rest: appends never conflict, and the later of two
writers of one row fails (reported with the 1023 text).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Protocol

import duckdb

from tests.emulators.redshift.control import Control
from tests.emulators.redshift.copy_load import LoadError, copy_from_s3, load_failed
from tests.emulators.redshift.copy_sql import CopyCommand
from tests.emulators.redshift.database import Database
from tests.emulators.redshift.duck_errors import redshift_error
from tests.emulators.redshift.errors import SqlError, StatementAborted
from tests.emulators.redshift.locks import LockManager, Mode, serializable_violation
from tests.emulators.redshift.names import TableName
from tests.emulators.redshift.results import ResultSet, result_set
from tests.emulators.redshift.s3 import S3Reader
from tests.emulators.redshift.settings import ISOLATION_LEVELS, TEST_DATABASE
from tests.emulators.redshift.translate import Plan

# Reads a main-database table: DuckDB's snapshot is taken by the first such query.
_SNAPSHOT_SQL = "SELECT 1 FROM rs_catalog.sys_load_error_detail LIMIT 0"
_RELATION_KIND_SQL = (
    "SELECT 'table' FROM duckdb_tables() WHERE database_name = current_database() "
    "AND schema_name = ? AND table_name = ? UNION ALL "
    "SELECT 'view' FROM duckdb_views() WHERE database_name = current_database() "
    "AND schema_name = ? AND view_name = ?"
)


@dataclass(frozen=True, slots=True)
class Outcome:
    result: ResultSet | None  # rows, when the statement has a result set
    result_rows: int  # rows returned, or rows affected by DML


class SessionConnection(Protocol):
    """A Data API session (sessions.py): its connection, and so its temp tables,
    outlive each transaction run on it."""

    @property
    def connection(self) -> duckdb.DuckDBPyConnection: ...

    def temp_tables(self) -> set[str]: ...


class Transaction:
    """The statements of one ExecuteStatement / BatchExecuteStatement call."""

    def __init__(
        self,
        db: Database,
        locks: LockManager,
        txn_id: int,
        control: Control,
        s3: S3Reader | None = None,
        *,
        database: str = TEST_DATABASE,
        session: SessionConnection | None = None,
    ) -> None:
        self._db = db
        self._session = session  # None: a connection of its own, closed at the end
        self._s3 = s3
        self._locks = locks
        self._id = txn_id
        self._control = control
        self._database = database  # the statement's target, as STV_DB_ISOLATION_LEVEL shows
        self._con: duckdb.DuckDBPyConnection | None = None
        self._snapshot = 0
        self._temp_tables: set[str] = session.temp_tables() if session is not None else set()
        self._written: set[str] = set()
        self._writing = ""  # the table the current statement writes, for conflict errors
        self._committed = False

    def execute(self, plan: Plan, query_id: int = 0) -> Outcome:
        if plan.locks:
            self._lock(plan.locks)
            return Outcome(None, 0)
        writes = self._permanent_tables(plan.writes, plan.creates_temp)
        reads = self._permanent_tables(plan.reads, plan.creates_temp) - writes
        self._acquire(sorted(reads), Mode.SHARE)
        self._acquire(sorted(writes), Mode.EXCLUSIVE if plan.exclusive else Mode.WRITE)
        con = self._begin()
        self._locks.check_serializable(self._id, self._snapshot, writes)
        self._written.update(writes)
        self._writing = min(writes, default="")
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

    def _lock(self, names: tuple[TableName, ...]) -> None:
        """LOCK: ACCESS EXCLUSIVE on each table in the order given (so two LOCKs of
        the same tables in opposite orders can deadlock, as on Redshift). It does
        not begin the snapshot."""
        for name in names:
            if name.schema is None and name.table in self._temp_tables:
                continue  # the session's own temp table: no other session can see it
            kind = self._relation_kind(name)
            if kind is None:
                shown = name.table if name.schema is None else name.qualified()
                raise SqlError(f'relation "{shown}" does not exist')
            if kind != "table":
                raise SqlError(f'"{name.table}" is not a table')
            self._acquire([name.qualified()], Mode.EXCLUSIVE)

    def _relation_kind(self, name: TableName) -> str | None:
        """'table', 'view' or None. Before the snapshot, a connection of its own
        looks (what is committed now); after, ours (our own CREATE TABLE too)."""
        params: list[object] = [name.schema or "public", name.table] * 2
        if self._con is None:
            rows = self._db.query(_RELATION_KIND_SQL, params)
        else:
            rows = self._run(self._con, _RELATION_KIND_SQL, params)[0]
        return str(rows[0][0]) if rows else None

    def _acquire(self, tables: list[str], mode: Mode) -> None:
        self._locks.acquire(self._id, tables, mode, self._control.check)

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
            if con is not None and self._session is None:
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

    def _permanent_tables(
        self, names: tuple[TableName, ...], creating_temp: TableName | None
    ) -> set[str]:
        """Qualified names of `names` but this session's temp tables: an unqualified
        name is a temp table first (Redshift's search path starts with pg_temp)."""
        temp = self._temp_tables | ({creating_temp.table} if creating_temp else set())
        return {
            name.qualified()
            for name in names
            if not (name.schema is None and (name.table in temp or name.table.startswith("#")))
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
            session = self._session
            self._con = con = self._db.connect() if session is None else session.connection
            con.execute("SET VARIABLE rs_db_name = ?", [self._database])
            level = ISOLATION_LEVELS[self._locks.isolation]
            con.execute("SET VARIABLE rs_isolation_level = ?", [level])

            def start() -> None:
                con.execute("BEGIN TRANSACTION")
                con.execute(_SNAPSHOT_SQL).fetchall()

            self._snapshot = self._locks.take_snapshot(start)
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
                # A write-write conflict: DuckDB fails the later writer of a row (or of
                # a catalog entry) at once, as Redshift fails it.
                table = self._writing or "(write-write conflict)"
                raise serializable_violation(table, self._id, 0) from exc
            except duckdb.Error as exc:
                if self._control.cancelled:
                    raise StatementAborted from exc
                raise redshift_error(exc) from exc
