"""``afpipe check`` and ``afpipe dlq``: operator commands, printing plain text."""

from __future__ import annotations

from pathlib import Path

from afpipe import backends
from afpipe.config import Settings
from afpipe.errors import AfpipeError, ConfigError
from afpipe.queue.embedded import EmbeddedQueue


async def check(settings: Settings) -> int:
    """Resolve the backends and ask each one to answer; 0 when all do."""
    failures = 0
    print(f"queue: {backends.describe(settings)['queue']}")
    try:
        async with backends.open_queue(settings) as queue:
            await queue.ping()
            if isinstance(queue, EmbeddedQueue):
                visible, in_flight = await queue.depth()
                dead = len(await queue.peek_dead_letters(1_000_000))
                print(f"  ok: {visible} waiting, {in_flight} in flight, {dead} dead letters")
    except ConfigError:
        raise
    except AfpipeError as exc:
        failures += 1
        print(f"  FAILED: {exc}")
    print(f"warehouse: {backends.describe(settings)['warehouse']}")
    try:
        async with backends.open_warehouse(settings) as warehouse:
            await warehouse.ping()
            print("  ok")
    except ConfigError:
        raise
    except AfpipeError as exc:
        failures += 1
        print(f"  FAILED: {exc}")
    return 1 if failures else 0


def _embedded(settings: Settings) -> EmbeddedQueue:
    if settings.uses_sqs:
        raise ConfigError("AFPIPE_DLQ_URL: dlq commands for SQS are not available in this build")
    return EmbeddedQueue(Path(settings.data_dir) / "queue.db")


async def dlq_peek(settings: Settings, limit: int) -> int:
    queue = _embedded(settings)
    try:
        letters = await queue.peek_dead_letters(limit)
    finally:
        await queue.aclose()
    for letter in letters:
        body = letter.body if len(letter.body) <= 200 else letter.body[:200] + "..."
        print(f"{letter.message_id}  receives={letter.receive_count}  reason: {letter.reason}")
        print(f"    {body}")
    print(f"{len(letters)} dead letter(s) shown")
    return 0


async def dlq_redrive(settings: Settings, limit: int) -> int:
    queue = _embedded(settings)
    try:
        moved = await queue.redrive(limit)
    finally:
        await queue.aclose()
    print(f"redrove {moved} message(s) to the queue")
    return 0
