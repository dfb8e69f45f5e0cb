"""Long failures the consumer must live through, and the ones it must not retry.

Fake queue and warehouse on the trio clock (``autojump_clock``): a day-long
outage takes no real time.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from afpipe.errors import ConfigError
from afpipe.event import Event
from afpipe.health import Health
from afpipe.pipeline.config import BACKOFF_CAP_S, ConsumerConfig, backoff_s
from afpipe.pipeline.consumer import serve_consumer
from afpipe.warehouse.base import LoadResult
from tests.fakes import FakeQueue, FakeWarehouse
from tests.test_consumer import body, payload

VIRTUAL_DAY_S = 2 * 24 * 3600
CONFIG = ConsumerConfig(pollers=1, writers=1, batch_linger_s=0.5)


@pytest.mark.parametrize("attempt", [0, 1, 62, 1_023, 1_024, 1_100, 10**6])
def test_backoff_is_finite_and_capped_for_any_attempt(attempt: int) -> None:
    for _ in range(20):
        assert 0 <= backoff_s(attempt) <= BACKOFF_CAP_S


async def test_a_warehouse_down_for_a_day_heals_by_itself(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Past attempt 1,024 (about four hours at the 15 s mean backoff) the old
    arithmetic raised OverflowError and the daemon died."""
    queue = FakeQueue()
    warehouse = FakeWarehouse(transient_failures=3_000)
    message_id = queue.put(body(payload(1)))
    stop = trio.Event()
    with trio.fail_after(10 * VIRTUAL_DAY_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_consumer, queue, warehouse, CONFIG, stop, Health(60))
            await queue.activity.wait_for(lambda: queue.deleted == [message_id])
            stop.set()
    assert warehouse.load_calls == 3_001
    assert trio.current_time() > 3 * 3600  # it really was a long outage
    assert len(warehouse.rows) == 1


class DeniedWarehouse(FakeWarehouse):
    async def load(self, events: list[Event]) -> LoadResult:  # type: ignore[override]
        self.load_calls += 1
        await trio.lowlevel.checkpoint()
        raise ConfigError("REDSHIFT_DB_USER: permission denied for schema public")


async def test_a_configuration_error_while_running_ends_the_consumer_unretried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    queue = FakeQueue()
    warehouse = DeniedWarehouse()
    queue.put(body(payload(1)))
    with trio.fail_after(VIRTUAL_DAY_S), pytest.RaisesGroup(ConfigError, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_consumer, queue, warehouse, CONFIG, trio.Event(), Health(60))
    assert warehouse.load_calls == 1
    assert queue.deleted == [] and queue.remaining()  # nothing lost: back on the queue


async def test_receives_keep_the_queues_own_visibility_and_the_heartbeat_uses_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """No AFPIPE_VISIBILITY_TIMEOUT_S: receives set none (the queue's own, 10 s here,
    governs crash recovery), and a load longer than it is kept alive by heartbeats
    of the queue's own length."""
    queue = FakeQueue()
    queue.own_visibility_s = 10
    warehouse = FakeWarehouse(load_s=35)
    message_id = queue.put(body(payload(1)))
    stop = trio.Event()
    with trio.fail_after(VIRTUAL_DAY_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_consumer, queue, warehouse, CONFIG, stop, Health(60))
            await queue.activity.wait_for(lambda: queue.deleted == [message_id])
            stop.set()
    assert queue.received_visibility and set(queue.received_visibility) == {None}
    assert queue.expired_while_held == []
    extensions = [call.timeout_s for call in queue.visibility_calls]
    assert extensions and set(extensions) == {10}
