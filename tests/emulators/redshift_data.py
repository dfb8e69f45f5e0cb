"""A Redshift Data API emulator for the test suite (and benchmarks).

It speaks the real wire protocol (AWS JSON 1.1, SigV4 checked), runs statements
asynchronously on worker threads with configurable latency, and executes the SQL
on DuckDB translated from the Redshift dialect with the behaviour that matters to
a loader: primary keys not enforced, VARCHAR lengths in bytes, backslash escapes
in string literals, SUPER/JSON_PARSE, the 100 KB SQL limit (on all the texts of a
batch together, or on each: `Settings.batch_limit`, `--batch-limit`), parameter
rules, atomic batches, throttling and injected faults. COPY loads gzip'd JSON from S3
(`Settings.s3_endpoint_url`, moto in the tests; see redshift/copy_sql.py for the
options it takes).

Concurrency is Redshift's, at either isolation level (`Settings.isolation`,
`--isolation`; STV_DB_ISOLATION_LEVEL shows it). Under SNAPSHOT, the default of
Serverless and new clusters, writers of one table do not wait for each other and
two transactions that each insert a key they saw absent both commit; only writes
of the same rows conflict. Under SERIALIZABLE, writers of a table queue and the
later one whose snapshot predates the other's commit fails with error 1023. A
snapshot is taken at a transaction's first statement other than LOCK, and
`LOCK t` holds `t` exclusively (readers wait too) to the end of the transaction:
see redshift/locks.py and redshift/engine.py. Each statement's latency is spent
inside its transaction, so statements submitted together overlap.

Long polling and sessions as the service has them: `WaitTimeSeconds` (1-30) makes
ExecuteStatement, BatchExecuteStatement, DescribeStatement and GetStatementResult
wait for the statement to end, and the first two then answer its `Status`
(`RedshiftPid`, `HasResultSet` where known). `SessionKeepAliveSeconds` opens a
session that outlives its statement by that many seconds; calls naming its
`SessionId` run there one at a time, each its own transaction, and see its temp
tables: see redshift/sessions.py for the rules and the errors.

    with RedshiftDataEmulator() as emu:
        client = boto3.client("redshift-data", endpoint_url=emu.url, ...)

Or as a process: `python -m tests.emulators.redshift_data --port 0` prints its URL.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType, TracebackType
from typing import Any, Self

from tests.emulators.redshift.api import Api
from tests.emulators.redshift.database import Database
from tests.emulators.redshift.faults import DEFAULT_RATE_LIMITS, Faults, StatementFault
from tests.emulators.redshift.http import Server
from tests.emulators.redshift.runner import Runner
from tests.emulators.redshift.s3 import S3Reader
from tests.emulators.redshift.sessions import MAX_SESSIONS, SessionStore
from tests.emulators.redshift.settings import (
    BATCH_LIMITS,
    ISOLATION_LEVELS,
    TEST_ACCESS_KEY,
    TEST_CLUSTER,
    TEST_DATABASE,
    TEST_DB_USER,
    TEST_REGION,
    TEST_SECRET_ARN,
    TEST_SECRET_KEY,
    TEST_WORKGROUP,
    Settings,
)
from tests.emulators.redshift.statements import StatementStore

__all__ = [
    "DEFAULT_RATE_LIMITS",
    "TEST_ACCESS_KEY",
    "TEST_CLUSTER",
    "TEST_DATABASE",
    "TEST_DB_USER",
    "TEST_REGION",
    "TEST_SECRET_ARN",
    "TEST_SECRET_KEY",
    "TEST_WORKGROUP",
    "RedshiftDataEmulator",
    "Settings",
]

_JOIN_TIMEOUT_S = 5.0


class RedshiftDataEmulator:
    def __init__(
        self,
        settings: Settings | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_s: float = 0.0,
    ) -> None:
        self.settings = settings or Settings()
        self._faults = Faults(self.settings.seed)
        self._faults.latency_s = latency_s
        self._db = Database(self.settings.database_path)
        self._store = StatementStore(self.settings.max_retained_statements)
        self._crashes: list[BaseException] = []
        self._runner = Runner(
            self._db,
            self._faults,
            wlm_slots=self.settings.wlm_slots,
            on_crash=self._crashes.append,
            s3=S3Reader(self.settings),
            isolation=self.settings.isolation,
        )
        self._sessions = SessionStore(self._db)
        api = Api(self.settings, self._store, self._runner, self._faults, self._sessions)
        self._server = Server((host, port), api, self._faults, self.settings)
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> Self:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        self._cancel_all()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(_JOIN_TIMEOUT_S)
            self._thread = None
        self._server.close_connections()
        self._server.server_close()
        self._sessions.close_all()
        self._db.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = self._server.server_address[0]
        return f"http://{host if isinstance(host, str) else host.decode()}:{self.port}"

    # -- runtime knobs -----------------------------------------------------------

    def set_latency(self, seconds: float) -> None:
        """How long each (sub-)statement stays STARTED after it has run, inside its
        transaction (which therefore holds its snapshot and locks meanwhile)."""
        self._faults.latency_s = seconds

    def set_rate_limit(self, operation: str, per_s: float | None) -> None:
        """Throttle `operation` to `per_s` calls a second (None: unlimited)."""
        self._faults.set_rate_limit(operation, per_s)

    def enable_default_quotas(self) -> None:
        for operation, per_s in DEFAULT_RATE_LIMITS.items():
            self._faults.set_rate_limit(operation, per_s)

    def set_max_sessions(self, limit: int) -> None:
        """Beyond `limit` open sessions (500 by default, the service's quota), opening
        one answers ActiveSessionsExceededException."""
        self._sessions.max_sessions = limit

    def set_max_active_statements(self, limit: int | None) -> None:
        """Beyond `limit` unfinished statements, Execute/Batch answer
        ActiveStatementsExceededException."""
        self._faults.max_active_statements = limit

    def fail_next_statements(
        self, count: int = 1, error: str = "emulator: injected failure"
    ) -> None:
        """The next `count` statements FAIL with `error` (a Redshift error text) and
        change nothing."""
        self._faults.add_statement_faults(
            StatementFault(error=error.removeprefix("ERROR: ")), count
        )

    def hang_next_statements(self, count: int = 1) -> None:
        """The next `count` statements stay STARTED until cancelled."""
        self._faults.add_statement_faults(StatementFault(hang=True), count)

    def hang_all_statements(self, enabled: bool = True) -> None:
        self._faults.hang_all = enabled

    def fail_next_requests(self, count: int = 1, operation: str | None = None) -> None:
        """The next `count` requests (of `operation`, or any) answer HTTP 500."""
        self._faults.fail_next_requests(count, operation)

    def set_unavailable(self, unavailable: bool = True) -> None:
        """Every request answers HTTP 503 ServiceUnavailableException (an outage,
        from the start if set before the client's first call)."""
        self._faults.unavailable = unavailable

    def set_cancel_delay(self, seconds: float) -> None:
        """CancelStatement answers (and cancels) only after ``seconds``."""
        self._faults.cancel_delay_s = seconds

    def fail_statements_containing(self, needle: str, error: str | None) -> None:
        """Every statement whose SQL holds ``needle`` FAILS with ``error`` (a Redshift
        error text) and changes nothing; ``error`` None clears it."""
        self._faults.set_needle_error(
            needle, None if error is None else error.removeprefix("ERROR: ")
        )

    def set_internal_error_probability(self, probability: float) -> None:
        self._faults.internal_error_probability = probability

    def set_cancel_loses_race(self, enabled: bool = True) -> None:
        """CancelStatement of a running statement answers `{"Status": false}` (too
        late: it is past cancelling) and the statement runs on and commits: the
        caller gave up on a statement that then committed."""
        self._faults.cancel_loses_race = enabled

    # -- inspection ----------------------------------------------------------------

    @property
    def calls(self) -> dict[str, int]:
        """Requests received per operation (throttled and failed ones included)."""
        return self._server.counters.snapshot()[0]

    @property
    def errors(self) -> dict[str, int]:
        """Error answers per error code."""
        return self._server.counters.snapshot()[1]

    @property
    def crashes(self) -> list[BaseException]:
        """Unexpected exceptions inside the emulator (a test should expect none)."""
        return [*self._crashes, *self._server.crashes]

    def open_sessions(self) -> int:
        """Sessions open now (expired ones are closed first)."""
        return self._sessions.open_count()

    def active_statements(self) -> int:
        return self._store.active_count()

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Run DuckDB SQL directly against the emulator's database."""
        return self._db.query(sql)

    def reset_counters(self) -> None:
        self._server.counters.clear()

    def reset(self) -> None:
        """Back to a fresh instance: statements cancelled and forgotten, sessions
        closed, tables dropped, counters and faults cleared."""
        self._cancel_all()
        self._sessions.close_all()
        self._sessions.max_sessions = MAX_SESSIONS
        self._store.clear()
        self._faults.reset()
        self._server.counters.clear()
        self._db.drop_everything()

    def _cancel_all(self) -> None:
        for statement in self._store.newest_first():
            if not statement.status.terminal:
                statement.control.cancel()
        self._runner.join(_JOIN_TIMEOUT_S)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-s", type=float, default=0.0)
    parser.add_argument("--access-key", default=TEST_ACCESS_KEY)
    parser.add_argument("--secret-key", default=TEST_SECRET_KEY)
    parser.add_argument("--database-path", default=None)
    parser.add_argument("--s3-endpoint-url", default=None, help="where COPY reads S3 objects")
    parser.add_argument("--quotas", action="store_true", help="enforce the default rate limits")
    parser.add_argument("--isolation", choices=sorted(ISOLATION_LEVELS), default="snapshot")
    parser.add_argument(
        "--batch-limit",
        choices=BATCH_LIMITS,
        default="total",
        help="100 KB for all the SQL texts of a batch together, or for each",
    )
    args = parser.parse_args(argv)
    settings = Settings(
        access_key=args.access_key,
        secret_key=args.secret_key,
        database_path=args.database_path,
        s3_endpoint_url=args.s3_endpoint_url,
        isolation=args.isolation,
        batch_limit=args.batch_limit,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with RedshiftDataEmulator(
        settings, host=args.host, port=args.port, latency_s=args.latency_s
    ) as emu:
        if args.quotas:
            emu.enable_default_quotas()
        print(emu.url, flush=True)
        stop.wait()
    sys.exit(0)


if __name__ == "__main__":
    main()
