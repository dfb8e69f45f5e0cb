"""The drain fits in AFPIPE_DRAIN_TIMEOUT_S, shielded cleanups included."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from afpipe import drain


@pytest.mark.parametrize("timeout_s", [0.5, 3.0, 10.0, 30.0, 600.0])
def test_work_cleanups_and_release_add_up_to_the_timeout(timeout_s: float) -> None:
    plan = drain.DrainDeadline()
    work_until = plan.start(100.0, timeout_s, release_s=1.0)
    assert 100.0 < work_until < plan.cleanup_by < plan.end_by == 100.0 + timeout_s
    assert work_until - 100.0 >= timeout_s / 2  # most of the budget is for the work


async def test_a_hanging_cleanup_ends_at_the_cleanup_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Shielded from the drain's cancellation, a cleanup is still bounded by it: the
    work is cancelled at its deadline, the cleanup (a CancelStatement that gets no
    answer) ends at the cleanup deadline, the release by the end."""
    plan = drain.new_run()
    start = trio.current_time()
    ended: dict[str, float] = {}
    with trio.CancelScope(deadline=plan.start(start, 10.0, release_s=1.0)):
        try:
            await trio.sleep_forever()  # the work: a load waiting on Redshift
        finally:
            with drain.cleanup_scope(5.0):
                await trio.sleep_forever()  # CancelStatement, no answer
            ended["cleanup"] = trio.current_time() - start
            with drain.cleanup_scope(1.0, last=True):
                await trio.sleep_forever()  # the release, no answer
            ended["release"] = trio.current_time() - start
    assert ended["cleanup"] == pytest.approx(9.0)
    assert ended["release"] == pytest.approx(10.0)


async def test_outside_a_drain_cleanups_keep_their_own_budget(
    autojump_clock: trio.testing.MockClock,
) -> None:
    drain.new_run()
    start = trio.current_time()
    with drain.cleanup_scope(5.0):
        await trio.sleep_forever()
    assert trio.current_time() - start == pytest.approx(5.0)
