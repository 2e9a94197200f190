"""The quota store a process uses: Redis when `redis_url` is set (limits shared by every
process), else in memory (one process)."""

from __future__ import annotations

from pipeline.router.config import QuotaBackend
from pipeline.router.quota.base import QuotaStore
from pipeline.router.quota.memory import MemoryQuotaStore
from pipeline.router.quota.redis_store import RedisQuotaStore


def quota_store_for(backend: QuotaBackend) -> QuotaStore:
    if backend.redis_url:
        return RedisQuotaStore.from_url(backend.redis_url, prefix=backend.key_prefix)
    return MemoryQuotaStore()
