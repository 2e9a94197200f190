"""The quota stores against a real redis-server (started here on a free port), with the
same test bodies run against the in-memory store: limits, refunds, releases, retry_after
from the buckets, key TTLs, and atomicity under many concurrent reserves."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from pipeline.router.errors import QuotaExceeded
from pipeline.router.quota import MemoryQuotaStore, QuotaLimits, QuotaStore, RedisQuotaStore
from tests.servers import redis_server

pytestmark = pytest.mark.integration

LIMITS = QuotaLimits(tokens_per_minute=1_000, tokens_per_day=5_000)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest_asyncio.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    connection = aioredis.Redis.from_url(redis_url)
    await connection.flushdb()
    yield connection
    await connection.aclose()


class Clock:
    def __init__(self, now: float = 1_700_000_000.25) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


StoreFactory = Callable[[Clock], QuotaStore]


@pytest.fixture(params=["memory", "redis"])
def make_store(request: pytest.FixtureRequest) -> StoreFactory:
    if request.param == "memory":
        return lambda clock: MemoryQuotaStore(clock=clock)
    connection: aioredis.Redis = request.getfixturevalue("client")
    return lambda clock: RedisQuotaStore(connection, clock=clock)


async def test_limit_enforced_with_retry_after_from_the_buckets(
        make_store: StoreFactory) -> None:
    clock = Clock()
    store = make_store(clock)
    await store.reserve("t", 600, LIMITS)
    clock.now += 10
    await store.reserve("t", 300, LIMITS)
    with pytest.raises(QuotaExceeded) as caught:
        await store.reserve("t", 200, LIMITS)
    assert caught.value.retry_after == pytest.approx(1_700_000_061 - clock.now, abs=0.002)
    await store.reserve("t", 100, LIMITS)
    with pytest.raises(QuotaExceeded) as again:
        await store.reserve("t", 700, LIMITS)
    assert again.value.retry_after == pytest.approx(1_700_000_071 - clock.now, abs=0.002)
    clock.now += again.value.retry_after
    await store.reserve("t", 700, LIMITS)
    await store.reserve("other-tenant", 1_000, LIMITS)


async def test_settle_refunds_and_zero_releases(make_store: StoreFactory) -> None:
    clock = Clock()
    store = make_store(clock)
    first = await store.reserve("t", 900, LIMITS)
    with pytest.raises(QuotaExceeded):
        await store.reserve("t", 500, LIMITS)
    await store.settle(first, used_tokens=400)  # 500 back
    second = await store.reserve("t", 600, LIMITS)
    with pytest.raises(QuotaExceeded):
        await store.reserve("t", 1, LIMITS)
    await store.settle(second, used_tokens=0)  # a failure: all back
    await store.reserve("t", 600, LIMITS)
    clock.now += 61
    third = await store.reserve("t", 1_000, LIMITS)
    assert third.minute_bucket > first.minute_bucket


async def test_day_limit(make_store: StoreFactory) -> None:
    clock = Clock()
    store = make_store(clock)
    for _ in range(5):
        await store.reserve("t", 1_000, LIMITS)
        clock.now += 70
    with pytest.raises(QuotaExceeded) as caught:
        await store.reserve("t", 10, LIMITS)
    first_minute = int(1_700_000_000.25 // 60)
    assert caught.value.retry_after == pytest.approx((first_minute + 1441) * 60 - clock.now,
                                                     abs=0.002)


async def test_no_60_second_interval_exceeds_the_limit(make_store: StoreFactory) -> None:
    rng = random.Random(11)
    clock = Clock(1_700_000_000.0)
    store = make_store(clock)
    limits = QuotaLimits(tokens_per_minute=20_000, tokens_per_day=10**9)
    admitted: list[tuple[float, int]] = []
    end = clock.now + 200
    while clock.now < end:
        clock.now += rng.expovariate(3.0)
        tokens = rng.randint(300, 1_500)
        try:
            reservation = await store.reserve("t", tokens, limits)
        except QuotaExceeded:
            continue
        used = rng.randint(tokens // 3, tokens)
        await store.settle(reservation, used)
        admitted.append((clock.now, used))
    worst = max(sum(n for t, n in admitted if start <= t < start + 60) for start, _ in admitted)
    assert 15_000 < worst <= 20_000


async def test_keys_expire_with_their_window(client: aioredis.Redis) -> None:
    store = RedisQuotaStore(client)  # Redis's own clock
    reservation = await store.reserve("ttl", 100, LIMITS)
    minute_key, day_key = store.keys("ttl")
    assert 0 < await client.ttl(minute_key) <= 61
    assert 86_000 < await client.ttl(day_key) <= 86_460
    assert abs(reservation.at - time.time()) < 5
    await store.settle(reservation, used_tokens=30)
    assert int(await client.hget(minute_key, "sum") or 0) == 30
    # An hour later (virtual), the minute hash is pruned back to nothing but its bookkeeping.
    later = RedisQuotaStore(client, clock=lambda: reservation.at + 3_600)
    await later.reserve("ttl", 1, LIMITS)
    fields = await client.hgetall(minute_key)
    assert int(fields[b"sum"]) == 1 and len(fields) == 4  # one bucket + lo, hi, sum


async def test_concurrent_reserves_never_exceed_the_limit(redis_url: str) -> None:
    """400 reserves at once from 8 connection pools at the same instant: exactly as many
    get in as fit, never more."""
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(8)]
    await clients[0].flushdb()
    now = time.time()
    stores = [RedisQuotaStore(c, clock=lambda: now) for c in clients]
    limits = QuotaLimits(tokens_per_minute=20_000, tokens_per_day=10**9)
    rng = random.Random(5)
    sizes = [rng.randint(300, 1_500) for _ in range(400)]

    async def attempt(i: int) -> int:
        try:
            await stores[i % len(stores)].reserve("hot", sizes[i], limits)
            return sizes[i]
        except QuotaExceeded:
            return 0

    admitted = await asyncio.gather(*(attempt(i) for i in range(len(sizes))))
    total = sum(admitted)
    assert total <= 20_000
    assert total > 20_000 - 1_500  # and the limit is used, not starved
    minute_key, _ = stores[0].keys("hot")
    assert int(await clients[0].hget(minute_key, "sum") or 0) == total
    for c in clients:
        await c.aclose()


async def test_blocked_for_says_how_long_not_even_the_smallest_request_fits(
        make_store: StoreFactory) -> None:
    clock = Clock()
    store = make_store(clock)
    await store.reserve("t", 900, LIMITS)
    clock.now += 10
    with pytest.raises(QuotaExceeded) as caught:  # 100 left: a 50-token request still fits
        await store.reserve("t", 200, LIMITS, floor_tokens=50)
    assert caught.value.blocked_for == 0
    await store.reserve("t", 95, LIMITS)
    with pytest.raises(QuotaExceeded) as blocked:  # 5 left: nothing of ≥ 50 tokens fits
        await store.reserve("t", 200, LIMITS, floor_tokens=50)
    # The 900 of the first bucket leave the window at 1_700_000_061.
    assert blocked.value.blocked_for == pytest.approx(1_700_000_061 - clock.now, abs=0.002)
    assert blocked.value.blocked_for <= blocked.value.retry_after + 0.002
