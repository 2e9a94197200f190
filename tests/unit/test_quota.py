"""The in-memory quota store and the sliding window, on a virtual clock."""

from __future__ import annotations

import random

import pytest

from pipeline.router.config import TenantLimits, TenantQuota
from pipeline.router.errors import QuotaExceeded
from pipeline.router.quota import MemoryQuotaStore, QuotaLimits, resolve_limits

LIMITS = QuotaLimits(tokens_per_minute=1_000, tokens_per_day=5_000)


class Clock:
    def __init__(self, now: float = 1_000_000.25) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_minute_limit_is_enforced_and_retry_after_comes_from_the_buckets() -> None:
    clock = Clock()
    store = MemoryQuotaStore(clock=clock)
    await store.reserve("t", 600, LIMITS)  # bucket 1_000_000
    clock.now += 10
    await store.reserve("t", 300, LIMITS)  # bucket 1_000_010
    with pytest.raises(QuotaExceeded) as caught:
        await store.reserve("t", 200, LIMITS)
    # 100 tokens over: the first bucket must leave, at (1_000_000 + 61) s.
    assert caught.value.tenant_id == "t"
    assert caught.value.retry_after == pytest.approx(1_000_061 - clock.now)
    await store.reserve("t", 100, LIMITS)  # exactly the limit still fits
    with pytest.raises(QuotaExceeded) as again:
        await store.reserve("t", 700, LIMITS)
    # needs both buckets gone (600 + 400 ≥ 700): the second leaves at 1_000_010 + 61.
    assert again.value.retry_after == pytest.approx(1_000_071 - clock.now)
    clock.now += again.value.retry_after
    await store.reserve("t", 700, LIMITS)


async def test_settle_refunds_unused_tokens_to_their_bucket() -> None:
    clock = Clock()
    store = MemoryQuotaStore(clock=clock)
    reservation = await store.reserve("t", 900, LIMITS)
    with pytest.raises(QuotaExceeded):
        await store.reserve("t", 500, LIMITS)
    await store.settle(reservation, used_tokens=400)
    assert store.tokens_in_window("t") == (400, 400)
    await store.reserve("t", 500, LIMITS)
    assert store.tokens_in_window("t") == (900, 900)


async def test_settle_with_zero_releases_the_whole_reservation() -> None:
    store = MemoryQuotaStore(clock=Clock())
    reservation = await store.reserve("t", 1_000, LIMITS)
    await store.settle(reservation, used_tokens=0)
    assert store.tokens_in_window("t") == (0, 0)
    await store.reserve("t", 1_000, LIMITS)


async def test_usage_beyond_the_reservation_is_charged() -> None:
    store = MemoryQuotaStore(clock=Clock())
    reservation = await store.reserve("t", 100, LIMITS)
    await store.settle(reservation, used_tokens=150)
    assert store.tokens_in_window("t") == (150, 150)


async def test_refund_after_the_minute_left_still_refunds_the_day() -> None:
    clock = Clock()
    store = MemoryQuotaStore(clock=clock)
    reservation = await store.reserve("t", 800, LIMITS)
    clock.now += 120
    await store.settle(reservation, used_tokens=200)
    assert store.tokens_in_window("t") == (0, 200)


async def test_day_limit_and_its_retry_after() -> None:
    clock = Clock()
    store = MemoryQuotaStore(clock=clock)
    for _ in range(5):
        await store.reserve("t", 1_000, LIMITS)
        clock.now += 70  # past the minute window
    with pytest.raises(QuotaExceeded) as caught:
        await store.reserve("t", 10, LIMITS)
    # The day window is 1-minute buckets: the first leaves 1,441 minutes after its own.
    first_minute = int(1_000_000.25 // 60)
    assert caught.value.retry_after == pytest.approx((first_minute + 1441) * 60 - clock.now)
    assert 86_000 < caught.value.retry_after < 86_460


async def test_tenants_are_independent_and_an_oversized_request_never_fits() -> None:
    store = MemoryQuotaStore(clock=Clock())
    await store.reserve("a", 1_000, LIMITS)
    await store.reserve("b", 1_000, LIMITS)
    with pytest.raises(QuotaExceeded) as caught:
        await store.reserve("c", 1_001, LIMITS)
    assert caught.value.retry_after == 61


async def test_no_60_second_interval_exceeds_the_limit() -> None:
    """Random arrivals over 5 virtual minutes, settled with partial use: the net tokens
    of every admission, summed over any 60 s interval, stay within the limit."""
    rng = random.Random(7)
    clock = Clock(0.0)
    store = MemoryQuotaStore(clock=clock)
    limits = QuotaLimits(tokens_per_minute=20_000, tokens_per_day=10**9)
    admitted: list[tuple[float, int]] = []
    refused = 0
    while clock.now < 300:
        clock.now += rng.expovariate(2.0)
        tokens = rng.randint(300, 1_500)
        try:
            reservation = await store.reserve("t", tokens, limits)
        except QuotaExceeded as exc:
            assert exc.retry_after > 0
            refused += 1
            continue
        used = rng.randint(tokens // 3, tokens)
        await store.settle(reservation, used)
        admitted.append((clock.now, used))
    assert refused > 0
    worst = max(sum(n for t, n in admitted if start <= t < start + 60)
                for start, _ in admitted)
    assert 15_000 < worst <= 20_000


def test_limits_resolve_from_defaults_and_overrides() -> None:
    tenants = TenantLimits(tokens_per_minute=100, tokens_per_day=1_000, overrides={
        "acme": TenantQuota(tokens_per_minute=500, priority="premium"),
        "bulk": TenantQuota(priority="batch", tokens_per_day=50)})
    assert resolve_limits(tenants, "other") == QuotaLimits(100, 1_000, "standard")
    assert resolve_limits(tenants, "acme") == QuotaLimits(500, 1_000, "premium")
    assert resolve_limits(tenants, "bulk") == QuotaLimits(100, 50, "batch")
