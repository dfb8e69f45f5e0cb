"""``afpipe check`` and ``afpipe dlq``: operator commands, printing plain text."""

from __future__ import annotations

from collections.abc import Awaitable

from afpipe import backends
from afpipe.aws import AwsClient
from afpipe.config import Settings
from afpipe.config.sections import (
    QueueSection,
    StagingSection,
    WarehouseSection,
    sections,
)
from afpipe.errors import AfpipeError, ConfigError, PermanentError
from afpipe.queue.embedded import EmbeddedQueue
from afpipe.queue.sqs import SqsQueue
from afpipe.warehouse.redshift import RedshiftWarehouse, sql
from afpipe.warehouse.redshift.sql import EXPECTED_COLUMNS


async def check(settings: Settings) -> int:
    """Resolve credentials and ask each backend to answer; 0 when all do."""
    failures = 0
    parts = sections(settings)
    described = parts.describe()
    async with backends.open_aws(parts) as aws:
        if aws is not None:
            failures += await _check_step("credentials", _check_credentials(aws))
        print(f"queue: {described['queue']}")
        failures += await _check_step("queue", _check_queue(settings, parts.queue, aws))
        if settings.dlq_url:
            print(f"dead-letter queue: {settings.dlq_url}")
            dlq = backends.sqs_queue(parts.queue, aws, settings.dlq_url)
            failures += await _check_step("dlq", _check_sqs(settings, dlq))
        print(f"warehouse: {described['warehouse']}")
        step = _check_warehouse(parts.primary, aws, parts.staging)
        failures += await _check_step("warehouse", step)
        if parts.secondary is not None:
            print(f"secondary warehouse: {described['secondary']}")
            step = _check_warehouse(parts.secondary, aws, parts.staging)
            failures += await _check_step("secondary", step)
            if settings.secondary_retry_queue_url:
                print(f"secondary retry queue: {settings.secondary_retry_queue_url}")
                retry = backends.sqs_queue(parts.queue, aws, settings.secondary_retry_queue_url)
                failures += await _check_step("secondary retry queue", _check_sqs(settings, retry))
            else:
                print(
                    "  WARNING: no AFPIPE_SECONDARY_RETRY_QUEUE_URL: secondary failures drop events"
                )
        if parts.staging is not None:
            print(f"S3 staging: {described['s3_staging']}, COPY role {settings.copy_iam_role}")
            failures += await _check_step("s3 staging", _check_staging(parts.staging, aws))
    print("all checks passed" if not failures else f"{failures} check(s) failed")
    return 1 if failures else 0


async def _check_step(name: str, step: Awaitable[None]) -> int:
    try:
        await step
    except ConfigError:
        raise
    except AfpipeError as exc:
        print(f"  FAILED ({name}): {exc}")
        return 1
    return 0


async def _check_credentials(aws: AwsClient) -> None:
    credentials = await aws.credentials.get()
    print(f"credentials: ok (access key ...{(credentials.access_key or '')[-4:]})")


async def _check_queue(settings: Settings, section: QueueSection, aws: AwsClient | None) -> None:
    async with backends.open_queue(section, aws) as queue:
        if isinstance(queue, SqsQueue):
            await _check_sqs(settings, queue)
            return
        assert isinstance(queue, EmbeddedQueue)
        await queue.ping()
        size = await queue.size()
        print(
            f"  ok: {size.visible} waiting, {size.in_flight} in flight,"
            f" {size.dead_letters} dead letters"
        )


MIN_SAFE_VISIBILITY_S = 10


async def _check_sqs(settings: Settings, queue: SqsQueue) -> None:
    attributes = await queue.attributes()
    depth = attributes.get("ApproximateNumberOfMessages", "?")
    in_flight = attributes.get("ApproximateNumberOfMessagesNotVisible", "?")
    visibility_s = int(attributes.get("VisibilityTimeout", "0") or 0)
    print(f"  ok: {depth} waiting, {in_flight} in flight, visibility timeout {visibility_s} s")
    print(f"  redrive policy: {attributes.get('RedrivePolicy') or 'none'}")
    # Heartbeats extend held messages every half timeout, so a load may take any
    # time; the timeout is what a crashed process's messages wait before redelivery.
    effective_s = settings.visibility_timeout_s or visibility_s
    source = "AFPIPE_VISIBILITY_TIMEOUT_S" if settings.visibility_timeout_s else "the queue's"
    print(
        f"  visibility timeout used: {effective_s} s ({source}); after a crash, what the"
        f" process held is back within {effective_s} s"
    )
    if effective_s < MIN_SAFE_VISIBILITY_S:
        print(
            f"  WARNING: a visibility timeout of {effective_s} s leaves the heartbeat"
            f" {effective_s / 2:.0f} s per extension: a slow SQS call lets held messages"
            " reappear and be loaded twice over (deduplicated, but wasted work)"
        )


async def _check_warehouse(
    section: WarehouseSection, aws: AwsClient | None, staging: StagingSection | None
) -> None:
    async with backends.open_warehouse(section, aws, staging) as warehouse:
        await warehouse.ping()
        if not isinstance(warehouse, RedshiftWarehouse):
            print("  ok")
            return
        columns = await warehouse.columns()
        table = f"{warehouse.table.schema}.{warehouse.table.table}"
        if not columns:
            print(f"  ok: SELECT 1 answered; table {table} does not exist yet")
            print("  (afpipe serve creates it)")
        elif columns == EXPECTED_COLUMNS:
            print(f"  ok: table {table} has the expected columns")
        else:
            raise PermanentError(
                f"table {table} has columns {columns}, expected {EXPECTED_COLUMNS}"
            )
        await _check_isolation(warehouse)
        _report_batch_limit(warehouse)


def _report_batch_limit(warehouse: RedshiftWarehouse) -> None:
    """Which 100 KB limit BatchExecuteStatement has, as far as this process knows. No
    probe: telling them apart takes a call of more than 100 KB, which the first
    large load makes anyway (and learns from, falling back if refused)."""
    print(f"  batch limit: {warehouse.describe_batch_limit()}")


async def _check_isolation(warehouse: RedshiftWarehouse) -> None:
    """The isolation level, and that loads are exactly once under it: every load
    LOCKs afpipe's lock table first, so this checks that the lock can be taken."""
    level = await warehouse.isolation_level() or "unknown (STV_DB_ISOLATION_LEVEL has no row)"
    lock = sql.lock_table(warehouse.table)
    print(f"  isolation level: {level}")
    if await warehouse.check_lock():
        print(
            f"  ok: LOCK {lock.schema}.{lock.table} taken: loads are exactly once under"
            " this isolation level, with any number of afpipe processes"
        )
    else:
        print(
            f"  lock table {lock.schema}.{lock.table} does not exist yet (afpipe serve"
            " creates it); loads are exactly once under this isolation level once it does"
        )


async def _check_staging(section: StagingSection, aws: AwsClient | None) -> None:
    if aws is None:  # open_aws opens one whenever the sections use AWS
        raise RuntimeError("S3 staging without an AWS client: a bug in afpipe")
    stager = backends.stager(section, aws)
    key = await stager.probe()
    print(f"  ok: put and deleted s3://{stager.staging.bucket}/{key}")
    print("  (whether Redshift may assume the COPY role shows on the first staged load)")


async def dlq_peek(settings: Settings, limit: int) -> int:
    parts = sections(settings)
    async with backends.open_aws(parts) as aws, backends.open_queue(parts.queue, aws) as queue:
        letters = await queue.peek_dead_letters(limit)
    for letter in letters:
        _print_letter(letter.message_id, letter.receive_count, letter.reason, letter.body)
    print(f"{len(letters)} dead letter(s) shown")
    return 0


async def dlq_redrive(settings: Settings, limit: int) -> int:
    parts = sections(settings)
    async with backends.open_aws(parts) as aws, backends.open_queue(parts.queue, aws) as queue:
        moved = await queue.redrive(limit)
    print(f"redrove {moved} message(s) to the queue")
    return 0


def _print_letter(message_id: str, receives: int, reason: str, body: str) -> None:
    shown = body if len(body) <= 200 else body[:200] + "..."
    print(f"{message_id}  receives={receives}  reason: {reason or '(none recorded)'}")
    print(f"    {shown}")
