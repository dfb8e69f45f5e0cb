"""Table write locks and serializable-isolation checks, as Redshift does them.

Redshift serialises concurrent writers of a table: a writer takes the table's
lock at its first write and keeps it until commit; others wait. A transaction
whose snapshot predates a commit to a table it then writes fails with error 1023
(serializable isolation violation) - the classic case is two loads that each
stage rows first and then write the same target. DuckDB alone would let two
such loads both insert (appends never conflict in its MVCC), so the emulator
tracks this itself.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Iterable

from tests.emulators.redshift.errors import SqlError

_WAIT_SLICE_S = 0.05  # lock waits wake this often to notice cancellation


def serializable_violation(table: str, txn_id: int, other_id: int) -> SqlError:
    table_oid = 100_000 + zlib.crc32(table.encode()) % 900_000
    return SqlError(
        f"1023 DETAIL: Serializable isolation violation on table - {table_oid} ({table}), "
        f"transactions forming the cycle are: {other_id}, {txn_id} (pid:{30_000 + txn_id})"
    )


class LockManager:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._owners: dict[str, int] = {}
        self._held: dict[int, set[str]] = {}
        self._waiting: dict[int, str] = {}
        self._commit_seq = 0
        self._last_write: dict[str, tuple[int, int]] = {}  # table -> (commit seq, txn id)

    def snapshot(self) -> int:
        with self._cond:
            return self._commit_seq

    def acquire(self, txn_id: int, tables: Iterable[str], check: Callable[[], None]) -> None:
        """Block until `txn_id` holds every table's write lock (sorted, to avoid
        deadlocks within one statement); `check` raises if the statement is cancelled."""
        for table in sorted(tables):
            self._acquire_one(txn_id, table, check)

    def _acquire_one(self, txn_id: int, table: str, check: Callable[[], None]) -> None:
        with self._cond:
            while (owner := self._owners.get(table)) not in (None, txn_id):
                if self._closes_cycle(txn_id, owner):
                    raise SqlError(f"deadlock detected on table {table}")
                self._waiting[txn_id] = table
                try:
                    self._cond.wait(_WAIT_SLICE_S)
                finally:
                    del self._waiting[txn_id]
                check()
            self._owners[table] = txn_id
            self._held.setdefault(txn_id, set()).add(table)

    def _closes_cycle(self, txn_id: int, owner: int | None) -> bool:
        seen: set[int] = set()
        while owner is not None and owner not in seen:
            if owner == txn_id:
                return True
            seen.add(owner)
            waited_table = self._waiting.get(owner)
            owner = self._owners.get(waited_table) if waited_table else None
        return False

    def check_serializable(self, txn_id: int, snapshot: int, tables: Iterable[str]) -> None:
        with self._cond:
            for table in sorted(tables):
                seq, writer = self._last_write.get(table, (0, 0))
                if seq > snapshot:
                    raise serializable_violation(table, txn_id, writer)

    def commit(self, txn_id: int, written: Iterable[str], do_commit: Callable[[], None]) -> None:
        # Holding the condition while committing makes "commit, then publish the
        # commit sequence" atomic for snapshot() readers.
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
            del self._owners[table]
        self._cond.notify_all()
