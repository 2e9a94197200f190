"""Tenants that no request can currently fit for, so that their next requests are refused
429 before any work (no body parse, no token count, no quota round trip).

A block is set from a refusal's `QuotaExceeded.blocked_for` — the wait until even the
smallest possible request of the tenant fits — so it never refuses a request the quota
would admit, as far as this process knows. A refund in this process (a settled request
used fewer tokens than it reserved) lifts the tenant's block at once; a refund in another
process sharing the Redis store lifts it only when it runs out, which is never later than
the Retry-After that process's own refusals announce.
"""

from __future__ import annotations


class QuotaBlocks:
    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    def block(self, tenant_id: str, until: float) -> None:
        if until > self._until.get(tenant_id, 0.0):
            self._until[tenant_id] = until

    def remaining(self, tenant_id: str, now: float) -> float:
        """Seconds left of the tenant's block (0: not blocked)."""
        until = self._until.get(tenant_id)
        if until is None:
            return 0.0
        if until <= now:
            del self._until[tenant_id]
            return 0.0
        return until - now

    def lift(self, tenant_id: str) -> None:
        self._until.pop(tenant_id, None)
