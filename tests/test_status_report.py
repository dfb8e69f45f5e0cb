"""afpipe status's report from /metrics text and queue sizes, its screen and its JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from afpipe import metrics
from afpipe.queue.base import QueueSize
from afpipe.status.report import Scrape, build, parse
from afpipe.status.text import SCREEN_COLUMNS, SCREEN_ROWS, age, render, to_json

NOW = 1_700_000_000.0
EMPTY = QueueSize(visible=0, in_flight=0, dead_letters=0)


def exposition(
    *,
    accepted: int,
    settled: Mapping[tuple[str, str], int] | None = None,  # (target, outcome) -> events
    held: int = 0,
    messages_held: int = 0,
    timestamps: Mapping[str, float] | None = None,  # "last_load:primary" -> Unix time
    aws: Mapping[tuple[str, str], int] | None = None,  # (service, operation) -> requests
    started: float = NOW - 180,
) -> str:
    """An instance's /metrics as prometheus_client writes them (families declared even
    with no sample, as a labelled metric never used is)."""
    settled, timestamps, aws = settled or {}, timestamps or {}, aws or {}
    lines = [
        "# TYPE process_start_time_seconds gauge",
        f"process_start_time_seconds {started}",
        "# TYPE afpipe_events_accepted_total counter",
        f"afpipe_events_accepted_total {accepted}.0",
        "# TYPE afpipe_events_settled_total counter",
        *(
            f'afpipe_events_settled_total{{outcome="{o}",queue="main",target="{t}"}} {n}.0'
            for (t, o), n in settled.items()
        ),
        "# TYPE afpipe_events_held gauge",
        f'afpipe_events_held{{queue="main"}} {held}.0',
        "# TYPE afpipe_messages_received_again_total counter",
        "# TYPE afpipe_messages_in_flight gauge",
        f'afpipe_messages_in_flight{{queue="main"}} {messages_held}.0',
        "# TYPE afpipe_lag_seconds gauge",
        'afpipe_lag_seconds{queue="main"} 2.5',
        "# TYPE afpipe_aws_requests_total counter",
        *(
            f'afpipe_aws_requests_total{{operation="{op}",service="{svc}"}} {n}.0'
            for (svc, op), n in aws.items()
        ),
    ]
    for key, moment in timestamps.items():
        name, target = key.split(":")
        lines.append(f'afpipe_{name}_timestamp_seconds{{target="{target}"}} {moment}')
    return "\n".join(lines) + "\n"


def one(url: str = "http://a/metrics", **numbers: Any) -> Scrape:
    return parse(url, exposition(**numbers))


def test_two_instances_are_summed_and_their_timestamps_are_the_newest() -> None:
    # A pair behind a balancer: b settles some of what a accepted.
    a = one(
        "http://a/metrics",
        accepted=10,
        settled={("primary", "loaded"): 4},
        timestamps={"last_load:primary": NOW - 60, "newest_loaded_event:primary": NOW - 70},
    )
    b = one(
        "http://b/metrics",
        accepted=5,
        settled={("primary", "loaded"): 9, ("primary", "dead_lettered"): 1},
        held=1,
        messages_held=1,
        timestamps={"last_load:primary": NOW - 3, "newest_loaded_event:primary": NOW - 200},
        started=NOW - 7200,
    )
    report = build([a, b], {"main": QueueSize(visible=0, in_flight=1)}, ["primary"], NOW)
    assert report.completeness.accepted == 15
    assert report.completeness.held == 1
    primary = report.completeness.targets["primary"]
    assert (primary.loaded, primary.dead_lettered, primary.unaccounted) == (13, 1, 0)
    assert primary.verdict == "balanced"
    fresh = report.freshness["primary"]
    assert (fresh.last_load_age_s, fresh.newest_event_age_s, fresh.lag_s) == (3, 70, 2.5)
    assert [i.up_s for i in report.instances] == [180, 7200]
    screen = render(report)
    assert "  primary          1 min          3 s         2 s" in screen
    assert "13 loaded, 1 dead-lettered: balanced" in screen
    assert "http://b/metrics  up 2 h" in screen


def test_a_target_that_never_loaded_says_never() -> None:
    scrape = one(accepted=3, settled={("primary", "loaded"): 3})
    report = build([scrape], {"main": EMPTY}, ["primary", "secondary"], NOW)
    secondary = report.freshness["secondary"]
    assert (secondary.last_load_age_s, secondary.newest_event_age_s) == (None, None)
    assert "  secondary        never          never       2 s" in render(report)
    # Nothing settled for the secondary yet: its three events are not accounted for.
    assert report.completeness.targets["secondary"].detail == "3 events unaccounted"


@pytest.mark.parametrize(
    ("queue", "verdict", "detail"),
    [
        (QueueSize(visible=1, in_flight=0), "queued", "2 events still queued"),
        (QueueSize(visible=0, in_flight=2), "queued", "2 events still queued"),
        # The one message in flight is the instance's own: its event counts as held.
        (QueueSize(visible=0, in_flight=1), "unaccounted", "2 events unaccounted"),
        (EMPTY, "unaccounted", "2 events unaccounted"),
        ("AccessDenied", "unknown", "2 not settled; the queue could not be read"),
    ],
)
def test_unaccounted_events_are_still_queued_only_while_the_queue_holds_messages(
    queue: QueueSize | str, verdict: str, detail: str
) -> None:
    scrape = one(accepted=10, settled={("primary", "loaded"): 7}, held=1, messages_held=1)
    balance = build([scrape], {"main": queue}, ["primary"], NOW).completeness.targets["primary"]
    assert (balance.unaccounted, balance.verdict, balance.detail) == (2, verdict, detail)


def test_more_settled_than_accepted_is_not_called_balanced() -> None:
    # After a restart the queue still held messages accepted by the process before.
    scrape = one(accepted=2, settled={("primary", "loaded"): 5})
    balance = build([scrape], {"main": EMPTY}, ["primary"], NOW).completeness.targets["primary"]
    assert (balance.unaccounted, balance.verdict) == (-3, "over")


def test_the_secondary_balances_with_what_it_handed_off_or_dropped() -> None:
    settled = {
        ("primary", "loaded"): 10,
        ("secondary", "loaded"): 6,
        ("secondary", "handed_off"): 3,
        ("secondary", "dropped"): 1,
    }
    report = build(
        [one(accepted=10, settled=settled)], {"main": EMPTY}, ["primary", "secondary"], NOW
    )
    assert [b.verdict for b in report.completeness.targets.values()] == ["balanced"] * 2
    assert "6 loaded, 3 handed off, 1 dropped, 0 dead-lettered: balanced" in render(report)


def test_the_retry_queue_shows_what_was_settled_from_it() -> None:
    """The other side of the hand-offs: what the secondary took from its retry queue."""
    text = exposition(
        accepted=3, settled={("primary", "loaded"): 3, ("secondary", "handed_off"): 3}
    )
    retry = 'outcome="loaded",queue="secondary_retry",target="secondary"'
    text += f"afpipe_events_settled_total{{{retry}}} 2.0\n"
    queues = {"main": EMPTY, "secondary_retry": QueueSize(visible=1, in_flight=0)}
    report = build([parse("http://a/metrics", text)], queues, ["primary", "secondary"], NOW)
    assert report.completeness.retry_settled == 2
    assert "1 messages visible, 0 in flight; 2 events settled" in render(report)


def test_a_queue_s_oldest_message_age_is_shown_where_known() -> None:
    """The embedded queue's, or SQS's from CloudWatch (AFPIPE_SQS_AGE_FROM_CLOUDWATCH)."""
    main = QueueSize(visible=3, in_flight=1, dead_letters=0, oldest_age_s=125.0)
    report = build([one(accepted=0)], {"main": main}, ["primary"], NOW)
    assert report.completeness.queues["main"].oldest_age_s == 125.0
    assert "3 messages visible, 1 in flight, oldest 2 min;" in render(report)


def test_cost_is_per_service_and_operation_and_per_million_accepted_events() -> None:
    aws = {
        ("sqs", "ReceiveMessage"): 30,
        ("sqs", "SendMessageBatch"): 10,
        ("redshift-data", "BatchExecuteStatement"): 20,
    }
    report = build([one(accepted=2000, aws=aws)], {"main": EMPTY}, ["primary"], NOW)
    assert report.cost.requests == {
        "sqs": {"ReceiveMessage": 30, "SendMessageBatch": 10},
        "redshift-data": {"BatchExecuteStatement": 20},
    }
    assert (report.cost.total, report.cost.per_million_events) == (60, 30_000)
    lines = render(report).splitlines()
    assert lines[-4].split() == ["sqs", "ReceiveMessage", "30", "15,000"]
    assert lines[-1].split() == ["total", "60", "30,000"]


def test_no_accepted_events_has_no_cost_per_event() -> None:
    report = build([one(accepted=0, aws={("sqs", "ReceiveMessage"): 5})], {}, ["primary"], NOW)
    assert report.cost.per_million_events is None
    assert render(report).splitlines()[-1].split() == ["total", "5", "-"]


def test_the_screen_fits_80_by_24_folding_operations_it_has_no_room_for() -> None:
    aws = {("sqs", f"Operation{n:02d}"): 100 + n for n in range(20)}
    scrapes = [
        one(f"http://instance-{n}.example.internal:3000/metrics", accepted=50, aws=aws)
        for n in range(2)
    ]
    queues = {"main": QueueSize(visible=1, in_flight=0), "secondary_retry": EMPTY}
    report = build(scrapes, queues, ["primary", "secondary"], NOW)
    lines = render(report).splitlines()
    assert len(lines) == SCREEN_ROWS
    assert max(len(line) for line in lines) <= SCREEN_COLUMNS
    shown = [line.split() for line in lines if "Operation" in line]
    [other] = [line.split() for line in lines if line.startswith("  other ")]
    assert other[1:3] == [f"({20 - len(shown)}", "operations)"]
    requests = [int(row[2].replace(",", "")) for row in shown] + [int(other[3].replace(",", ""))]
    assert sum(requests) == report.cost.total == 2 * sum(aws.values())
    assert lines[-1].split()[:2] == ["total", f"{report.cost.total:,}"]


def test_json_has_the_same_numbers_under_stable_keys() -> None:
    scrape = one(accepted=4, settled={("primary", "loaded"): 4}, aws={("sqs", "ReceiveMessage"): 2})
    document = json.loads(to_json(build([scrape], {"main": EMPTY}, ["primary"], NOW)))
    assert list(document) == ["at", "instances", "freshness", "completeness", "cost", "errors"]
    assert document["instances"] == [{"url": "http://a/metrics", "up_s": 180.0, "error": ""}]
    assert document["freshness"]["primary"] == {
        "newest_event_age_s": None,
        "last_load_age_s": None,
        "lag_s": 2.5,
    }
    completeness = document["completeness"]
    assert list(completeness) == [
        "accepted",
        "held",
        "received_again",
        "retry_settled",
        "queues",
        "targets",
    ]
    assert completeness["retry_settled"] is None  # no retry queue
    assert completeness["queues"]["main"] == {
        "visible": 0,
        "in_flight": 0,
        "dead_letters": 0,
        "error": "",
        "oldest_age_s": None,
    }
    assert completeness["targets"]["primary"] == {
        "loaded": 4,
        "dead_lettered": 0,
        "handed_off": 0,
        "dropped": 0,
        "unaccounted": 0,
        "verdict": "balanced",
        "detail": "balanced",
    }
    assert document["cost"] == {
        "requests": {"sqs": {"ReceiveMessage": 2}},
        "total": 2,
        "per_million_events": 500_000.0,
    }
    assert document["errors"] == []


def test_an_instance_without_the_accounting_gets_no_verdict() -> None:
    text = exposition(accepted=4).replace("afpipe_events_settled", "afpipe_other")
    report = build([parse("http://old/metrics", text)], {"main": EMPTY}, ["primary"], NOW)
    balance = report.completeness.targets["primary"]
    assert (balance.loaded, balance.unaccounted, balance.verdict) == (None, None, "unknown")
    assert "exports no afpipe_events_settled_total" in balance.detail
    assert report.completeness.accepted == 4


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("<html><body>Welcome</body></html>\n", "not Prometheus text"),
        ('{"status": "ok"}\n', "not Prometheus text"),
        ("# TYPE up gauge\nup 1\n", "not an afpipe instance"),
        ("", "not an afpipe instance"),
        (
            "# TYPE afpipe_events_accepted_total counter\nafpipe_events_accepted_total NaN\n",
            "is nan",
        ),
    ],
)
def test_what_is_not_an_afpipe_instances_metrics_is_refused(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse("http://x/metrics", text)


def test_the_process_own_exposition_has_every_family_status_reads() -> None:
    scrape = parse("self", metrics.exposition()[0].decode())
    needed = {
        "afpipe_events_accepted",
        "afpipe_events_settled",
        "afpipe_events_held",
        "afpipe_messages_received_again",
        "afpipe_messages_in_flight",
        "afpipe_lag_seconds",
        "afpipe_last_load_timestamp_seconds",
        "afpipe_newest_loaded_event_timestamp_seconds",
        "afpipe_aws_requests",
        "process_start_time_seconds",
    }
    assert needed <= scrape.families


def test_ages_are_humanised() -> None:
    assert [age(s) for s in (0.4, 3, 59.9, 240, 7300, 3 * 86400)] == [
        "0 s",
        "3 s",
        "59 s",
        "4 min",
        "2 h",
        "3 d",
    ]
    assert age(None) == "never"
