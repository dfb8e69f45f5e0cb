"""What ``afpipe status`` answers, from /metrics text and queue sizes; pure.

An HA pair's counters are summed and its timestamps taken the newest. The balance of
a target: accepted = settled + held + the events of the messages still on the main
queue, each at least one; so what is neither settled nor held is exact once the queue
is empty, and until then bounded by what the queue holds (``_verdict``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import msgspec
from prometheus_client.parser import text_string_to_metric_families

from afpipe.queue.base import QueueSize

OUTCOMES = ("loaded", "dead_lettered", "handed_off", "dropped")

Sample = tuple[str, dict[str, str], float]  # name, labels, value
Verdict = Literal["balanced", "queued", "unaccounted", "over", "unknown"]


class Scrape(msgspec.Struct, frozen=True):
    """One instance's ``/metrics``, parsed; ``error`` says why there is nothing."""

    url: str
    samples: tuple[Sample, ...] = ()
    families: frozenset[str] = frozenset()  # declared, even with no sample yet
    error: str = ""


class Instance(msgspec.Struct):
    url: str
    up_s: float | None  # since its start: what its counters cover; None when it failed
    error: str


class Freshness(msgspec.Struct):
    newest_event_age_s: float | None  # None: no event_time committed since the start
    last_load_age_s: float | None  # None: no load committed since the start
    lag_s: float | None  # None: no instance consumes


class Balance(msgspec.Struct):
    """One target's events since the start, from the main queue; None: not counted."""

    loaded: int | None
    dead_lettered: int | None
    handed_off: int | None
    dropped: int | None
    unaccounted: int | None  # accepted - settled - held
    verdict: Verdict
    detail: str


class QueueState(msgspec.Struct):
    """Messages (not events) a queue holds, read live; ``error`` when it could not be."""

    visible: int | None = None
    in_flight: int | None = None
    dead_letters: int | None = None  # on its dead-letter queue; None: it has none
    error: str = ""
    oldest_age_s: float | None = None  # None: not known (SQS without CloudWatch)


class Completeness(msgspec.Struct):
    accepted: int | None
    held: int | None  # events in messages received and not yet settled
    received_again: int | None  # redelivered messages
    retry_settled: int | None  # events settled from the secondary's retry queue
    queues: dict[str, QueueState]
    targets: dict[str, Balance]


class Cost(msgspec.Struct):
    requests: dict[str, dict[str, int]]  # service -> operation -> requests since the start
    total: int | None
    per_million_events: float | None  # per million accepted events


class Report(msgspec.Struct):
    at: float  # Unix time
    instances: list[Instance]
    freshness: dict[str, Freshness]  # by target; empty when no instance answered
    completeness: Completeness
    cost: Cost
    errors: list[str]


def parse(url: str, text: str) -> Scrape:
    """Raises ``ValueError`` unless ``text`` is an afpipe instance's Prometheus text."""
    try:
        families = list(text_string_to_metric_families(text))
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        raise ValueError(f"not Prometheus text ({exc})") from exc
    names = frozenset(family.name for family in families)
    if "afpipe_events_accepted" not in names:
        raise ValueError("no afpipe_events_accepted_total: not an afpipe instance's /metrics")
    samples = tuple(
        (sample.name, dict(sample.labels), float(sample.value))
        for family in families
        for sample in family.samples
    )
    for name, _, value in samples:
        if name.startswith("afpipe_") and not math.isfinite(value):
            raise ValueError(f"{name} is {value}: not a count or a time")
    return Scrape(url, samples, names)


class Numbers:
    """The answering instances' samples together: counters summed, timestamps the newest."""

    def __init__(self, scrapes: Sequence[Scrape]) -> None:
        self.samples = [sample for scrape in scrapes for sample in scrape.samples]

    def _values(self, name: str, labels: Mapping[str, str]) -> list[float]:
        return [
            value
            for found, have, value in self.samples
            if found == name and all(have.get(k) == v for k, v in labels.items())
        ]

    def total(self, name: str, **labels: str) -> int:
        return round(sum(self._values(name, labels)))

    def newest(self, name: str, **labels: str) -> float | None:
        return max(self._values(name, labels), default=None)


def build(
    scrapes: Sequence[Scrape],
    queues: Mapping[str, QueueSize | str],
    targets: Sequence[str],
    now: float,
) -> Report:
    """The report from the instances' metrics and the queues' sizes (or why not read)."""
    answered = [scrape for scrape in scrapes if not scrape.error]
    numbers = Numbers(answered)
    states = {name: _queue_state(size) for name, size in queues.items()}
    completeness = _completeness(scrapes, numbers, states, targets)
    errors = [f"{s.url}: {s.error}" for s in scrapes if s.error]
    errors += [f"{name} queue: {state.error}" for name, state in states.items() if state.error]
    return Report(
        at=now,
        instances=[_instance(scrape, now) for scrape in scrapes],
        freshness={t: _freshness(numbers, t, now) for t in targets} if answered else {},
        completeness=completeness,
        cost=_cost(numbers, completeness.accepted if answered else None),
        errors=errors,
    )


def _instance(scrape: Scrape, now: float) -> Instance:
    if scrape.error:
        return Instance(scrape.url, None, scrape.error)
    started = Numbers([scrape]).newest("process_start_time_seconds")
    return Instance(scrape.url, None if started is None else max(0.0, now - started), "")


def _age(numbers: Numbers, name: str, target: str, now: float) -> float | None:
    moment = numbers.newest(f"afpipe_{name}_timestamp_seconds", target=target)
    return None if not moment else max(0.0, now - moment)  # unset or 0: never


def _freshness(numbers: Numbers, target: str, now: float) -> Freshness:
    # The secondary loads from the main queue and from its own retry queue.
    queues = ["main"] if target == "primary" else ["main", "secondary_retry"]
    lags = [numbers.newest("afpipe_lag_seconds", queue=q) for q in queues]
    known = [lag for lag in lags if lag is not None]
    return Freshness(
        newest_event_age_s=_age(numbers, "newest_loaded_event", target, now),
        last_load_age_s=_age(numbers, "last_load", target, now),
        lag_s=max(known) if known else None,
    )


def _queue_state(size: QueueSize | str) -> QueueState:
    if isinstance(size, str):
        return QueueState(error=size)
    return QueueState(size.visible, size.in_flight, size.dead_letters, "", size.oldest_age_s)


def _completeness(
    scrapes: Sequence[Scrape],
    numbers: Numbers,
    states: Mapping[str, QueueState],
    targets: Sequence[str],
) -> Completeness:
    answered = [scrape for scrape in scrapes if not scrape.error]
    counted = bool(answered) and all(scrape.families >= _ACCOUNTING for scrape in answered)
    accepted = numbers.total("afpipe_events_accepted_total") if answered else None
    held = numbers.total("afpipe_events_held", queue="main") if counted else None
    again = numbers.total("afpipe_messages_received_again_total", queue="main")
    why = _why_unknown(len(scrapes), len(answered), counted)
    queued = _queued_messages(states.get("main"), numbers)
    return Completeness(
        accepted=accepted,
        held=held,
        received_again=again if counted else None,
        retry_settled=_retry_settled(numbers, states) if counted else None,
        queues=dict(states),
        targets={t: _balance(numbers, t, accepted, held, queued, why) for t in targets},
    )


def _retry_settled(numbers: Numbers, states: Mapping[str, QueueState]) -> int | None:
    """What the secondary loaded (or dead-lettered) from its retry queue: the other
    side of what was handed off to it; None without a retry queue."""
    if "secondary_retry" not in states:
        return None
    return numbers.total("afpipe_events_settled_total", queue="secondary_retry")


_ACCOUNTING = frozenset(
    {"afpipe_events_settled", "afpipe_events_held", "afpipe_messages_received_again"}
)


def _why_unknown(instances: int, answered: int, counted: bool) -> str:
    """Why no balance can be drawn; empty when one can."""
    if not answered:
        return "no instance answered"
    if answered < instances:  # a pair's halves settle each other's events
        return f"{instances - answered} of {instances} instances did not answer"
    if not counted:
        return "the instance exports no afpipe_events_settled_total (an older afpipe)"
    return ""


def _queued_messages(main: QueueState | None, numbers: Numbers) -> int | None:
    """Messages on the main queue that may hold events not yet counted settled or held:
    the visible ones, and those in flight that no answering instance holds (another
    consumer's, or a crashed one's until their visibility timeout)."""
    if main is None or main.visible is None or main.in_flight is None:
        return None
    ours = numbers.total("afpipe_messages_in_flight", queue="main")
    return main.visible + max(0, main.in_flight - ours)


def _balance(
    numbers: Numbers,
    target: str,
    accepted: int | None,
    held: int | None,
    queued: int | None,
    why: str,
) -> Balance:
    """accepted = settled + held + the events of the messages still queued (each at
    least one): exact once the queue is empty, bounded by what it holds until then."""
    settled: dict[str, int] = {}
    if held is not None:
        for outcome in OUTCOMES:
            labels = {"queue": "main", "target": target, "outcome": outcome}
            settled[outcome] = numbers.total("afpipe_events_settled_total", **labels)
    balance = Balance(
        loaded=settled.get("loaded"),
        dead_lettered=settled.get("dead_lettered"),
        handed_off=settled.get("handed_off"),
        dropped=settled.get("dropped"),
        unaccounted=None,
        verdict="unknown",
        detail=f"not known: {why}",
    )
    if why or accepted is None or held is None:
        return balance
    balance.unaccounted = accepted - sum(settled.values()) - held
    balance.verdict, balance.detail = _verdict(balance.unaccounted, queued)
    return balance


def _verdict(unaccounted: int, queued: int | None) -> tuple[Verdict, str]:
    if unaccounted == 0:
        return "balanced", "balanced"
    if unaccounted < 0:  # settled events accepted before the start, or by another process
        return "over", f"{-unaccounted:,} more settled than accepted here"
    if queued is None:
        return "unknown", f"{unaccounted:,} not settled; the queue could not be read"
    if queued > 0:
        return "queued", f"{unaccounted:,} events still queued"
    return "unaccounted", f"{unaccounted:,} events unaccounted"


def _cost(numbers: Numbers, accepted: int | None) -> Cost:
    if accepted is None:
        return Cost({}, None, None)
    requests: dict[str, dict[str, int]] = {}
    for name, labels, value in numbers.samples:
        if name == "afpipe_aws_requests_total":
            service = requests.setdefault(labels.get("service", "?"), {})
            operation = labels.get("operation", "?")
            service[operation] = service.get(operation, 0) + round(value)
    total = sum(sum(operations.values()) for operations in requests.values())
    return Cost(requests, total, total / accepted * 1e6 if accepted else None)
