"""/metrics: every family is exposed and moves as events flow end to end."""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import trio
import trio.testing
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from afpipe.aws import AwsClient, CredentialCache, RetryPolicy, static_credentials
from afpipe.aws.service import sqs_service
from afpipe.instrumented import InstrumentedQueue, InstrumentedWarehouse
from tests.daemon import afpipe_process, wait_for_rows
from tests.events import from_payload
from tests.fakes import FakeQueue, FakeWarehouse
from tests.load import purchase
from tests.test_consumer import FAKE, body, consumer, payload

FAMILIES = {
    "afpipe_http_requests": "counter",
    "afpipe_http_request_seconds": "histogram",
    "afpipe_events_accepted": "counter",
    "afpipe_events_rejected": "counter",
    "afpipe_queue_operations": "counter",
    "afpipe_queue_errors": "counter",
    "afpipe_messages_in_flight": "gauge",
    "afpipe_channel_messages": "gauge",
    "afpipe_producer_pending_events": "gauge",
    "afpipe_batches_loaded": "counter",
    "afpipe_rows_loaded": "counter",
    "afpipe_load_failures": "counter",
    "afpipe_load_seconds": "histogram",
    "afpipe_retries": "counter",
    "afpipe_dead_lettered": "counter",
    "afpipe_secondary_handed_off_events": "counter",
    "afpipe_secondary_dropped_events": "counter",
    "afpipe_secondary_backlog_events": "gauge",
    "afpipe_lag_seconds": "gauge",
    "afpipe_last_load_timestamp_seconds": "gauge",
    "afpipe_newest_loaded_event_timestamp_seconds": "gauge",
    "afpipe_aws_requests": "counter",
    "afpipe_queue_messages": "gauge",
    "afpipe_queue_oldest_message_age_seconds": "gauge",
    "afpipe_events_settled": "counter",
    "afpipe_events_held": "gauge",
    "afpipe_messages_received_again": "counter",
}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_every_family_is_exposed_and_counts_move(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {"AFPIPE_BATCH_LINGER_MS": "50", "SECONDARY_REDSHIFT_ENABLED": "true"}
    with trio.fail_after(60):
        async with (
            afpipe_process(data_dir, env) as daemon,
            httpx.AsyncClient(base_url=daemon.url, timeout=30) as client,
        ):
            before = (await client.get("/metrics")).text
            families = {f.name: f.type for f in text_string_to_metric_families(before)}
            assert {n: families.get(n) for n in FAMILIES} == FAMILIES
            # Counts a rate must see rise from 0 exist at 0 before anything happened.
            at_start = samples(before)
            for name, labels in [
                (
                    "afpipe_http_requests_total",
                    (("route", "/webhook/appsflyer"), ("status", "503")),
                ),
                ("afpipe_events_rejected_total", (("reason", "queue_unavailable"),)),
                ("afpipe_queue_errors_total", (("operation", "send"), ("queue", "main"))),
                ("afpipe_dead_lettered_total", (("kind", "event"),)),
            ]:
                assert at_start[(name, labels)] == 0, name
            ok = await client.post("/webhook/appsflyer", json=[purchase(1), purchase(2)])
            bad = await client.post("/webhook/appsflyer", content=b"{nope")
            assert (ok.status_code, bad.status_code) == (200, 400)
            await wait_for_rows(data_dir, 2)
            await trio.sleep(0.3)  # let the writer record the batch
            after = samples((await client.get("/metrics")).text)
            daemon.signal(signal.SIGTERM)
            assert await daemon.wait() == 0
    assert after[("afpipe_events_accepted_total", ())] == 2
    assert after[("afpipe_events_rejected_total", (("reason", "bad_request"),))] == 1
    assert after[("afpipe_rows_loaded_total", (("target", "primary"),))] == 2
    assert after[("afpipe_rows_loaded_total", (("target", "secondary"),))] == 2
    for target in ("primary", "secondary"):  # the accounting balances: 2 in, 2 out each
        settled = (("outcome", "loaded"), ("queue", "main"), ("target", target))
        assert after[("afpipe_events_settled_total", settled)] == 2
    assert after[("afpipe_events_held", (("queue", "main"),))] == 0
    assert after[("afpipe_batches_loaded_total", (("target", "primary"),))] >= 1
    assert after[("afpipe_load_seconds_count", (("target", "primary"),))] >= 1
    assert after[("afpipe_queue_operations_total", (("operation", "send"), ("queue", "main")))] >= 1
    route = (("route", "/webhook/appsflyer"), ("status", "200"))
    assert after[("afpipe_http_requests_total", route)] == 1
    webhook = (("route", "/webhook/appsflyer"),)
    assert after[("afpipe_http_request_seconds_count", webhook)] == 2  # the 400 too


async def test_every_queue_metric_labels_the_queue_alike(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Calls were labelled "main", the consumer's gauges by the queue's own name (its
    URL on SQS): one queue showed as two. The seam's label is now its name."""
    fake = FakeQueue()
    fake.name = "https://sqs.test/123456789012/labels-test"  # as an SqsQueue's: its URL
    queue = InstrumentedQueue(fake, "main")
    with trio.fail_after(60):
        async with consumer(queue, FakeWarehouse(), FAKE):
            fake.put(body(payload(1)))
            while fake.remaining():
                await trio.sleep(0.1)
    families = {
        family.name: {sample.labels.get("queue") for sample in family.samples}
        for family in REGISTRY.collect()
    }
    for name in ("afpipe_queue_operations", "afpipe_messages_in_flight", "afpipe_lag_seconds"):
        assert "main" in families[name], name
        assert fake.name not in families[name], name


def gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def test_a_load_tells_how_fresh_the_warehouse_is() -> None:
    """The time of the last commit, and the newest event_time committed (never a
    rejected event's, never going back), per target."""
    newest = from_payload({"event_time": "2031-05-06 07:08:09.500", "n": 1})
    older = from_payload({"event_time": "2031-05-06 07:00:00.000", "n": 2})
    refused = from_payload({"event_time": "2031-12-31 23:59:59.000", "n": 3})
    warehouse = InstrumentedWarehouse(
        FakeWarehouse(reject={refused.id: "bad row"}, name="freshness-test")
    )
    before = time.time()
    result = await warehouse.load([older, newest, refused])
    after = time.time()
    assert result.loaded == 2
    last = gauge("afpipe_last_load_timestamp_seconds", target="freshness-test")
    assert last is not None and before <= last <= after
    expected = datetime(2031, 5, 6, 7, 8, 9, 500_000, tzinfo=UTC).timestamp()
    assert (
        gauge("afpipe_newest_loaded_event_timestamp_seconds", target="freshness-test") == expected
    )
    await warehouse.load([older])  # an older batch later: the newest stays
    assert (
        gauge("afpipe_newest_loaded_event_timestamp_seconds", target="freshness-test") == expected
    )


async def test_every_aws_request_is_counted_by_service_and_operation() -> None:
    """Cost is per request: every attempt counts, retries included."""
    answers = [
        httpx.Response(500, json={"__type": "InternalFailure"}),
        httpx.Response(200, json={}),
    ]

    def answer(request: httpx.Request) -> httpx.Response:
        return answers.pop(0)

    service = sqs_service("us-east-1", {"AWS_ENDPOINT_URL": "https://aws.test"})
    sample = ("afpipe_aws_requests_total", {"service": "sqs", "operation": "CountTest"})
    start = REGISTRY.get_sample_value(*sample) or 0.0
    async with AwsClient(
        credentials=CredentialCache(static_credentials("AKID", "SECRET")),
        policy=RetryPolicy(base_delay_s=0.001, max_delay_s=0.01),
        transport=httpx.MockTransport(answer),
    ) as aws:
        await aws.call(service, "CountTest", {})
    assert REGISTRY.get_sample_value(*sample) == start + 2
