"""An SQS queue's oldest message age, read from CloudWatch at most once a minute.

SQS tells only CloudWatch (``ApproximateAgeOfOldestMessage``), so with
AFPIPE_SQS_AGE_FROM_CLOUDWATCH each sampled SQS queue asks CloudWatch for it:
one GetMetricData (one metric) per queue per minute, the metric's resolution,
however often the counts are sampled. The age is a nicety: no CloudWatch
failure (AccessDenied included, which elsewhere stops afpipe) ever reaches the
caller. It is logged once, until CloudWatch answers again, and the age is None.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import trio

from afpipe.aws import cloudwatch_api
from afpipe.aws.client import AwsClient
from afpipe.aws.service import AwsService
from afpipe.errors import AccessDenied, AfpipeError, TransientError

logger = logging.getLogger("afpipe.sqs")

READ_EVERY_S = 60.0  # CloudWatch has one datapoint a minute
READ_TIMEOUT_S = 5.0  # retries included; the counts sampled with it wait no longer


class CloudWatchAge:
    """``await age.get(empty=...)``: the age CloudWatch last had, in seconds, or None."""

    def __init__(
        self,
        aws: AwsClient,
        service: AwsService,
        queue_url: str,
        *,
        every_s: float = READ_EVERY_S,
        timeout_s: float = READ_TIMEOUT_S,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.queue_name = cloudwatch_api.queue_name(queue_url)
        self._aws = aws
        self._service = service
        self._every_s = every_s
        self._timeout_s = timeout_s
        self._wall = wall
        self._next_read_s = -math.inf  # trio's clock
        self._age_s: float | None = None
        self._unknown_because = ""  # logged once; cleared when CloudWatch answers again

    async def get(self, *, empty: bool) -> float | None:
        """The last age read; read again if a minute has passed. ``empty``: the
        queue's counts say it holds nothing, so no datapoint means an age of 0
        (SQS stops publishing for an idle queue)."""
        now = trio.current_time()
        if now < self._next_read_s:
            return self._age_s
        self._next_read_s = now + self._every_s
        try:
            age_s = await self._read()
            if age_s is None and not empty:
                raise TransientError(
                    f"CloudWatch has no datapoint for the last {cloudwatch_api.WINDOW_S} s"
                )
        except AfpipeError as exc:  # ConfigError (AccessDenied) too: never fatal here
            self._age_s = None
            self._unknown(exc)
        else:
            self._age_s = 0.0 if age_s is None else age_s
            if self._unknown_because:
                logger.info("oldest message age of %s known again", self.queue_name)
                self._unknown_because = ""
        return self._age_s

    async def _read(self) -> float | None:
        request = cloudwatch_api.age_request(self.queue_name, self._wall())
        with trio.move_on_after(self._timeout_s):
            result = await self._aws.call(self._service, "GetMetricData", request)
            return cloudwatch_api.latest_value(result)
        raise TransientError(f"CloudWatch gave no answer within {self._timeout_s:g} s")

    def _unknown(self, exc: AfpipeError) -> None:
        if self._unknown_because:
            logger.debug("oldest message age of %s still unknown: %s", self.queue_name, exc)
            return
        self._unknown_because = str(exc) or type(exc).__name__
        hint = ""
        if isinstance(exc, AccessDenied):
            hint = (
                "; allow cloudwatch:GetMetricData (README, IAM) or set"
                " AFPIPE_SQS_AGE_FROM_CLOUDWATCH=false"
            )
        logger.warning(
            "oldest message age of %s unknown (afpipe_queue_oldest_message_age_seconds is"
            " not set, or keeps its last value; tried every %g s, not logged again): %s%s",
            self.queue_name,
            self._every_s,
            self._unknown_because,
            hint,
        )
