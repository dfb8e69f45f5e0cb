"""The Data API's batch limit: which one applies, learnt from its answers.

AWS documents the Data API's 100 KB limit per SQL text, not whether the texts
of one BatchExecuteStatement also count together. A warehouse starts with the
per-text reading (up to 40 texts of 100 KB a call, so ~39 x 80 events a
call) and learns which applies from the first call over 100 KB in all:
taken, per-text is confirmed (info); refused with the size ValidationException,
the total limit applies (warning) and the refused call's rows are re-planned
at once, never bisected nor dead-lettered. What is learnt lasts as long as the
``BatchLimit`` (one per warehouse object); ``afpipe check`` reports it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from afpipe.errors import AfpipeError, PermanentError
from afpipe.warehouse.redshift import sql

logger = logging.getLogger("afpipe.redshift")

# BatchLimit.learnt once the Data API's answers told which applies:
PER_TEXT = "per_text"  # 100 KB for each SQL text, up to 40 texts a call
TOTAL = "total"  # 100 KB for all the SQL texts of a call together

# The Data API's answer to a call whose SQL is too large ("Cannot process query
# string larger than 100kB", a ValidationException), or a size refusal in front of it.
_SIZE_REFUSAL = re.compile(r"larger than|too large|too long|exceed", re.I)


def refused_for_total_size(sqls: Sequence[str], exc: AfpipeError) -> bool:
    """Whether ``exc``, the Data API's refusal of a BatchExecuteStatement of
    ``sqls`` (more than 100 KB in all, each text within 100 KB), is to be taken
    for the 100 KB limit counting the texts together: any refusal that speaks of
    size, whatever its code (the Data API's ValidationException, or a 413 from in
    front of it). Broad on purpose: missing a size refusal would retry the same
    call for ever, while a wrong guess costs only smaller calls. A refusal that
    does not speak of size (a bad endpoint, say) teaches nothing; nor does a call
    within 100 KB in all."""
    if not isinstance(exc, PermanentError) or not _SIZE_REFUSAL.search(str(exc)):
        return False
    sizes = [len(text.encode()) for text in sqls]
    return (
        max(sizes, default=0) <= sql.TOTAL_LIMITS.max_sql_bytes
        and sum(sizes) > sql.TOTAL_LIMITS.max_batch_sql_bytes
    )


class BatchLimit:
    """The limits a warehouse (``name``, for the logs) plans its loads with: the
    given ``limits``, or without them, those the Data API's answers taught."""

    def __init__(self, name: str, limits: sql.SqlLimits | None) -> None:
        self.name = name
        # Optimistic until a call over 100 KB in all is refused (module docstring).
        self.detects = limits is None
        self.limits = limits or sql.PER_TEXT_LIMITS  # what loads are planned with now
        self.learnt: str | None = None  # PER_TEXT or TOTAL once learnt
        # Which rows can never load inline must not change with what is learnt: a row
        # that fits under the total limit fits under either.
        self.row_limits = limits or sql.TOTAL_LIMITS

    def refused(self, sqls: list[str], exc: PermanentError) -> bool:
        """Whether the Data API refused ``sqls`` for the total size of its texts: if
        so, loads are planned with the total limit from now on. Such a call never
        ran (the refusal comes before any statement starts)."""
        if not (self.detects and refused_for_total_size(sqls, exc)):
            return False  # another refusal: not the batch limit's doing, nothing learnt
        if self.learnt != TOTAL:
            logger.warning(
                "%s: batch limit: 100 KB for all the SQL texts of a call together: the Data"
                " API refused a BatchExecuteStatement of %d bytes in %d texts of at most"
                " 100 KB each (%s); loading at most 100 KB a call from now on",
                self.name,
                _sql_bytes(sqls),
                len(sqls),
                exc,
            )
        self.learnt, self.limits = TOTAL, sql.TOTAL_LIMITS
        return True

    def taken(self, sqls: list[str]) -> None:
        """The Data API took ``sqls``: if over 100 KB in all, the limit is on each text."""
        if self.learnt is not None or not self.detects:
            return
        if _sql_bytes(sqls) <= sql.TOTAL_LIMITS.max_batch_sql_bytes:
            return
        self.learnt = PER_TEXT
        logger.info(
            "%s: batch limit: 100 KB per SQL text, up to 40 texts a call: the Data API took"
            " a BatchExecuteStatement of %d bytes in %d texts",
            self.name,
            _sql_bytes(sqls),
            len(sqls),
        )

    def describe(self) -> str:
        """Which batch limit loads are planned with, and how afpipe knows (``afpipe check``)."""
        if not self.detects:
            return (
                f"configured: {self.limits.max_sql_bytes} bytes per SQL text,"
                f" {self.limits.max_batch_sql_bytes} per call"
            )
        if self.learnt == PER_TEXT:
            return "100 KB per SQL text, up to 40 texts a call (the Data API took a larger call)"
        if self.learnt == TOTAL:
            return "100 KB for all the SQL texts of a call together (the Data API refused more)"
        return (
            "not known yet: detected at the first load of more than 100 KB of SQL (afpipe"
            " tries 100 KB per SQL text, up to 40 a call, and falls back to 100 KB a call"
            " if the Data API refuses it)"
        )


def _sql_bytes(sqls: list[str]) -> int:
    return sum(len(text.encode()) for text in sqls)
