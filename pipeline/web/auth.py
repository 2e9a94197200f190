"""Bearer API key → tenant, with a short cache so a hot key costs no database trip."""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from psycopg_pool import AsyncConnectionPool

from pipeline.store.apikeys import StoredKey, fetch_key, hash_key, parse_key_id, verify

# A cached key is looked up again in the background during the last fifth of its
# cache time, so a hot key's requests never wait for the database.
REFRESH_AHEAD = 0.2


class KeyAuthenticator(Protocol):
    async def tenant_for(self, key: str) -> str | None: ...


class CachedKeys(Protocol):
    def cached_tenant(self, key: str, *, stale_ok: bool = False) -> str | None:
        """The tenant of a recently verified key, without I/O (None: not known now)."""
        ...


@dataclass(frozen=True)
class _Cached:
    key_hash: bytes
    tenant_id: str
    expires: float


class ApiKeyAuthenticator:
    """Verifies keys against api_keys. A looked-up key is trusted for `cache_s` seconds
    from the lookup (so a revocation takes effect within that time); unknown and revoked
    keys are never cached."""

    def __init__(self, pool: AsyncConnectionPool, pepper: bytes, *, cache_s: float,
                 max_cached: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._pool = pool
        self._pepper = pepper
        self._cache_s = cache_s
        self._max_cached = max_cached
        self._clock = clock
        self._cache: dict[str, _Cached] = {}
        self._lookups: dict[str, asyncio.Future[StoredKey | None]] = {}

    def cached_tenant(self, key: str, *, stale_ok: bool = False) -> str | None:
        """The tenant of a key verified within `cache_s` (or ever, with `stale_ok`: for
        deciding a refusal, which grants nothing), without any I/O; None when the key is
        not in the cache or does not match it."""
        key_id = parse_key_id(key)
        cached = self._cache.get(key_id) if key_id is not None else None
        if cached is None or (not stale_ok and cached.expires <= self._clock()):
            return None
        ok = hmac.compare_digest(cached.key_hash, hash_key(self._pepper, key))
        return cached.tenant_id if ok else None

    async def tenant_for(self, key: str) -> str | None:
        key_id = parse_key_id(key)
        if key_id is None:
            return None
        now = self._clock()
        cached = self._cache.get(key_id)
        if cached is not None and cached.expires > now:
            if cached.expires - now < self._cache_s * REFRESH_AHEAD:
                self._lookup(key_id)  # refreshed in the background; answered from cache
            ok = hmac.compare_digest(cached.key_hash, hash_key(self._pepper, key))
            return cached.tenant_id if ok else None
        return verify(self._pepper, key, await asyncio.shield(self._lookup(key_id)))

    def _lookup(self, key_id: str) -> asyncio.Future[StoredKey | None]:
        """One lookup per key id at a time: the requests arriving meanwhile share it
        instead of each taking a database connection."""
        lookup = self._lookups.get(key_id)
        if lookup is None:
            lookup = asyncio.ensure_future(self._fetch(key_id))
            self._lookups[key_id] = lookup

            def done(future: asyncio.Future[StoredKey | None]) -> None:
                self._lookups.pop(key_id, None)
                if not future.cancelled():
                    future.exception()  # retrieved: a failed refresh nobody awaited

            lookup.add_done_callback(done)
        return lookup

    async def _fetch(self, key_id: str) -> StoredKey | None:
        started = self._clock()
        async with self._pool.connection() as conn:
            stored = await fetch_key(conn, key_id)
        if stored is not None and not stored.revoked and self._cache_s > 0:
            if len(self._cache) >= self._max_cached:
                self._cache.clear()
            self._cache[key_id] = _Cached(stored.key_hash, stored.tenant_id,
                                          started + self._cache_s)
        else:
            self._cache.pop(key_id, None)
        return stored
