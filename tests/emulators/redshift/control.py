"""Cancellation of one running statement, seen by its worker thread."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tests.emulators.redshift.errors import StatementAborted


class Control:
    def __init__(self) -> None:
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._on_cancel: Callable[[], None] | None = None

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        with self._lock:
            self._cancelled.set()
            if self._on_cancel is not None:
                self._on_cancel()

    def check(self) -> None:
        if self._cancelled.is_set():
            raise StatementAborted

    def sleep(self, seconds: float) -> None:
        if seconds > 0 and self._cancelled.wait(seconds):
            raise StatementAborted
        self.check()

    def hang(self) -> None:
        self._cancelled.wait()
        raise StatementAborted

    @contextmanager
    def interrupts(self, interrupt: Callable[[], None]) -> Iterator[None]:
        """Call `interrupt` if the statement is cancelled while in this block."""
        with self._lock:
            self._on_cancel = interrupt
        try:
            self.check()
            yield
        finally:
            with self._lock:
                self._on_cancel = None
