"""The S3 side of staged loads: put one object per COPY, delete it after.

An object lives only while its transaction runs: it is deleted when the
transaction ends, committed or failed, and also when the load is cancelled
(drain), briefly shielded like a statement's cancel. A delete that fails is
logged, not raised: the rows' fate does not depend on it, and a lifecycle
rule on the prefix expires what is left (also objects left by a crash).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import trio

from afpipe import drain
from afpipe.aws.s3 import S3Client
from afpipe.errors import AfpipeError
from afpipe.event import Row
from afpipe.warehouse.redshift import copy
from afpipe.warehouse.redshift.copy import Staging

logger = logging.getLogger("afpipe.redshift")

DELETE_TIMEOUT_S = 5.0  # a delete on drain must not hold shutdown for long
_PROBE_BODY = b"afpipe check: a probe of the staging prefix, deleted at once\n"


class Stager:
    """``async with stager.staged(rows) as key:`` COPY from ``staging.bucket``/``key``."""

    def __init__(self, s3: S3Client, staging: Staging) -> None:
        self.s3 = s3
        self.staging = staging

    @asynccontextmanager
    async def staged(self, rows: Sequence[Row]) -> AsyncIterator[str]:
        """PUT ``rows`` as one object; its key, deleted on exit."""
        body = await trio.to_thread.run_sync(copy.object_body, rows)  # gzip: off the loop
        key = copy.object_key(self.staging.prefix, datetime.now(UTC), str(uuid.uuid4()))
        await self.s3.put_object(self.staging.bucket, key, body, content_type="application/gzip")
        try:
            yield key
        finally:
            await self._delete_quietly(key)

    async def probe(self) -> str:
        """PUT and DELETE a small object under the prefix (``afpipe check``); its key."""
        key = f"{self.staging.prefix}afpipe-check/{uuid.uuid4()}.txt"
        await self.s3.put_object(self.staging.bucket, key, _PROBE_BODY, content_type="text/plain")
        await self.s3.delete_object(self.staging.bucket, key)
        return key

    async def _delete_quietly(self, key: str) -> None:
        problem = f"no answer within {DELETE_TIMEOUT_S} s"
        with drain.cleanup_scope(DELETE_TIMEOUT_S):
            try:
                await self.s3.delete_object(self.staging.bucket, key)
                return
            except AfpipeError as exc:
                problem = str(exc)
        logger.warning(
            "staged object s3://%s/%s not deleted (the lifecycle rule expires it): %s",
            self.staging.bucket,
            key,
            problem,
        )
