"""The status report as one screen of plain text (80 by 24), or as JSON; pure."""

from __future__ import annotations

import textwrap
import time

import msgspec

from afpipe.status.report import Balance, Completeness, Cost, QueueState, Report

SCREEN_COLUMNS = 80
SCREEN_ROWS = 24
_LABEL = 17  # the label column, after a two-space indent


def to_json(report: Report) -> str:
    return msgspec.json.format(msgspec.json.encode(report), indent=2).decode()


def render(report: Report) -> str:
    """Freshness, completeness and cost; the cost's operations fold into one "other"
    line where the screen would overflow."""
    lines = _header(report) + _freshness(report) + _completeness(report.completeness)
    lines += _cost(report.cost, report.completeness.accepted, SCREEN_ROWS - len(lines))
    return "\n".join(lines)


def age(seconds: float | None, never: str = "never") -> str:
    """3 s, 4 min, 2 h, 5 d (rounded down)."""
    if seconds is None:
        return never
    for unit, size_s in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size_s:
            return f"{int(seconds // size_s)} {unit}"
    return f"{int(seconds)} s"


def _row(label: str, text: str) -> list[str]:
    """``text`` under a heading's label column, wrapped to the screen's width."""
    return textwrap.wrap(
        text,
        width=SCREEN_COLUMNS,
        initial_indent=f"  {label:<{_LABEL}}",
        subsequent_indent=" " * (2 + _LABEL),
        break_on_hyphens=False,
    )


def _count(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


def _header(report: Report) -> list[str]:
    moment = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(report.at))
    lines = [f"afpipe status at {moment} (counters since each instance's start)"]
    for instance in report.instances:
        if instance.error:
            lines += textwrap.wrap(
                f"{instance.url}  FAILED: {instance.error}",
                width=SCREEN_COLUMNS,
                initial_indent="  ",
                subsequent_indent="    ",
            )
        else:
            lines.append(f"  {instance.url}  up {age(instance.up_s, 'since ?')}")
    return lines


def _freshness(report: Report) -> list[str]:
    lines = ["", f"{'Freshness':<{2 + _LABEL}}{'newest event':<15}{'last load':<12}lag"]
    if not report.freshness:
        return [*lines, *_row("", "not known: no instance answered")]
    for target, fresh in report.freshness.items():
        newest, loaded = age(fresh.newest_event_age_s), age(fresh.last_load_age_s)
        lines.append(f"  {target:<{_LABEL}}{newest:<15}{loaded:<12}{age(fresh.lag_s, '-')}")
    return lines


def _completeness(done: Completeness) -> list[str]:
    lines = ["", f"{'Completeness':<{2 + _LABEL}}events since the start"]
    held = "" if done.held is None else f"; {done.held:,} held (received, not yet settled)"
    lines += _row("accepted", f"{_count(done.accepted)}{held}")
    for target, balance in done.targets.items():
        lines += _row(target, _settled(target, balance))
    lines += _queues(done)
    if any(balance.verdict == "queued" for balance in done.targets.values()):
        lines.append("  (each message holds at least one event: exact once the queue is empty)")
    return lines


def _settled(target: str, balance: Balance) -> str:
    if balance.loaded is None:
        return balance.detail
    counts = [f"{balance.loaded:,} loaded"]
    if target != "primary" or balance.handed_off or balance.dropped:
        counts += [f"{balance.handed_off or 0:,} handed off", f"{balance.dropped or 0:,} dropped"]
    counts.append(f"{balance.dead_lettered or 0:,} dead-lettered")
    return f"{', '.join(counts)}: {balance.detail}"


def _queues(done: Completeness) -> list[str]:
    lines: list[str] = []
    main = done.queues.get("main")
    if main is not None:
        again = "" if done.received_again is None else f"; {done.received_again:,} received again"
        lines += _row("main queue", _queue_text(main) + again)
        if not main.error:
            dead = main.dead_letters
            where = f"{dead:,} messages on the dead-letter queue" if dead is not None else ""
            lines += _row("dead letters", where or "none: AFPIPE_DLQ_URL is unset")
    retry = done.queues.get("secondary_retry")
    if retry is not None:
        settled = "" if done.retry_settled is None else f"; {done.retry_settled:,} events settled"
        text = _queue_text(retry)
        lines += _row("retry queue", text + (settled if not retry.error else ""))
    return lines


def _queue_text(queue: QueueState) -> str:
    if queue.error:
        return f"FAILED: {queue.error}"
    oldest = "" if queue.oldest_age_s is None else f", oldest {age(queue.oldest_age_s)}"
    held = f"{_count(queue.visible)} messages visible, {_count(queue.in_flight)} in flight"
    return held + oldest


def _cost(cost: Cost, accepted: int | None, rows: int) -> list[str]:
    title = f"{'Cost':<{2 + _LABEL}}{'AWS requests since the start':<30}"
    lines = ["", f"{title}{'requests':>12}{'per M events':>17}"]
    if cost.total is None:
        return [*lines, *_row("", "not known: no instance answered")]
    if not cost.total:
        return [*lines, *_row("", "none (the embedded backends make no AWS requests)")]
    calls = [
        (n, service, operation)
        for service, operations in cost.requests.items()
        for operation, n in operations.items()
    ]
    calls.sort(key=lambda call: (-call[0], call[1], call[2]))  # the most first
    room = rows - len(lines) - 1  # the total takes a row
    if len(calls) > max(room, 1):  # the last row says what it folds
        keep = max(room - 1, 0)
        folded = sum(n for n, _, _ in calls[keep:])
        calls = [*calls[:keep], (folded, "other", f"({len(calls) - keep} operations)")]
    for n, service, operation in calls:
        lines.append(_cost_row(service, operation, n, accepted))
    lines.append(_cost_row("total", "", cost.total, accepted))
    return lines


def _cost_row(service: str, operation: str, requests: int, accepted: int | None) -> str:
    per_million = f"{requests / accepted * 1e6:,.0f}" if accepted else "-"
    return f"  {service:<{_LABEL}}{operation:<30}{requests:>12,}{per_million:>17}"
