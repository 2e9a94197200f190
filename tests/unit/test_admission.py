"""Priority admission: class order, fairness between tenants, bounded queue, deadlines,
no slot leaks."""

from __future__ import annotations

import asyncio
import time

import pytest

from pipeline.router.admission import Admission, SlotHandle, effective_priority
from pipeline.router.errors import Saturated
from pipeline.router.replicas import Pool, Replica


def one_replica_pool() -> Pool:
    return Pool("default", 4096, [Replica("http://a/v1", "default")])


async def hold(admission: Admission, pool: Pool, release: asyncio.Event,
               priority: str = "standard", tenant: str = "holder") -> None:
    async with admission.slot(pool, priority, tenant):
        await release.wait()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def run_in_admission_order(admission: Admission, pool: Pool,
                                 arrivals: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Fill the single slot, queue `arrivals` (priority, tenant) in order, free the slot:
    the order in which the queued requests get in."""
    release = asyncio.Event()
    holder = asyncio.create_task(hold(admission, pool, release))
    await settle()
    order: list[tuple[str, str]] = []

    async def request(priority: str, tenant: str) -> None:
        async with admission.slot(pool, priority, tenant):
            order.append((priority, tenant))
            await asyncio.sleep(0)

    tasks = []
    for priority, tenant in arrivals:
        tasks.append(asyncio.create_task(request(priority, tenant)))
        await settle()
    assert admission.snapshot(pool.name) == (1, len(arrivals))
    release.set()
    await asyncio.gather(holder, *tasks)
    assert admission.snapshot(pool.name) == (0, 0)
    return order


async def test_classes_are_served_best_first() -> None:
    order = await run_in_admission_order(
        Admission(max_in_flight_per_replica=1), one_replica_pool(),
        [("batch", "t"), ("standard", "t"), ("batch", "t"), ("premium", "t"),
         ("standard", "t")])
    assert [p for p, _ in order] == ["premium", "standard", "standard", "batch", "batch"]


async def test_tenants_of_a_class_take_turns() -> None:
    arrivals = [("standard", "a")] * 4 + [("standard", "b")] * 2 + [("standard", "c")]
    order = await run_in_admission_order(
        Admission(max_in_flight_per_replica=1), one_replica_pool(), arrivals)
    assert [t for _, t in order] == ["a", "b", "c", "a", "b", "a", "a"]


async def test_full_queue_is_refused_with_a_retry_after_from_its_depth() -> None:
    refusals = {}
    for depth in (2, 8):
        admission = Admission(max_in_flight_per_replica=1, max_queue=depth)
        pool = one_replica_pool()
        release = asyncio.Event()
        tasks = [asyncio.create_task(hold(admission, pool, release, tenant=f"w{i}"))
                 for i in range(depth + 1)]
        await settle()
        assert admission.snapshot(pool.name) == (1, depth)
        started = time.perf_counter()
        with pytest.raises(Saturated) as caught:
            async with admission.slot(pool, "standard", "late"):
                pytest.fail("admitted past a full queue")
        assert time.perf_counter() - started < 0.05  # refused at once, not after a wait
        refusals[depth] = caught.value.retry_after
        release.set()
        await asyncio.gather(*tasks)
        assert admission.snapshot(pool.name) == (0, 0)
    assert refusals[2] > 0
    assert refusals[8] == pytest.approx(refusals[2] * 9 / 3)


async def test_a_higher_class_evicts_the_newest_lowest_waiter_of_a_full_queue() -> None:
    admission = Admission(max_in_flight_per_replica=1, max_queue=2)
    pool = one_replica_pool()
    release = asyncio.Event()
    holder = asyncio.create_task(hold(admission, pool, release))
    await settle()
    first_batch = asyncio.create_task(hold(admission, pool, release, "batch", "x"))
    await settle()
    second_batch = asyncio.create_task(hold(admission, pool, release, "batch", "x"))
    await settle()
    premium = asyncio.create_task(hold(admission, pool, release, "premium", "p"))
    await settle()
    with pytest.raises(Saturated):
        await second_batch
    assert admission.snapshot(pool.name) == (1, 2)
    release.set()
    await asyncio.gather(holder, first_batch, premium)


async def test_a_lower_class_cannot_evict() -> None:
    admission = Admission(max_in_flight_per_replica=1, max_queue=1)
    pool = one_replica_pool()
    release = asyncio.Event()
    holder = asyncio.create_task(hold(admission, pool, release))
    waiter = asyncio.create_task(hold(admission, pool, release, "standard", "s"))
    await settle()
    with pytest.raises(Saturated):
        async with admission.slot(pool, "batch", "b"):
            pytest.fail("a batch request took a standard request's place")
    release.set()
    await asyncio.gather(holder, waiter)


async def test_a_wait_past_the_deadline_is_refused_and_leaves_the_queue() -> None:
    admission = Admission(max_in_flight_per_replica=1)
    pool = one_replica_pool()
    release = asyncio.Event()
    holder = asyncio.create_task(hold(admission, pool, release))
    await settle()
    started = time.monotonic()
    with pytest.raises(Saturated) as caught:
        async with admission.slot(pool, "premium", "t", deadline=started + 0.1):
            pytest.fail("admitted while the only slot was held")
    waited = time.monotonic() - started
    assert 0.09 <= waited < 1.0
    assert caught.value.retry_after > 0
    assert admission.snapshot(pool.name) == (1, 0)
    with pytest.raises(Saturated):  # an already expired deadline: refused at once
        async with admission.slot(pool, "premium", "t", deadline=time.monotonic() - 1):
            pass
    release.set()
    await holder
    assert admission.snapshot(pool.name) == (0, 0)


async def test_max_wait_bounds_a_request_without_deadline() -> None:
    admission = Admission(max_in_flight_per_replica=1, max_wait_s=0.05)
    pool = one_replica_pool()
    release = asyncio.Event()
    holder = asyncio.create_task(hold(admission, pool, release))
    await settle()
    with pytest.raises(Saturated):
        async with admission.slot(pool, "standard", "t"):
            pass
    release.set()
    await holder


async def test_no_slot_leaks_on_errors_or_cancellation() -> None:
    admission = Admission(max_in_flight_per_replica=2)
    pool = one_replica_pool()
    with pytest.raises(RuntimeError):
        async with admission.slot(pool, "standard", "t"):
            raise RuntimeError("dispatch failed")
    assert admission.snapshot(pool.name) == (0, 0)

    release = asyncio.Event()
    holders = [asyncio.create_task(hold(admission, pool, release)) for _ in range(2)]
    waiter = asyncio.create_task(hold(admission, pool, release))
    await settle()
    assert admission.snapshot(pool.name) == (2, 1)
    waiter.cancel()  # cancelled while queued
    await settle()
    assert admission.snapshot(pool.name) == (2, 0)
    running = holders[0]
    running.cancel()  # cancelled while holding a slot
    await settle()
    assert admission.snapshot(pool.name) == (1, 0)
    release.set()
    await holders[1]
    assert admission.snapshot(pool.name) == (0, 0)


async def test_a_slot_granted_to_a_cancelled_waiter_is_passed_on() -> None:
    admission = Admission(max_in_flight_per_replica=1)
    pool = one_replica_pool()
    release = asyncio.Event()
    holder = asyncio.create_task(hold(admission, pool, release))
    await settle()
    first = asyncio.create_task(hold(admission, pool, asyncio.Event()))
    await settle()
    second_done = asyncio.Event()
    second = asyncio.create_task(hold(admission, pool, second_done))
    await settle()
    release.set()
    await asyncio.sleep(0)  # the holder leaves and grants `first` its slot...
    first.cancel()  # ...which is cancelled before it runs
    await settle()
    assert admission.snapshot(pool.name) == (1, 0)  # `second` got it
    second_done.set()
    await asyncio.gather(holder, second)
    assert admission.snapshot(pool.name) == (0, 0)


async def test_pool_without_healthy_replica_admits_at_once() -> None:
    admission = Admission(max_in_flight_per_replica=1)
    pool = one_replica_pool()
    pool.replicas[0].circuit.failure(time.monotonic())
    pool.replicas[0].circuit.failure(time.monotonic())
    pool.replicas[0].circuit.failure(time.monotonic())
    async with admission.slot(pool, "batch", "a"), admission.slot(pool, "batch", "b"):
        assert admission.snapshot(pool.name) == (2, 0)


def test_effective_priority_never_promotes() -> None:
    assert effective_priority("premium", "standard") == "premium"
    assert effective_priority("premium", "batch") == "batch"
    assert effective_priority("standard", "premium") == "standard"
    assert effective_priority("batch", "standard") == "batch"


async def test_token_aware_admission_waits_for_a_replica_with_little_queued_prefill() -> None:
    pool = Pool("default", 4096, [Replica("http://a/v1", "default"),
                                  Replica("http://b/v1", "default")])
    admission = Admission(max_in_flight_per_replica=16, max_prefill_tokens_per_replica=256)
    admitted: list[str] = []
    handles: dict[str, SlotHandle] = {}
    release = asyncio.Event()

    async def request(name: str, replica: Replica | None, tokens: int) -> None:
        async with admission.slot(pool, "standard", name) as slot:
            admitted.append(name)
            handles[name] = slot
            if replica is not None:
                replica.prefill.queued_tokens += tokens
            slot.dispatched()
            await release.wait()

    a, b = pool.replicas
    tasks = [asyncio.create_task(request("long-a", a, 2000)),
             asyncio.create_task(request("long-b", b, 2000))]
    await settle()
    # Both replicas are prefilling a long prompt: the next one waits in the router.
    tasks.append(asyncio.create_task(request("short", None, 0)))
    await settle()
    assert admitted == ["long-a", "long-b"] and admission.snapshot("default") == (2, 1)
    a.prefill.queued_tokens -= 2000  # its first token arrived
    # Nothing is handed on until the holder reports it (the router does at first token).
    await settle()
    assert admitted == ["long-a", "long-b"]
    handles["long-a"].prefilled()
    await settle()
    assert admitted == ["long-a", "long-b", "short"]
    release.set()
    await asyncio.gather(*tasks)
    assert admission.snapshot("default") == (0, 0)


async def test_token_aware_admission_counts_admitted_requests_not_yet_dispatched() -> None:
    pool = one_replica_pool()
    admission = Admission(max_prefill_tokens_per_replica=256)
    got_in = asyncio.Event()
    release = asyncio.Event()

    async def first() -> None:
        async with admission.slot(pool, "standard", "t"):  # never reports dispatched()
            got_in.set()
            await release.wait()

    holder = asyncio.create_task(first())
    await got_in.wait()
    # The free replica is promised to the first request: the second waits.
    with pytest.raises(Saturated):
        async with admission.slot(pool, "standard", "t", deadline=time.monotonic() + 0.05):
            pass
    release.set()
    await holder
    async with admission.slot(pool, "standard", "t"):
        pass



async def test_a_routers_share_of_the_limits_follows_how_many_routers_share_the_replicas(
        ) -> None:
    """Four routers sharing one replica hold it to 16 together (4 each), not 16 each; when
    two leave, this one's share grows and its waiters get in at once."""
    admission = Admission(max_in_flight_per_replica=16, max_queue=8)
    pool = one_replica_pool()
    admission.set_share(4)
    release = asyncio.Event()
    holders = [asyncio.create_task(hold(admission, pool, release, tenant=f"t{n}"))
               for n in range(6)]
    await settle()
    assert admission.snapshot(pool.name) == (4, 2)  # 4 in flight, 2 waiting
    refusal = admission.would_refuse(pool, "standard")  # its queue: 8 / 4 = 2, full
    assert isinstance(refusal, Saturated) and refusal.reason == "shed_full"
    admission.set_share(2)
    await settle()
    assert admission.snapshot(pool.name) == (6, 0)  # share 8: the waiters got in
    admission.set_share(1)
    assert (admission.routers, admission._per_replica, admission._max_queue) == (1, 16, 8)
    release.set()
    await asyncio.gather(*holders)
    assert admission.snapshot(pool.name) == (0, 0)


async def test_a_share_never_rounds_a_limit_to_zero() -> None:
    admission = Admission(max_in_flight_per_replica=3, max_queue=5,
                          max_prefill_tokens_per_replica=1000)
    admission.set_share(4)
    assert (admission._per_replica, admission._prefill_per_replica,
            admission._max_queue) == (1, 250, 2)
