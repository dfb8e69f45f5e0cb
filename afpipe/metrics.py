"""Prometheus metrics (prometheus-client), process-wide as Prometheus expects.

Only the metrics themselves: the wrappers that count queue and warehouse calls at
the seams live in ``afpipe.instrumented``, so the backends may count here (e.g.
``STAGED_LOADS``) without this module depending on them.

Each gauge's ``multiprocess_mode`` says how an ``AFPIPE_WORKERS`` group combines
its workers' values (``afpipe.group_metrics``; ignored by a process alone): what a
worker holds is summed over the living workers (``livesum``); the lag is the
worst living worker's (``livemax``); a moment (a load, the newest event) is the
latest any worker saw (``max``); a sampled queue size is the most recent sample
of the living workers (``livemostrecent``): every worker samples the same queue,
so a sum would count it N times and a max would keep a drained backlog until
every worker sampled again.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from afpipe import group_metrics
from afpipe.observed import Observed

HTTP_REQUESTS = Counter("afpipe_http_requests", "HTTP requests answered", ["route", "status"])
HTTP_SECONDS = Histogram(
    "afpipe_http_request_seconds",
    "Time to answer an HTTP request (for the webhook: the ack, once the event is durable)",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10),
)
EVENTS_ACCEPTED = Counter("afpipe_events_accepted", "Events acknowledged to the sender (durable)")
EVENTS_REJECTED = Counter("afpipe_events_rejected", "Webhook requests not accepted", ["reason"])
QUEUE_OPERATIONS = Counter("afpipe_queue_operations", "Queue calls", ["queue", "operation"])
QUEUE_ERRORS = Counter("afpipe_queue_errors", "Failed queue calls", ["queue", "operation"])
MESSAGES_IN_FLIGHT = Gauge(
    "afpipe_messages_in_flight", "Queue messages held", ["queue"], multiprocess_mode="livesum"
)
CHANNEL_OCCUPANCY = Gauge(
    "afpipe_channel_messages",
    "Messages between pollers and writers",
    ["queue"],
    multiprocess_mode="livesum",
)
PRODUCER_PENDING = Gauge(
    "afpipe_producer_pending_events", "Events waiting for the queue", multiprocess_mode="livesum"
)
BATCHES = Counter("afpipe_batches_loaded", "Batches committed", ["target"])
ROWS = Counter("afpipe_rows_loaded", "Rows newly inserted", ["target"])
STAGED_LOADS = Counter(
    "afpipe_staged_loads", "Load transactions sent through S3 staging and COPY", ["target"]
)
LOAD_FAILURES = Counter("afpipe_load_failures", "Failed load attempts", ["target"])
LOAD_SECONDS = Histogram(
    "afpipe_load_seconds",
    "Time to commit one batch",
    ["target"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
RETRIES = Counter("afpipe_retries", "Retries by cause", ["cause"])
DEAD_LETTERED = Counter("afpipe_dead_lettered", "Dead-lettered messages or events", ["kind"])
SECONDARY_HANDED_OFF = Counter(
    "afpipe_secondary_handed_off_events", "Events sent to the secondary retry queue"
)
SECONDARY_DROPPED = Counter(
    "afpipe_secondary_dropped_events", "Events the secondary missed with no retry queue"
)
SECONDARY_BACKLOG = Gauge(
    "afpipe_secondary_backlog_events",
    "Events handed off and not yet loaded by this process",
    multiprocess_mode="livesum",
)
QUEUE_MESSAGES = Gauge(
    "afpipe_queue_messages",
    "Messages a queue holds, sampled (state: visible, in_flight, dead_letters)",
    ["queue", "state"],
    multiprocess_mode="livemostrecent",
)
QUEUE_OLDEST_AGE = Gauge(
    "afpipe_queue_oldest_message_age_seconds",
    "Age of a queue's oldest message, sampled (SQS: from CloudWatch, if enabled)",
    ["queue"],
    multiprocess_mode="livemostrecent",
)
LAST_LOAD = Gauge(
    "afpipe_last_load_timestamp_seconds",
    "When a load last committed (Unix time)",
    ["target"],
    multiprocess_mode="max",
)
NEWEST_LOADED_EVENT = Gauge(
    "afpipe_newest_loaded_event_timestamp_seconds",
    "The newest event_time among the events this process committed (Unix time)",
    ["target"],
    multiprocess_mode="max",
)
AWS_REQUESTS = Counter(
    "afpipe_aws_requests",
    "AWS API requests sent, every attempt (each is billed), by service and operation",
    ["service", "operation"],
)
EVENTS_SETTLED = Counter(
    "afpipe_events_settled",
    "Events that left a queue, once per target, by outcome (loaded, dead_lettered,"
    " handed_off, dropped): the accounting's other side of afpipe_events_accepted",
    ["queue", "target", "outcome"],
)
EVENTS_HELD = Gauge(
    "afpipe_events_held",
    "Events in messages received and not yet settled",
    ["queue"],
    multiprocess_mode="livesum",
)
RECEIVED_AGAIN = Counter(
    "afpipe_messages_received_again",
    "Messages received more than once (after a crash, a kill, a failed delete, a timeout)",
    ["queue"],
)
LAG_SECONDS = Gauge(
    "afpipe_lag_seconds",
    "Age of the oldest message received and not yet loaded",
    ["queue"],
    multiprocess_mode="livemax",
)

# In a worker group, the gauges read from functions are written, not read at scrape.
GROUP = group_metrics.in_group()
OBSERVED = Observed(written=GROUP)


def exposition() -> tuple[bytes, str]:
    """This process's metrics, or in a worker group the whole group's."""
    if GROUP:
        OBSERVED.refresh()  # this worker's values as of now; the others' within 1 s
        return group_metrics.exposition(), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


def _total(name: str) -> float:
    return sum(
        sample.value
        for family in REGISTRY.collect()
        for sample in family.samples
        if sample.name == name
    )


def summary() -> str:
    """One line for systemd's STATUS=: what came in, what landed, what is held."""
    accepted = _total("afpipe_events_accepted_total")
    loaded = _total("afpipe_rows_loaded_total")
    held = _total("afpipe_messages_in_flight")
    return f"accepted {accepted:.0f} events, loaded {loaded:.0f} rows, holding {held:.0f} messages"
