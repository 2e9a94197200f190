"""Per-tenant token quotas (tokens per minute and per day): reserve before dispatch,
settle after the response. Algorithm: `window.py`; stores: memory and Redis."""

from pipeline.router.config import Priority
from pipeline.router.quota.base import (
    QuotaLimits,
    QuotaStore,
    Reservation,
    resolve_limits,
)
from pipeline.router.quota.factory import quota_store_for
from pipeline.router.quota.memory import MemoryQuotaStore
from pipeline.router.quota.redis_store import RedisQuotaStore

__all__ = ["MemoryQuotaStore", "Priority", "QuotaLimits", "QuotaStore", "RedisQuotaStore",
           "Reservation", "quota_store_for", "resolve_limits"]
