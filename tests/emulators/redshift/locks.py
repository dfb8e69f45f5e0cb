"""Table locks and the two isolation levels, as Redshift does them.

A statement takes its tables' locks before it runs and keeps them until its
transaction ends (commit or rollback). Waits wake up to notice cancellation, and
a wait that would close a cycle fails with "deadlock detected". Three modes:

- SHARE, for a table a statement reads: waits only for EXCLUSIVE.
- WRITE (INSERT, UPDATE, DELETE, MERGE, COPY, CREATE TABLE): waits for EXCLUSIVE
  and, under SERIALIZABLE only, for the table's other writers.
- EXCLUSIVE (`LOCK t`; ALTER, DROP and TRUNCATE TABLE): Redshift's ACCESS
  EXCLUSIVE, which waits for and blocks every other lock on the table, readers'
  included.

SERIALIZABLE: writers of a table run one after another, and a transaction whose
snapshot predates a commit to a table it then writes fails with error 1023
(serializable isolation violation) - the classic case is two loads that each
stage rows first and then write the same target. DuckDB alone would let both
insert (appends never conflict in its MVCC), so the emulator counts commits.

SNAPSHOT: writers of a table neither wait for each other nor get the 1023
check, so two transactions that each insert a key after seeing it absent both
commit (a duplicate). Writes of the same rows still conflict: DuckDB fails the
later UPDATE or DELETE, which the engine reports with the 1023 text.

The engine takes a transaction's snapshot at its first statement other than LOCK,
once that statement's locks are granted: a transaction that starts with `LOCK t`
sees everything the previous holder of `t` committed.
"""

from __future__ import annotations

import enum
import threading
import zlib
from collections.abc import Callable, Iterable

from tests.emulators.redshift.errors import SqlError

_WAIT_SLICE_S = 0.05  # lock waits wake this often to notice cancellation


class Mode(enum.IntEnum):
    """Lock modes, weakest first: each conflicts with all that the weaker ones do."""

    SHARE = 1
    WRITE = 2
    EXCLUSIVE = 3


def serializable_violation(table: str, txn_id: int, other_id: int) -> SqlError:
    table_oid = 100_000 + zlib.crc32(table.encode()) % 900_000
    return SqlError(
        f"1023 DETAIL: Serializable isolation violation on table - {table_oid} ({table}), "
        f"transactions forming the cycle are: {other_id}, {txn_id} (pid:{30_000 + txn_id})"
    )


class LockManager:
    def __init__(self, isolation: str = "snapshot") -> None:
        self.isolation = isolation
        self._serializable = isolation == "serializable"
        self._cond = threading.Condition()
        self._holders: dict[str, dict[int, Mode]] = {}  # table -> txn id -> strongest mode
        self._held: dict[int, set[str]] = {}  # txn id -> tables it holds
        self._waiting: dict[int, tuple[str, Mode]] = {}  # txn id -> what it waits for
        self._commit_seq = 0
        self._last_write: dict[str, tuple[int, int]] = {}  # table -> (commit seq, txn id)

    def take_snapshot(self, start: Callable[[], None]) -> int:
        """Run `start` (which makes DuckDB take its snapshot) between two commits, and
        return the number of commits that snapshot sees: both are taken together."""
        with self._cond:
            start()
            return self._commit_seq

    def acquire(
        self, txn_id: int, tables: Iterable[str], mode: Mode, check: Callable[[], None]
    ) -> None:
        """Block until `txn_id` holds every table in `mode`, in the order given;
        `check` raises if the statement is cancelled meanwhile."""
        for table in tables:
            self._acquire_one(txn_id, table, mode, check)

    def _acquire_one(self, txn_id: int, table: str, mode: Mode, check: Callable[[], None]) -> None:
        with self._cond:
            while blockers := self._blockers(txn_id, table, mode):
                if self._closes_cycle(txn_id, blockers):
                    raise SqlError(f"deadlock detected on table {table}")
                self._waiting[txn_id] = (table, mode)
                try:
                    self._cond.wait(_WAIT_SLICE_S)
                finally:
                    del self._waiting[txn_id]
                check()
            holders = self._holders.setdefault(table, {})
            holders[txn_id] = max(mode, holders.get(txn_id, mode))
            self._held.setdefault(txn_id, set()).add(table)

    def _conflicts(self, held: Mode, wanted: Mode) -> bool:
        if Mode.EXCLUSIVE in (held, wanted):
            return True
        return self._serializable and held == wanted == Mode.WRITE

    def _blockers(self, txn_id: int, table: str, mode: Mode) -> list[int]:
        holders = self._holders.get(table, {})
        return [
            other
            for other, held in holders.items()
            if other != txn_id and self._conflicts(held, mode)
        ]

    def _closes_cycle(self, txn_id: int, blockers: list[int]) -> bool:
        """Whether a transaction `txn_id` would wait for waits, through others, for it."""
        pending, seen = list(blockers), set()
        while pending:
            other = pending.pop()
            if other == txn_id:
                return True
            if other in seen:
                continue
            seen.add(other)
            waited = self._waiting.get(other)
            if waited is not None:
                pending.extend(self._blockers(other, *waited))
        return False

    def check_serializable(self, txn_id: int, snapshot: int, tables: Iterable[str]) -> None:
        """Under SERIALIZABLE, fail a write to a table committed to since `snapshot`."""
        if not self._serializable:
            return
        with self._cond:
            for table in sorted(tables):
                seq, writer = self._last_write.get(table, (0, 0))
                if seq > snapshot:
                    raise serializable_violation(table, txn_id, writer)

    def commit(self, txn_id: int, written: Iterable[str], do_commit: Callable[[], None]) -> None:
        # Holding the condition while committing makes "commit, then publish the
        # commit sequence" atomic for take_snapshot(); it also serializes commits,
        # as Redshift does.
        with self._cond:
            do_commit()
            self._commit_seq += 1
            for table in written:
                self._last_write[table] = (self._commit_seq, txn_id)
            self._release(txn_id)

    def release(self, txn_id: int) -> None:
        with self._cond:
            self._release(txn_id)

    def _release(self, txn_id: int) -> None:
        for table in self._held.pop(txn_id, set()):
            holders = self._holders[table]
            del holders[txn_id]
            if not holders:
                del self._holders[table]
        self._cond.notify_all()
