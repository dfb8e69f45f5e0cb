"""The fault matrix: each case drives the real ``afpipe serve`` under load, then counts.

A case's verdict: nothing acknowledged is lost (every acknowledged event is a row in the
primary, or a dead letter with a reason), no event has two rows, every row was sent,
every dead letter has a reason, and the daemon recovered on its own (or after the
restart the case itself performs).
"""

from __future__ import annotations

import random
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

from afpipe.warehouse import redshift_sql
from tests.daemon import Daemon, afpipe_process
from tests.emulators.redshift_data import RedshiftDataEmulator
from tests.faults.harness import (
    Load,
    Moto,
    SqsProxy,
    aws_env,
    embedded_dead_letters,
    embedded_depth,
    embedded_ids,
    emulator,
    emulator_ids,
    free_port,
    integrity,
)
from tests.fixtures.redshift import REDSHIFT_TARGET, make_redshift_data_client, redshift_env

CONFLICT_TEXT = "ERROR: 1023 DETAIL: Serializable isolation violation on table appsflyer_events"
CONVERGE_TIMEOUT_S = 60.0


@dataclass
class Result:
    case: str
    load: str
    faults: str
    acked: int = 0
    primary: int = 0
    secondary: int | None = None
    duplicates: int = 0
    dead: int = 0
    dead_without_reason: int = 0
    lost: int = 0
    unsent_rows: int = 0
    recovery_s: float | None = None
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # anything else that fails the case
    skipped: str = ""

    @property
    def passed(self) -> bool:
        return not self.skipped and (
            not self.problems
            and self.lost == 0
            and self.duplicates == 0
            and self.dead_without_reason == 0
            and self.unsent_rows == 0
            and self.recovery_s is not None
        )

    def row(self) -> str:
        verdict = "skipped" if self.skipped else ("pass" if self.passed else "**FAIL**")
        secondary = "-" if self.secondary is None else str(self.secondary)
        recovery = "-" if self.recovery_s is None else f"{self.recovery_s:.1f} s"
        dead = f"{self.dead} ({self.dead - self.dead_without_reason} with reason)"
        notes = "; ".join([self.skipped] if self.skipped else self.notes)
        cells = [
            self.case,
            self.load,
            self.faults,
            str(self.acked),
            f"{self.primary} / {secondary}",
            str(self.duplicates),
            dead,
            str(self.lost),
            recovery,
            verdict,
            notes,
        ]
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


HEADER = (
    "| case | load | faults injected | acknowledged | rows primary / secondary | duplicates"
    " | dead-lettered | lost | recovery | result | notes |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
)


@dataclass
class Env:
    """What a case runs against: moto (SQS, through a fault proxy) and fresh emulators."""

    tmp: Path
    moto: Moto
    proxy: SqsProxy
    long: bool
    seed: int = 1


# --- helpers ------------------------------------------------------------------------------


def _base_env(port: int) -> dict[str, str]:
    return {
        "PORT": str(port),
        "LOG_LEVEL": "info",
        "AFPIPE_ACCESS_LOG": "0",
        "AFPIPE_BATCH_LINGER_MS": "100",
        "AFPIPE_RECEIVE_WAIT_S": "1",
        "SQS_POLLING_INTERVAL": "50",
        "AFPIPE_VISIBILITY_TIMEOUT_S": "10",
        "AFPIPE_ENQUEUE_TIMEOUT_S": "5",
        "AFPIPE_DRAIN_TIMEOUT_S": "10",
    }


@dataclass
class Setup:
    env: dict[str, str]
    data_dir: Path
    primary: RedshiftDataEmulator | None
    secondary: RedshiftDataEmulator | None
    queue_url: str
    dlq_url: str
    url: str


@asynccontextmanager
async def _setup(
    ctx: Env, name: str, *, secondary: bool = False, embedded: bool = False, **extra: str
) -> AsyncIterator[Setup]:
    port = free_port()
    data_dir = ctx.tmp / name / "data"
    data_dir.mkdir(parents=True)
    env = {**_base_env(port), **aws_env(ctx.tmp)}
    primary = secondary_emu = None
    queue_url = dlq_url = ""
    with ExitStack() as stack:
        if not embedded:
            primary = stack.enter_context(emulator())
            queue_url, dlq_url = ctx.moto.queue(name), ctx.moto.queue(f"{name}-dlq")
            env |= {
                "AWS_ENDPOINT_URL_SQS": ctx.proxy.url,
                "SQS_QUEUE_URL": queue_url,
                "AFPIPE_DLQ_URL": dlq_url,
                **redshift_env(primary),
            }
            if secondary:
                secondary_emu = stack.enter_context(emulator())
                env |= {
                    "SECONDARY_REDSHIFT_ENABLED": "true",
                    "SECONDARY_REDSHIFT_ENDPOINT": secondary_emu.url,
                    "SECONDARY_REDSHIFT_CLUSTER_IDENTIFIER": env["REDSHIFT_CLUSTER_IDENTIFIER"],
                    "SECONDARY_REDSHIFT_DATABASE": env["REDSHIFT_DATABASE"],
                    "SECONDARY_REDSHIFT_DB_USER": env["REDSHIFT_DB_USER"],
                    "AFPIPE_SECONDARY_RETRY_QUEUE_URL": ctx.moto.queue(f"{name}-retry"),
                    "AFPIPE_SECONDARY_TIMEOUT_S": "1",
                }
        env |= extra
        yield Setup(
            env, data_dir, primary, secondary_emu, queue_url, dlq_url, f"http://127.0.0.1:{port}"
        )


def _primary_ids(setup: Setup) -> list[str]:
    if setup.primary is None:
        return embedded_ids(setup.data_dir)
    return emulator_ids(setup.primary)


def _queue_empty(ctx: Env, setup: Setup) -> bool:
    if setup.primary is None:
        return embedded_depth(setup.data_dir) == 0
    if ctx.moto.depth(setup.queue_url) != (0, 0):
        return False
    # With a secondary, what it missed waits on its retry queue until loaded there.
    retry_url = setup.env.get("AFPIPE_SECONDARY_RETRY_QUEUE_URL")
    return retry_url is None or ctx.moto.depth(retry_url) == (0, 0)


async def _converge(
    ctx: Env, setup: Setup, acked: set[str], timeout_s: float = CONVERGE_TIMEOUT_S
) -> float | None:
    """Seconds until every event in ``acked`` has left the queue (row or dead letter)."""
    start = trio.current_time()
    with trio.move_on_after(timeout_s):
        while True:
            if _queue_empty(ctx, setup):
                return trio.current_time() - start
            await trio.sleep(0.2)
    return None


def _count(ctx: Env, setup: Setup, load: Load, result: Result) -> None:
    ids = _primary_ids(setup)
    dead = (
        embedded_dead_letters(setup.data_dir)
        if setup.primary is None
        else ctx.moto.dead_letters(setup.dlq_url)
    )
    dead_ids = {i for _, event_ids in dead for i in event_ids}
    result.acked = len(load.acked)
    result.primary = len(set(ids))
    result.duplicates = len(ids) - len(set(ids))
    result.dead = len(dead_ids)
    result.dead_without_reason = len({i for r, e in dead for i in e if not r.strip()})
    result.lost = len(load.acked - set(ids) - dead_ids)
    result.unsent_rows = len(set(ids) - load.sent)
    if setup.secondary is not None:
        secondary = emulator_ids(setup.secondary)
        result.secondary = len(set(secondary))
        result.duplicates += len(secondary) - len(set(secondary))
        missing = len(set(ids) - set(secondary))
        if missing:
            result.notes.append(f"{missing} primary rows missing in the secondary")
            result.lost += missing
    if result.unsent_rows:
        result.notes.append(f"{result.unsent_rows} rows never sent")
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(load.statuses.items()))
    result.notes.append(f"answers {statuses}")
    if dead:
        reasons = sorted({r[:60] for r, _ in dead})
        result.notes.append("dead-letter reasons: " + " / ".join(reasons))


async def _stop_daemon(daemon: Daemon, result: Result) -> None:
    daemon.signal(signal.SIGTERM)
    with trio.move_on_after(30):
        code = await daemon.wait()
        if code != 0:
            result.notes.append(f"exit code {code} after SIGTERM")
            result.problems.append(f"exit code {code} after SIGTERM")
            print(f"--- afpipe output (exit {code}) ---\n{daemon.output()}")
        return
    result.notes.append("did not exit within 30 s of SIGTERM")
    result.problems.append("did not exit within 30 s of SIGTERM")


async def _under_load(
    ctx: Env,
    setup: Setup,
    result: Result,
    fault: Callable[[Load], Awaitable[None]],
    *,
    warmup_s: float = 2.0,
    after_s: float = 2.0,
) -> Load:
    """Start the daemon and the load; run ``fault``; load a little more; converge; stop."""
    load = Load(setup.url)
    stop = trio.Event()
    async with (
        trio.open_nursery() as nursery,
        afpipe_process(setup.data_dir, setup.env) as daemon,
    ):
        nursery.start_soon(load.run, stop)
        await trio.sleep(warmup_s)
        await fault(load)
        start = trio.current_time()
        await trio.sleep(after_s)
        stop.set()
        if await _converge(ctx, setup, load.acked) is not None:
            # From the fault's end until everything acknowledged has left the queue.
            result.recovery_s = trio.current_time() - start
        await _stop_daemon(daemon, result)
    _count(ctx, setup, load, result)
    return load


# --- cases --------------------------------------------------------------------------------


async def case_kill9(ctx: Env) -> Result:
    kills = 20 if ctx.long else 3
    result = Result("kill -9, restart", "3 workers × 10 events", f"SIGKILL × {kills} at random")
    rng = random.Random(ctx.seed)
    async with _setup(ctx, "kill9", secondary=True) as setup:
        load = Load(setup.url)
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(load.run, stop)
            for _ in range(kills):
                async with afpipe_process(setup.data_dir, setup.env) as daemon:
                    await trio.sleep(rng.uniform(0.3, 2.5))
                    daemon.signal(signal.SIGKILL)
                    await daemon.wait()
            async with afpipe_process(setup.data_dir, setup.env) as daemon:
                start = trio.current_time()
                await trio.sleep(1.5)
                stop.set()
                converged = await _converge(ctx, setup, load.acked)
                if converged is not None:
                    result.recovery_s = trio.current_time() - start
                await _stop_daemon(daemon, result)
        _count(ctx, setup, load, result)
    return result


async def case_sigterm(ctx: Env) -> Result:
    result = Result("SIGTERM under load", "3 workers × 10 events", "SIGTERM; then SIGTERM × 2")
    async with _setup(ctx, "sigterm") as setup:
        load = Load(setup.url)
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(load.run, stop)
            async with afpipe_process(setup.data_dir, setup.env) as daemon:
                await trio.sleep(3)
                start = trio.current_time()
                daemon.signal(signal.SIGTERM)
                code = await daemon.wait()
                result.notes.append(f"drain: exit {code} in {trio.current_time() - start:.1f} s")
                if code != 0:
                    result.problems.append(f"drain exit {code}")
                    print(f"--- afpipe output (drain exit {code}) ---\n{daemon.output()}")
            async with afpipe_process(setup.data_dir, setup.env) as daemon:
                await trio.sleep(3)
                start = trio.current_time()
                daemon.signal(signal.SIGTERM)
                await trio.sleep(0.05)
                daemon.signal(signal.SIGTERM)
                code = await daemon.wait()
                result.notes.append(
                    f"second SIGTERM: exit {code} in {trio.current_time() - start:.1f} s"
                )
            async with afpipe_process(setup.data_dir, setup.env) as daemon:
                start = trio.current_time()
                stop.set()
                if await _converge(ctx, setup, load.acked) is not None:
                    result.recovery_s = trio.current_time() - start
                await _stop_daemon(daemon, result)
        _count(ctx, setup, load, result)
    return result


async def case_sqs_flaky(ctx: Env) -> Result:
    seconds = 30 if ctx.long else 5
    result = Result(
        "SQS throttling / 5xx",
        "3 workers × 10 events",
        f"20% of SQS calls fail for {seconds} s (half after SQS acted)",
    )
    async with _setup(ctx, "sqsflaky") as setup:

        async def fault(load: Load) -> None:
            ctx.proxy.error_rate = 0.2
            try:
                await trio.sleep(seconds)
            finally:
                ctx.proxy.error_rate = 0.0

        await _under_load(ctx, setup, result, fault)
    return result


async def case_sqs_down(ctx: Env) -> Result:
    seconds = 30 if ctx.long else 5
    result = Result(
        "SQS unreachable", "3 workers × 10 events", f"every SQS connection dropped for {seconds} s"
    )
    async with _setup(ctx, "sqsdown") as setup:

        async def fault(load: Load) -> None:
            before = load.statuses["503"]
            ctx.proxy.down = True
            try:
                await trio.sleep(seconds)
            finally:
                ctx.proxy.down = False
            result.notes.append(f"503 while down: {load.statuses['503'] - before}")

        await _under_load(ctx, setup, result, fault)
    return result


async def case_data_api_faults(ctx: Env) -> Result:
    seconds = 30 if ctx.long else 6
    result = Result(
        "Data API throttling + FAILED",
        "3 workers × 10 events",
        f"{seconds} s: 20% of Data API calls answer 500, rate limits (Batch 2/s,"
        " Describe 10/s), 1 in 10 statements FAILED (serialization conflict)",
    )
    async with _setup(ctx, "dataapi") as setup:
        emu = setup.primary
        assert emu is not None

        async def fault(load: Load) -> None:
            emu.set_rate_limit("BatchExecuteStatement", 2)
            emu.set_rate_limit("DescribeStatement", 10)
            emu.set_internal_error_probability(0.2)
            injected = 0
            seen = emu.calls.get("BatchExecuteStatement", 0)
            try:
                with trio.move_on_after(seconds):
                    while True:
                        calls = emu.calls.get("BatchExecuteStatement", 0)
                        if calls - seen >= 10:
                            emu.fail_next_statements(1, CONFLICT_TEXT)
                            injected, seen = injected + 1, calls
                        await trio.sleep(0.1)
            finally:
                emu.set_rate_limit("BatchExecuteStatement", None)
                emu.set_rate_limit("DescribeStatement", None)
                emu.set_internal_error_probability(0.0)
            errors = emu.errors
            result.notes.append(
                f"emulator answered {errors.get('ThrottlingException', 0)} throttles,"
                f" {errors.get('InternalServerException', 0)} 500s; {injected} FAILED injected"
            )

        await _under_load(ctx, setup, result, fault)
    return result


async def case_data_error(ctx: Env) -> Result:
    result = Result(
        "rows Redshift refuses",
        "3 workers × 10 events + 5 bad",
        "event_name column narrowed to VARCHAR(12); 5 events with a longer name",
    )
    async with _setup(ctx, "dataerror") as setup:
        emu = setup.primary
        assert emu is not None
        client = make_redshift_data_client(emu)
        narrow = redshift_sql.create_table_sql(redshift_sql.table_name("appsflyer_events")).replace(
            "event_name VARCHAR(255)", "event_name VARCHAR(12)"
        )
        sid = client.execute_statement(Sql=narrow, **REDSHIFT_TARGET)["Id"]
        with trio.fail_after(10):
            while client.describe_statement(Id=sid)["Status"] not in ("FINISHED", "FAILED"):
                await trio.sleep(0.05)

        async def fault(load: Load) -> None:
            load.extra = [
                {"event_name": f"too-long-name-{n}", "app_id": "bad", "n": n} for n in range(5)
            ]
            await trio.sleep(2)

        await _under_load(ctx, setup, result, fault)
        if result.dead < 5:
            result.notes.append(f"expected 5 dead-lettered events, got {result.dead}")
            result.lost += 5 - result.dead
    return result


async def case_statement_hang(ctx: Env) -> Result:
    hangs = 10 if ctx.long else 3
    result = Result(
        "statements never finish",
        "3 workers × 10 events",
        f"{hangs} statements hang; REDSHIFT_STATEMENT_TIMEOUT=1000",
    )
    async with _setup(ctx, "hang", REDSHIFT_STATEMENT_TIMEOUT="1000") as setup:
        emu = setup.primary
        assert emu is not None

        async def fault(load: Load) -> None:
            emu.hang_next_statements(hangs)
            await trio.sleep(hangs * 1.5)
            result.notes.append(f"CancelStatement calls: {emu.calls.get('CancelStatement', 0)}")

        await _under_load(ctx, setup, result, fault)
    return result


async def case_secondary_down(ctx: Env) -> Result:
    seconds = 60 if ctx.long else 5
    result = Result(
        "secondary Redshift down",
        "3 workers × 10 events",
        f"every secondary statement hangs for {seconds} s",
    )
    async with _setup(ctx, "secondary", secondary=True) as setup:
        emu = setup.secondary
        assert emu is not None

        async def fault(load: Load) -> None:
            emu.hang_all_statements(True)
            try:
                await trio.sleep(seconds)
            finally:
                emu.hang_all_statements(False)

        load = Load(setup.url)
        stop = trio.Event()
        async with (
            trio.open_nursery() as nursery,
            afpipe_process(setup.data_dir, setup.env) as daemon,
        ):
            nursery.start_soon(load.run, stop)
            await trio.sleep(2)
            await fault(load)
            start = trio.current_time()
            await trio.sleep(2)
            stop.set()
            with trio.move_on_after(CONVERGE_TIMEOUT_S):
                while not (load.acked <= set(emulator_ids(emu)) and _queue_empty(ctx, setup)):
                    await trio.sleep(0.2)
                result.recovery_s = trio.current_time() - start
            await _stop_daemon(daemon, result)
        _count(ctx, setup, load, result)
    return result


async def case_embedded_kill9(ctx: Env) -> Result:
    kills = 20 if ctx.long else 3
    result = Result(
        "embedded: kill -9, restart", "3 workers × 10 events", f"SIGKILL × {kills}; WAL kept"
    )
    rng = random.Random(ctx.seed + 1)
    async with _setup(ctx, "embedded", embedded=True) as setup:
        load = Load(setup.url)
        stop = trio.Event()
        wal_seen = 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(load.run, stop)
            for _ in range(kills):
                async with afpipe_process(setup.data_dir, setup.env) as daemon:
                    await trio.sleep(rng.uniform(0.3, 2.5))
                    daemon.signal(signal.SIGKILL)
                    await daemon.wait()
                wal_seen += (setup.data_dir / "queue.db-wal").exists()
            async with afpipe_process(setup.data_dir, setup.env) as daemon:
                start = trio.current_time()
                await trio.sleep(1.5)
                stop.set()
                if await _converge(ctx, setup, load.acked) is not None:
                    result.recovery_s = trio.current_time() - start
                await _stop_daemon(daemon, result)
        for name in ("queue.db", "warehouse.db"):
            check = integrity(setup.data_dir / name)
            if check != "ok":
                result.notes.append(f"{name} integrity: {check}")
                result.lost += 1
        result.notes.append(f"WAL present after {wal_seen} of {kills} kills")
        _count(ctx, setup, load, result)
    return result


async def case_disk_full(ctx: Env) -> Result:
    result = Result("embedded: disk full / read-only", "-", "-")
    result.skipped = (
        "not run: the runner is root here, and root ignores directory permissions;"
        " a full disk needs a loop device or tmpfs quota the sandbox does not offer"
    )
    return result


CASES: dict[str, Callable[[Env], Awaitable[Result]]] = {
    "kill9": case_kill9,
    "sigterm": case_sigterm,
    "sqs_flaky": case_sqs_flaky,
    "sqs_down": case_sqs_down,
    "data_api_faults": case_data_api_faults,
    "data_error": case_data_error,
    "statement_hang": case_statement_hang,
    "secondary_down": case_secondary_down,
    "embedded_kill9": case_embedded_kill9,
    "disk_full": case_disk_full,
}
# What the normal test command runs (under a minute).
SHORT_TEST_CASES = ("kill9", "data_api_faults")


async def run_matrix(
    tmp: Path, names: tuple[str, ...] | None = None, long: bool = False
) -> list[Result]:
    results: list[Result] = []
    moto = Moto(tmp)
    try:
        proxy = SqsProxy(moto.url)
        async with trio.open_nursery() as nursery:
            await nursery.start(proxy.serve)
            ctx = Env(tmp, moto, proxy, long)
            for name in names or tuple(CASES):
                started = trio.current_time()
                try:
                    result = await CASES[name](ctx)
                except Exception as exc:  # one broken case must not hide the others
                    result = Result(name, "-", "-", notes=[f"runner error: {exc!r}"[:300]])
                result.notes.append(f"case took {trio.current_time() - started:.0f} s")
                results.append(result)
                print(result.row(), flush=True)
            nursery.cancel_scope.cancel()
    finally:
        moto.close()
    return results


def table(results: list[Result]) -> str:
    return "\n".join([HEADER, *(r.row() for r in results)])
