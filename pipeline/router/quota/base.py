"""The quota protocol: reserve before dispatch, settle after the response."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from pipeline.router.config import Priority, TenantLimits


@dataclass(frozen=True)
class QuotaLimits:
    tokens_per_minute: int
    tokens_per_day: int
    priority: Priority = "standard"


@dataclass(frozen=True)
class Reservation:
    """Tokens taken from a tenant's quota, and the buckets they were charged to, so that
    settling refunds the right moment."""

    tenant_id: str
    tokens: int
    minute_bucket: int
    day_bucket: int
    at: float  # the store's clock when the reservation was admitted (seconds)


class QuotaStore(Protocol):
    async def reserve(self, tenant_id: str, tokens: int, limits: QuotaLimits, *,
                      floor_tokens: int = 1) -> Reservation:
        """Take `tokens` from both windows or raise `QuotaExceeded(tenant_id, retry_after,
        blocked_for)`, `blocked_for` = the wait until even `floor_tokens` (the smallest
        possible request) fit."""
        ...

    async def settle(self, reservation: Reservation, used_tokens: int) -> None:
        """Refund `reservation.tokens - used_tokens` (all of it when `used_tokens` is 0,
        e.g. on failure); usage beyond the reservation is charged to the current bucket."""
        ...


def resolve_limits(tenants: TenantLimits, tenant_id: str) -> QuotaLimits:
    """A tenant's limits: its override where it sets one, the defaults elsewhere."""
    override = tenants.overrides.get(tenant_id)
    if override is None:
        return QuotaLimits(tenants.tokens_per_minute, tenants.tokens_per_day)
    return QuotaLimits(
        tokens_per_minute=override.tokens_per_minute or tenants.tokens_per_minute,
        tokens_per_day=override.tokens_per_day or tenants.tokens_per_day,
        priority=override.priority)
