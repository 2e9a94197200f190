"""Bearer API key → tenant, with a short cache so a hot key costs no database trip."""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from psycopg_pool import AsyncConnectionPool

from pipeline.store.apikeys import fetch_key, hash_key, parse_key_id, verify


class KeyAuthenticator(Protocol):
    async def tenant_for(self, key: str) -> str | None: ...


@dataclass(frozen=True)
class _Cached:
    key_hash: bytes
    tenant_id: str
    expires: float


class ApiKeyAuthenticator:
    """Verifies keys against api_keys. A verified key is trusted for `cache_s` seconds
    (so a revocation takes effect within that time); unknown keys are never cached."""

    def __init__(self, pool: AsyncConnectionPool, pepper: bytes, *, cache_s: float,
                 max_cached: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._pool = pool
        self._pepper = pepper
        self._cache_s = cache_s
        self._max_cached = max_cached
        self._clock = clock
        self._cache: dict[str, _Cached] = {}

    async def tenant_for(self, key: str) -> str | None:
        key_id = parse_key_id(key)
        if key_id is None:
            return None
        now = self._clock()
        cached = self._cache.get(key_id)
        if cached is not None and cached.expires > now:
            ok = hmac.compare_digest(cached.key_hash, hash_key(self._pepper, key))
            return cached.tenant_id if ok else None
        async with self._pool.connection() as conn:
            stored = await fetch_key(conn, key_id)
        tenant = verify(self._pepper, key, stored)
        if tenant is not None and stored is not None and self._cache_s > 0:
            if len(self._cache) >= self._max_cached:
                self._cache.clear()
            self._cache[key_id] = _Cached(stored.key_hash, tenant, now + self._cache_s)
        elif cached is not None:
            del self._cache[key_id]
        return tenant
