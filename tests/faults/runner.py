"""The fault matrix: each case drives the real ``afpipe serve`` under load, then counts.

A case's verdict: nothing acknowledged is lost (every acknowledged event is a row in the
primary, or a dead letter with a reason), no event has two rows, every row was sent,
every dead letter has a reason, and the daemon recovered on its own (or after the
restart the case itself performs).
"""

from __future__ import annotations

import random
import resource
import signal
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio

from afpipe.warehouse.redshift import sql
from tests.daemon import Daemon, afpipe_process
from tests.emulators.redshift_data import RedshiftDataEmulator
from tests.events import from_payload
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
    slow_tokenless_client,
)
from tests.faults.hostile import HostilePoster, hostile_event, mismatched_rows
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
    ctx: Env,
    name: str,
    *,
    secondary: bool = False,
    embedded: bool = False,
    visibility_s: int = 30,
    **extra: str,
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
            queue_url = ctx.moto.queue(name, visibility_s)
            dlq_url = ctx.moto.queue(f"{name}-dlq")
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
    ctx: Env,
    setup: Setup,
    acked: set[str],
    timeout_s: float = CONVERGE_TIMEOUT_S,
    *,
    rows_in: RedshiftDataEmulator | None = None,
) -> float | None:
    """Seconds until every event in ``acked`` has left the queue (row or dead letter)
    and, with ``rows_in``, is a row there."""
    start = trio.current_time()
    with trio.move_on_after(timeout_s):
        while True:
            loaded = rows_in is None or acked <= set(emulator_ids(rows_in))
            if loaded and _queue_empty(ctx, setup):
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
    headers: dict[str, str] | None = None,
) -> Load:
    """Start the daemon and the load; run ``fault``; load a little more; converge; stop."""
    load = Load(setup.url, headers=headers or {})
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


async def _kill_at_random(setup: Setup, kills: int, rng: random.Random) -> None:
    """Start afpipe and kill -9 it after a random 0.3-2.5 s, ``kills`` times."""
    for _ in range(kills):
        await _start_and_kill(setup, rng.uniform(0.3, 2.5))


async def _start_and_kill(setup: Setup, after_s: float) -> None:
    async with afpipe_process(setup.data_dir, setup.env) as daemon:
        await trio.sleep(after_s)
        daemon.signal(signal.SIGKILL)
        await daemon.wait()


async def _restart_until_converged(
    ctx: Env, setup: Setup, acked: Callable[[], set[str]], stop: trio.Event, result: Result
) -> None:
    """Start afpipe once more, stop the load, and time until ``acked()`` has drained."""
    async with afpipe_process(setup.data_dir, setup.env) as daemon:
        start = trio.current_time()
        await trio.sleep(1.5)
        stop.set()
        if await _converge(ctx, setup, acked()) is not None:
            result.recovery_s = trio.current_time() - start
        await _stop_daemon(daemon, result)


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
            await _kill_at_random(setup, kills, rng)
            await _restart_until_converged(ctx, setup, lambda: load.acked, stop, result)
        _count(ctx, setup, load, result)
    return result


async def case_ha_pair_kill9(ctx: Env) -> Result:
    """An HA pair on one queue and one table (SNAPSHOT isolation, the emulator's
    default), each event posted to both; instance A is killed and restarted, B runs on."""
    kills = 20 if ctx.long else 3
    result = Result(
        "two instances, SNAPSHOT, kill -9 of one",
        "3 workers × 10 events to each, every event to both",
        f"SIGKILL × {kills} of instance A at random",
    )
    rng = random.Random(ctx.seed)
    async with _setup(ctx, "ha_kill9", secondary=True) as setup:
        port_b = free_port()
        env_b = {**setup.env, "PORT": str(port_b)}
        load_a = Load(setup.url)
        load_b = Load(f"http://127.0.0.1:{port_b}", run_id=load_a.run_id)  # the same events
        stop = trio.Event()
        async with (
            trio.open_nursery() as nursery,
            afpipe_process(setup.data_dir.parent / "data-b", env_b) as daemon_b,
        ):
            nursery.start_soon(load_a.run, stop)
            nursery.start_soon(load_b.run, stop)
            await _kill_at_random(setup, kills, rng)
            await _restart_until_converged(
                ctx, setup, lambda: load_a.acked | load_b.acked, stop, result
            )
            await _stop_daemon(daemon_b, result)
        _count(ctx, setup, _both(load_a, load_b), result)
    return result


def _both(first: Load, second: Load) -> Load:
    """What two loads acknowledged, sent and were answered, as one."""
    both = Load(first.url, run_id=first.run_id)
    both.acked, both.sent = first.acked | second.acked, first.sent | second.sent
    both.statuses = first.statuses + second.statuses
    return both


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
        narrow = sql.create_table_sql(sql.table_name("appsflyer_events")).replace(
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
            if await _converge(ctx, setup, load.acked, rows_in=emu) is not None:
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
                await _start_and_kill(setup, rng.uniform(0.3, 2.5))
                wal_seen += (setup.data_dir / "queue.db-wal").exists()
            await _restart_until_converged(ctx, setup, lambda: load.acked, stop, result)
        for name in ("queue.db", "warehouse.db"):
            check = integrity(setup.data_dir / name)
            if check != "ok":
                result.notes.append(f"{name} integrity: {check}")
                result.lost += 1
        result.notes.append(f"WAL present after {wal_seen} of {kills} kills")
        _count(ctx, setup, load, result)
    return result


async def case_disk_full(ctx: Env) -> Result:
    """The embedded backends' files may not grow (RLIMIT_FSIZE 0 on the running
    process: writes fail with EFBIG, as on a full disk) for a while, then may again."""
    full_s = 30.0 if ctx.long else 5.0
    result = Result(
        "embedded: disk full", "3 workers × 10 events", f"RLIMIT_FSIZE 0 for {full_s:.0f} s"
    )
    async with _setup(ctx, "disk_full", embedded=True) as setup:

        async def fill_disk(load: Load) -> None:
            pid = daemon_pid(setup)
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
            refused_before = load.statuses["503"]
            await trio.sleep(full_s)
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
            result.notes.append(f"503 while full: {load.statuses['503'] - refused_before}")

        await _under_load(ctx, setup, result, fill_disk)
        for name in ("queue.db", "warehouse.db"):
            check = integrity(setup.data_dir / name)
            if check != "ok":
                result.problems.append(f"{name} integrity: {check}")
    return result


async def case_slow_tokenless(ctx: Env) -> Result:
    """Clients without the token trickle their bodies; they used to hold an in-flight slot
    each (AFPIPE_MAX_INFLIGHT_REQUESTS, 128) while afpipe read and dropped the body."""
    seconds, attackers = (30.0, 512) if ctx.long else (5.0, 256)
    result = Result(
        "slow token-less clients while good clients post: good ones all 200",
        "3 workers × 10 events, with the token",
        f"{attackers} clients without the token trickle 100 kB bodies (a byte / 50 ms)"
        f" for {seconds:.0f} s",
    )
    token = "faults-webhook-token-5a7c"
    async with _setup(ctx, "slow_tokenless", AFPIPE_WEBHOOK_TOKEN=token) as setup:

        async def attack(load: Load) -> None:
            before = load.statuses.copy()
            answers: Counter[str] = Counter()
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                for _ in range(attackers):
                    nursery.start_soon(slow_tokenless_client, setup.url, stop, answers)
                await trio.sleep(seconds)
                stop.set()
            good = load.statuses - before
            result.notes.append(f"good answers during the attack: {dict(good)}")
            result.notes.append(f"attackers' answers: {dict(answers)}")
            if set(good) != {"200"}:
                result.problems.append(f"good clients got {dict(good)} during the attack")
            if answers["401"] < attackers:
                result.problems.append(f"attackers were not refused at once: {dict(answers)}")

        await _under_load(ctx, setup, result, attack, headers={"Authorization": token})
    return result


async def case_hostile_characters(ctx: Env) -> Result:
    """Events holding U+FFFE / U+FFFF (SQS refuses a whole call for one) from
    concurrent clients, packed with good ones: all 200, all rows, byte-exact."""
    rounds = 40 if ctx.long else 10
    result = Result(
        "events with characters SQS refuses, among good ones",
        "3 workers × 10 events; 3 more clients",
        f"{rounds * 9} events holding U+FFFE/U+FFFF (raw, \\u-escaped, GET) and"
        f" {rounds * 3} lone surrogates; 5 more mixed into a good array",
    )
    async with _setup(ctx, "hostile") as setup:
        emu = setup.primary
        assert emu is not None
        hostile: dict[str, dict[str, Any]] = {}

        async def fault(load: Load) -> None:
            poster = HostilePoster(setup.url, load.run_id, rounds=rounds)
            extra = [hostile_event(f"{load.run_id}-extra-{n}") for n in range(5)]
            load.extra = list(extra)  # into worker 0's next array, with 10 good events
            await poster.run()
            hostile.update(poster.sent)
            hostile.update({from_payload(p).id: p for p in extra})
            load.sent |= set(poster.sent)
            load.acked |= poster.acked
            load.statuses += poster.statuses
            refused = {k: v for k, v in poster.statuses.items() if not k.endswith(": 200")}
            if set(refused) != {"lone surrogate: 400"}:
                result.problems.append(f"hostile clients were answered {dict(refused)}")

        load = await _under_load(ctx, setup, result, fault)
        unacked = set(hostile) - load.acked
        if unacked:
            result.problems.append(f"{len(unacked)} hostile events not acknowledged")
        mismatched = mismatched_rows(emu, {i: hostile[i] for i in set(hostile) & load.acked})
        if mismatched:
            result.problems.append(f"{len(mismatched)} hostile rows not byte-exact")
        result.notes.append(f"{len(hostile) - len(unacked) - len(mismatched)} hostile rows exact")
    return result


async def case_warehouse_down_at_start(ctx: Env) -> Result:
    """The primary's Data API answers 503 before afpipe starts and for a while after:
    the webhook must serve (and /ready stay 200) on the queue alone; the consumer waits."""
    down_s = 60.0 if ctx.long else 10.0
    result = Result(
        "Redshift down from start, then back",
        "3 workers × 10 events",
        f"Data API 503 on every call from before start for {down_s:.0f} s",
    )
    async with _setup(ctx, "warehouse_down") as setup:
        emu = setup.primary
        assert emu is not None
        emu.set_unavailable(True)
        load = Load(setup.url)
        stop = trio.Event()
        async with (
            trio.open_nursery() as nursery,
            afpipe_process(setup.data_dir, setup.env) as daemon,
        ):
            nursery.start_soon(load.run, stop)
            not_ready = 0
            async with httpx.AsyncClient(base_url=setup.url) as client:
                with trio.move_on_after(down_s):
                    while True:
                        answer = await client.get("/ready")
                        not_ready += answer.status_code != 200
                        await trio.sleep(1)
            ok_while_down = load.statuses["200"]
            rows_while_down = len(emulator_ids(emu))
            emu.set_unavailable(False)
            start = trio.current_time()
            await trio.sleep(2)
            stop.set()
            # The backlog of a minute's outage is ~1,000 messages, and moto answers a
            # receive in O(queue depth): ~2.7 s per call at 4,000 messages (measured).
            # Draining it here takes far longer than on SQS; wait for it.
            took = await _converge(ctx, setup, load.acked, 5 * CONVERGE_TIMEOUT_S, rows_in=emu)
            if took is not None:
                result.recovery_s = trio.current_time() - start
            else:
                print(f"--- afpipe output (not converged) ---\n{daemon.output()[-20000:]}")
                async with httpx.AsyncClient(base_url=setup.url) as client:
                    metrics_text = (await client.get("/metrics")).text
                lines = metrics_text.splitlines()
                print("\n".join(line for line in lines if line.startswith("afpipe")))
                print("queue depth", ctx.moto.depth(setup.queue_url))
            result.notes.append(
                f"{ok_while_down} answered 200 while down; /ready not 200 {not_ready}×;"
                f" {rows_while_down} rows while down"
            )
            if not_ready:
                result.problems.append(f"/ready answered non-200 {not_ready}× while Redshift down")
            if ok_while_down == 0:
                result.problems.append("nothing acknowledged while Redshift was down")
            await _stop_daemon(daemon, result)
        _count(ctx, setup, load, result)
    return result


async def case_kill9_queue_visibility(ctx: Env) -> Result:
    """kill -9 with a 10 s queue VisibilityTimeout and AFPIPE_VISIBILITY_TIMEOUT_S unset:
    what the killed process held is back (and loaded) within the queue's timeout."""
    visibility_s = 10
    kills = 5 if ctx.long else 1
    result = Result(
        "kill -9 with a short queue visibility timeout",
        "3 workers × 10 events",
        f"SIGKILL × {kills}, queue VisibilityTimeout {visibility_s} s, afpipe's own unset",
    )
    rng = random.Random(ctx.seed + 2)
    async with _setup(
        ctx, "kill9_vis", visibility_s=visibility_s, AFPIPE_VISIBILITY_TIMEOUT_S="0"
    ) as setup:
        emu = setup.primary
        assert emu is not None
        load = Load(setup.url)
        stop = trio.Event()
        slowest = 0.0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(load.run, stop)
            for kill in range(kills):
                await _start_and_kill(setup, rng.uniform(1.0, 3.0))
                acked_at_kill = set(load.acked)
                async with afpipe_process(setup.data_dir, setup.env) as daemon:
                    start = trio.current_time()
                    with trio.move_on_after(CONVERGE_TIMEOUT_S):
                        while not acked_at_kill <= set(emulator_ids(emu)):
                            await trio.sleep(0.2)
                    took = trio.current_time() - start
                    slowest = max(slowest, took)
                    if kill == kills - 1:
                        stop.set()
                        if await _converge(ctx, setup, load.acked) is not None:
                            result.recovery_s = trio.current_time() - start
                    await _stop_daemon(daemon, result)
        result.notes.append(
            f"slowest: every event acknowledged before a kill loaded {slowest:.1f} s"
            " after the restart"
        )
        # The restart itself takes a second or two before the consumer polls.
        if slowest > visibility_s + 5:
            result.problems.append(
                f"acknowledged events took {slowest:.1f} s after a restart"
                f" (queue visibility {visibility_s} s)"
            )
        _count(ctx, setup, load, result)
    return result


def daemon_pid(setup: Setup) -> int:
    """The pid of the one afpipe serving ``setup`` (the case starts only that one)."""
    port = setup.url.rsplit(":", 1)[1]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"afpipe" in cmdline and f"PORT={port}".encode() in environ:
                return int(entry.name)
    raise RuntimeError(f"no afpipe process serving port {port}")


CASES: dict[str, Callable[[Env], Awaitable[Result]]] = {
    "kill9": case_kill9,
    "ha_kill9": case_ha_pair_kill9,
    "sigterm": case_sigterm,
    "sqs_flaky": case_sqs_flaky,
    "sqs_down": case_sqs_down,
    "data_api_faults": case_data_api_faults,
    "data_error": case_data_error,
    "statement_hang": case_statement_hang,
    "secondary_down": case_secondary_down,
    "embedded_kill9": case_embedded_kill9,
    "disk_full": case_disk_full,
    "slow_tokenless": case_slow_tokenless,
    "hostile_characters": case_hostile_characters,
    "warehouse_down_at_start": case_warehouse_down_at_start,
    "kill9_queue_visibility": case_kill9_queue_visibility,
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
