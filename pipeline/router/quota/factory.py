"""The quota store a process uses: Redis when `redis_url` is set (limits shared by every
process), else in memory (one process)."""

from __future__ import annotations

from pipeline.config import Settings
from pipeline.router.quota.base import QuotaStore
from pipeline.router.quota.memory import MemoryQuotaStore
from pipeline.router.quota.redis_store import RedisQuotaStore


def quota_store_for(settings: Settings) -> QuotaStore:
    if settings.redis_url:
        return RedisQuotaStore.from_url(settings.redis_url)
    return MemoryQuotaStore()
