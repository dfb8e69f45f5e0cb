"""The short fault matrix, in the normal test command (the full one: ``python -m tests.faults``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tests.faults.runner import SHORT_TEST_CASES, run_matrix, table

pytestmark = [
    pytest.mark.slow,
    # Load generators are cut off mid-request when the daemon is killed.
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
]


async def test_short_fault_matrix(tmp_path: Path, aws_test_env: dict[str, str]) -> None:
    with trio.fail_after(120):
        results = await run_matrix(tmp_path, SHORT_TEST_CASES)
    print(table(results))
    assert [r.case for r in results] and len(results) == len(SHORT_TEST_CASES)
    for result in results:
        assert result.acked > 0, result.row()
        assert result.lost == 0, result.row()  # acknowledged = rows in the primary
        assert result.duplicates == 0, result.row()
        assert result.dead_without_reason == 0, result.row()
        assert result.unsent_rows == 0, result.row()
        assert result.recovery_s is not None, result.row()
        assert result.passed, result.row()
