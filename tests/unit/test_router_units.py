import asyncio
from dataclasses import replace

import pytest

from pipeline.router.errors import ContextTooLong, NoHealthyReplica
from pipeline.router.replicas import CircuitBreaker, Pool, Replica, choose_pool, choose_replica
from pipeline.router.usage import BatchingUsageWriter, UsageBatch
from schemas.usage import IN_FLIGHT, UsageEvent


def pools() -> list[Pool]:
    return [Pool("default", 4096, [Replica("http://a/v1", "default"),
                                   Replica("http://b/v1", "default")]),
            Pool("long-context", 32768, [Replica("http://long/v1", "long-context")])]


def test_pool_by_context_length() -> None:
    assert choose_pool(pools(), 4000).name == "default"
    assert choose_pool(pools(), 9000).name == "long-context"
    with pytest.raises(ContextTooLong) as caught:
        choose_pool(pools(), 40000)
    assert (caught.value.tokens, caught.value.limit) == (40000, 32768)


def test_least_loaded_replica_and_exclusion() -> None:
    pool = pools()[0]
    pool.replicas[0].in_flight_requests = 3
    assert choose_replica(pool, exclude=set()).url == "http://b/v1"
    assert choose_replica(pool, exclude={"http://b/v1"}).url == "http://a/v1"
    with pytest.raises(NoHealthyReplica):
        choose_replica(pool, exclude={"http://a/v1", "http://b/v1"})


def test_circuit_opens_after_threshold_and_half_opens_after_cooldown() -> None:
    breaker = CircuitBreaker(threshold=2, cooldown_s=10)
    breaker.failure(100.0)
    assert breaker.allows(100.0)
    breaker.failure(101.0)
    assert not breaker.allows(105.0)
    assert breaker.allows(111.5)
    breaker.success()
    assert breaker.allows(111.6) and breaker.failures == 0


def event(n: int) -> UsageEvent:
    return UsageEvent(tenant_id="t", model_name="m", pool="default", replica="r",
                      request_id=str(n), input_tokens=n, output_tokens=1, status_code=200)


class ListStore:
    """Records the batches the writer hands over (the SQL is tested on PostgreSQL)."""

    def __init__(self) -> None:
        self.batches: list[UsageBatch] = []

    async def write(self, batch: UsageBatch) -> None:
        self.batches.append(batch)

    async def settle_abandoned(self, older_than_s: float) -> int:
        return 0


async def test_usage_writer_batches_and_flushes_on_close() -> None:
    store = ListStore()
    writer = BatchingUsageWriter(store, batch_size=4, interval_s=0.05)
    writer.start()
    for n in range(10):
        writer.record(event(n))  # never awaits: off the request path
    await asyncio.sleep(0.2)
    await writer.close()
    sizes = [len(b.upserts) for b in store.batches]
    assert sum(sizes) == 10 and max(sizes) <= 4


async def test_a_reservation_is_written_at_once_and_settled_by_its_final_event() -> None:
    store = ListStore()
    writer = BatchingUsageWriter(store, interval_s=60)  # finals would wait a minute
    writer.start()
    reserved = replace(event(1), status_code=None, error_kind=IN_FLIGHT)
    await asyncio.wait_for(writer.reserve(reserved), 1)  # returns once written
    assert [[e.error_kind for e in b.upserts] for b in store.batches] == [[IN_FLIGHT]]
    assert store.batches[0].only_reservations
    final = replace(reserved, status_code=200, error_kind=None)
    writer.record(final)
    await writer.close()
    assert store.batches[-1].upserts == [final]  # same id: the row settled in place


async def test_a_reservation_and_its_final_event_in_one_batch_are_one_row_write() -> None:
    store = ListStore()
    writer = BatchingUsageWriter(store, reserve_wait_s=0.01)  # not started: queued only
    reserved = replace(event(1), status_code=None, error_kind=IN_FLIGHT)
    await writer.reserve(reserved)
    writer.record(replace(reserved, status_code=200, error_kind=None))
    await writer.flush()
    assert [len(b.upserts) for b in store.batches] == [1]
    assert store.batches[0].upserts[0].status_code == 200


async def test_refusals_are_not_rows_and_delete_a_reserved_row() -> None:
    store = ListStore()
    writer = BatchingUsageWriter(store, reserve_wait_s=0.01)
    writer.record(replace(event(1), status_code=429, dispatched=False))
    await writer.flush()
    assert store.batches == []  # a refusal before any replica: metrics only
    reserved = replace(event(2), status_code=None, error_kind=IN_FLIGHT)
    await writer.reserve(reserved)
    await writer.flush()
    writer.record(replace(reserved, status_code=503, dispatched=False))
    await writer.flush()
    assert store.batches[-1].deletes[0].id == reserved.id and not store.batches[-1].upserts
