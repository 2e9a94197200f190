"""Quotas for one process: two sliding windows per tenant in a dict.

Every method runs without awaiting, so concurrent tasks of one event loop see each
reservation atomically. Not shared between processes or threads: use the Redis store.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.router.errors import QuotaExceeded
from pipeline.router.quota.base import QuotaLimits, Reservation
from pipeline.router.quota.window import DAY, MINUTE, SlidingWindow

SWEEP_EVERY = 1024  # reservations between sweeps of idle tenants


@dataclass
class _Tenant:
    minute: SlidingWindow = field(default_factory=lambda: SlidingWindow(MINUTE))
    day: SlidingWindow = field(default_factory=lambda: SlidingWindow(DAY))

    def prune(self, now: float) -> None:
        self.minute.prune(now)
        self.day.prune(now)


class MemoryQuotaStore:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tenants: dict[str, _Tenant] = {}
        self._reserves = 0

    async def reserve(self, tenant_id: str, tokens: int, limits: QuotaLimits, *,
                      floor_tokens: int = 1) -> Reservation:
        now = self._clock()
        self._reserves += 1
        if self._reserves % SWEEP_EVERY == 0:
            self._sweep(now)
        tenant = self._tenants.setdefault(tenant_id, _Tenant())
        tenant.prune(now)
        wait = max(tenant.minute.wait_for(tokens, limits.tokens_per_minute, now),
                   tenant.day.wait_for(tokens, limits.tokens_per_day, now))
        if wait > 0:
            blocked = max(tenant.minute.wait_for(floor_tokens, limits.tokens_per_minute, now),
                          tenant.day.wait_for(floor_tokens, limits.tokens_per_day, now))
            raise QuotaExceeded(tenant_id, wait, blocked)
        return Reservation(tenant_id=tenant_id, tokens=tokens,
                           minute_bucket=tenant.minute.charge(tokens, now),
                           day_bucket=tenant.day.charge(tokens, now), at=now)

    async def settle(self, reservation: Reservation, used_tokens: int) -> None:
        tenant = self._tenants.get(reservation.tenant_id)
        if tenant is None:
            return
        now = self._clock()
        tenant.prune(now)
        unused = reservation.tokens - max(used_tokens, 0)
        if unused > 0:
            tenant.minute.refund(reservation.minute_bucket, unused)
            tenant.day.refund(reservation.day_bucket, unused)
        elif unused < 0:
            tenant.minute.charge(-unused, now)
            tenant.day.charge(-unused, now)

    def tokens_in_window(self, tenant_id: str) -> tuple[int, int]:
        """(minute, day) tokens currently charged; for tests and diagnostics."""
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            return 0, 0
        tenant.prune(self._clock())
        return tenant.minute.total, tenant.day.total

    def _sweep(self, now: float) -> None:
        for tenant_id, tenant in list(self._tenants.items()):
            tenant.prune(now)
            if not tenant.day.buckets:
                del self._tenants[tenant_id]
