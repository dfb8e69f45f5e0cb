"""CloudWatch GetMetricData for an SQS queue's ApproximateAgeOfOldestMessage; no I/O.

SQS publishes the age only to CloudWatch (namespace ``AWS/SQS``, dimension
``QueueName``), one datapoint a minute, a few minutes late: we ask for the
last few minutes' maxima and keep the newest.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import msgspec

from afpipe.errors import TransientError

NAMESPACE = "AWS/SQS"
METRIC_NAME = "ApproximateAgeOfOldestMessage"
PERIOD_S = 60  # the metric's own resolution
WINDOW_S = 5 * 60  # SQS's datapoints arrive a few minutes late
QUERY_ID = "age"  # [a-z][a-zA-Z0-9_]*, as GetMetricData requires


class _Result(msgspec.Struct, frozen=True, rename="pascal"):
    id: str
    timestamps: list[float] = []
    values: list[float] = []


class _Answer(msgspec.Struct, frozen=True, rename="pascal"):
    metric_data_results: list[_Result] = []


def queue_name(queue_url: str) -> str:
    """The ``QueueName`` dimension: the last segment of the queue URL's path."""
    return urlsplit(queue_url).path.rstrip("/").rpartition("/")[2]


def age_request(name: str, now_s: float) -> dict[str, Any]:
    """GetMetricData's input: the queue's per-minute maximum over the last WINDOW_S.

    Times are epoch seconds (the JSON protocol's timestamps), on whole minutes as
    CloudWatch aligns them anyway; one metric requested (GetMetricData is billed
    per metric)."""
    end = int(now_s) // PERIOD_S * PERIOD_S + PERIOD_S
    metric = {
        "Namespace": NAMESPACE,
        "MetricName": METRIC_NAME,
        "Dimensions": [{"Name": "QueueName", "Value": name}],
    }
    return {
        "MetricDataQueries": [
            {
                "Id": QUERY_ID,
                "MetricStat": {"Metric": metric, "Period": PERIOD_S, "Stat": "Maximum"},
                "ReturnData": True,
            }
        ],
        "StartTime": end - WINDOW_S - PERIOD_S,
        "EndTime": end,
        "ScanBy": "TimestampDescending",
    }


def latest_value(result: dict[str, Any]) -> float | None:
    """The newest datapoint's value; None when CloudWatch has none in the window
    (SQS stops publishing for a queue idle for hours)."""
    try:
        answer = msgspec.convert(result, _Answer)
    except msgspec.ValidationError as exc:
        raise TransientError(
            f"unexpected GetMetricData answer: {exc}", code="InvalidResponse"
        ) from exc
    points = [
        (when, value)
        for found in answer.metric_data_results
        if found.id == QUERY_ID
        for when, value in zip(found.timestamps, found.values, strict=False)
    ]
    return max(points)[1] if points else None
