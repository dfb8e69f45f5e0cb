"""Runs statements asynchronously, one worker thread each, like the real service:
SUBMITTED -> PICKED (waiting for a WLM slot) -> STARTED -> FINISHED | FAILED | ABORTED.

The configured latency is spent after each step has run, inside its open
transaction, so that a transaction holds its snapshot and locks for most of its
run time, as on Redshift: transactions submitted together really overlap.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable

from tests.emulators.redshift.control import Control
from tests.emulators.redshift.database import Database
from tests.emulators.redshift.engine import Transaction
from tests.emulators.redshift.errors import SqlError, StatementAborted
from tests.emulators.redshift.faults import Faults, StatementFault
from tests.emulators.redshift.locks import LockManager
from tests.emulators.redshift.s3 import S3Reader
from tests.emulators.redshift.settings import TEST_DATABASE
from tests.emulators.redshift.statements import Statement, Status
from tests.emulators.redshift.translate import translate

_SLOT_WAIT_S = 0.05  # WLM queue waits wake this often to notice cancellation


class Runner:
    def __init__(
        self,
        db: Database,
        faults: Faults,
        *,
        wlm_slots: int,
        on_crash: Callable[[BaseException], None],
        s3: S3Reader | None = None,
        isolation: str = "snapshot",
    ) -> None:
        self._db = db
        self._s3 = s3
        self._faults = faults
        self._locks = LockManager(isolation)
        self._slots = threading.Semaphore(wlm_slots)
        self._on_crash = on_crash
        self._txn_ids = itertools.count(1)
        self._threads: set[threading.Thread] = set()
        self._threads_lock = threading.Lock()

    def start(self, statement: Statement) -> None:
        statement.pid = 1_000 + next(self._txn_ids) % 60_000
        thread = threading.Thread(
            target=self._run, args=(statement,), name=f"redshift-data-{statement.id[:8]}"
        )
        with self._threads_lock:
            self._threads.add(thread)
        thread.start()

    def join(self, timeout_s: float) -> None:
        """Wait for the worker threads (cancel their statements first)."""
        with self._threads_lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout_s)

    def _run(self, statement: Statement) -> None:
        try:
            statement.mark(Status.PICKED)
            self._acquire_slot(statement.control)
            try:
                statement.mark(Status.STARTED)
                self._execute(statement)
            finally:
                self._slots.release()
        except StatementAborted:
            statement.abort()
        except BaseException as exc:
            self._on_crash(exc)
            statement.fail(statement.steps[0], f"ERROR: emulator internal error: {exc!r}")
        finally:
            statement.done.set()
            with self._threads_lock:
                self._threads.discard(threading.current_thread())

    def _acquire_slot(self, control: Control) -> None:
        while not self._slots.acquire(timeout=_SLOT_WAIT_S):
            control.check()

    def _execute(self, statement: Statement) -> None:
        fault = self._faults.take_statement_fault()
        txn = self._transaction(statement)
        try:
            for number, step in enumerate(statement.steps):
                statement.begin_step(step)
                try:
                    if number == 0:
                        _apply(fault, statement.control)
                    if (needle_error := self._faults.needle_error([step.sql])) is not None:
                        raise SqlError(needle_error)
                    plan = translate(step.sql, statement.parameters)
                    outcome = txn.execute(plan, step.query_id)
                    statement.control.sleep(self._faults.latency_s)
                except SqlError as exc:
                    statement.fail(step, f"ERROR: {exc}")
                    return
                statement.finish_step(step, outcome)
            try:
                txn.commit()
            except SqlError as exc:
                statement.fail(statement.steps[-1], f"ERROR: {exc}")
                return
            statement.finish()
        finally:
            txn.close()

    def _transaction(self, statement: Statement) -> Transaction:
        # Without Database (a SecretArn names it), the emulator's own database.
        database = statement.target.database or TEST_DATABASE
        return Transaction(
            self._db,
            self._locks,
            next(self._txn_ids),
            statement.control,
            self._s3,
            database=database,
            session=statement.session,  # None: a connection of its own (sessions.py)
        )


def _apply(fault: StatementFault | None, control: Control) -> None:
    if fault is None:
        return
    if fault.hang:
        control.hang()
    if fault.error is not None:
        raise SqlError(fault.error)
