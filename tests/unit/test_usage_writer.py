"""The usage writer's bounded buffer: back-pressure on reservations while the database is
slow, nothing dropped, no batch cut by close, the buffer's metrics (the SQL is tested on
PostgreSQL in tests/integration/test_usage_metering.py; the rate in bench/usage_events.py)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace

from prometheus_client import CollectorRegistry

from pipeline.router.metrics import MeteredUsageSink, RouterMetrics
from pipeline.router.usage import BatchingUsageWriter, UsageBatch
from schemas.usage import IN_FLIGHT, UsageEvent


def reservation(n: int) -> UsageEvent:
    return UsageEvent(tenant_id=f"t{n % 3}", model_name="m", pool="default", replica="r",
                      request_id=uuid.uuid4().hex, input_tokens=100 + n, output_tokens=0,
                      status_code=None, error_kind=IN_FLIGHT)


def settled(event: UsageEvent) -> UsageEvent:
    return replace(event, status_code=200, error_kind=None,
                   output_tokens=7)


class SlowStore:
    """Rows by id (the latest write wins, a reservation never over a final, as the SQL
    does); while `slow` is clear every write waits for it: a database that stalls."""

    def __init__(self) -> None:
        self.rows: dict[uuid.UUID, UsageEvent] = {}
        self.writes = 0
        self.fast = asyncio.Event()
        self.fast.set()

    async def write(self, batch: UsageBatch) -> None:
        await self.fast.wait()
        await asyncio.sleep(0.01)
        self.writes += 1
        for e in batch.upserts:
            if e.error_kind == IN_FLIGHT and e.id in self.rows:
                continue
            self.rows[e.id] = e

    async def settle_abandoned(self, older_than_s: float) -> int:
        return 0


async def test_a_stalled_database_makes_reservations_wait_and_loses_nothing() -> None:
    store = SlowStore()
    registry = CollectorRegistry()
    writer = BatchingUsageWriter(store, batch_size=8, interval_s=0.01, max_pending=20,
                                 reserve_wait_s=0.05)
    sink = MeteredUsageSink(writer, RouterMetrics(registry))
    writer.start()
    store.fast.clear()  # PostgreSQL stops answering
    depths: list[int] = []

    async def request(n: int) -> None:
        event = reservation(n)
        await sink.reserve(event)
        depths.append(writer.depth)
        sink.record(settled(event))

    requests = asyncio.gather(*(request(n) for n in range(100)))
    await asyncio.sleep(0.3)
    # Bounded: the first 20 reservations are queued (they stopped waiting for their
    # write after reserve_wait_s), the other 80 wait for room before being "sent".
    assert writer.depth <= 2 * 20 and len(depths) <= 20
    assert writer.backpressure_waits > 0
    assert registry.get_sample_value("secanalyst_usage_buffer_events") == writer.depth
    assert registry.get_sample_value("secanalyst_usage_backpressure_waits_total") == \
        writer.backpressure_waits
    store.fast.set()  # it answers again: the waiting requests go on
    await asyncio.wait_for(requests, 10)
    await writer.close()
    assert writer.dropped == 0 and writer.depth == 0
    assert max(depths) <= 2 * 20
    assert len(store.rows) == 100
    assert all(e.status_code == 200 for e in store.rows.values())  # every one settled
    assert registry.get_sample_value("secanalyst_usage_events_dropped_total") == 0


async def test_close_waits_for_the_batches_being_written() -> None:
    store = SlowStore()
    writer = BatchingUsageWriter(store, batch_size=5, interval_s=0.01)
    writer.start()
    events = [reservation(n) for n in range(23)]
    for event in events:
        writer.record(settled(event))
    await asyncio.sleep(0.015)  # the first batches are being written
    await writer.close()
    assert len(store.rows) == 23 and writer.dropped == 0


async def test_a_reservation_stops_waiting_after_reserve_wait_and_stays_queued() -> None:
    store = SlowStore()
    writer = BatchingUsageWriter(store, reserve_wait_s=0.02)  # not started: never written
    events = [reservation(n) for n in range(3)]
    await asyncio.wait_for(asyncio.gather(*(writer.reserve(e) for e in events)), 1)
    assert store.writes == 0 and writer.depth == 3
    later = reservation(3)  # after that group's timer: under a timer of its own
    await asyncio.wait_for(writer.reserve(later), 1)
    await writer.flush()
    assert set(store.rows) == {e.id for e in [*events, later]}


async def test_a_final_event_takes_the_place_of_its_reservation_not_yet_written() -> None:
    """A slow database: the request was sent once its reservation's wait ran out and
    ended before the row was written. One row write, final; a refusal writes none."""
    store = SlowStore()
    store.fast.clear()  # PostgreSQL stalls
    writer = BatchingUsageWriter(store, batch_size=1, reserve_wait_s=0.02,
                                 concurrent_writes=1)
    writer.start()
    first, second, third = reservation(1), reservation(2), reservation(3)
    for event in (first, second, third):
        await writer.reserve(event)  # the first is being written; the others queued
    writer.record(settled(second))
    writer.record(replace(third, status_code=503, dispatched=False))
    assert writer.depth == 3  # replaced in place: nothing added
    store.fast.set()
    await writer.close()
    assert store.rows[second.id].status_code == 200
    assert third.id not in store.rows and store.rows[first.id].error_kind == IN_FLIGHT
    assert writer.dropped == 0 and writer.depth == 0
