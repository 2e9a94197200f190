"""How many router processes share the replicas — the gateway's replicas and the explain
stages, each with a router of its own — counted through the Redis that holds their
quotas, so that each applies its share of the admission limits (Admission.set_share).

Every process is a member of one sorted set per fleet of replicas (build.peers_key: the
pools' endpoints), scored by the time of its last heartbeat
(every `interval_s`); a member silent for `ttl_s` (a killed pod) is dropped by the next
heartbeat of any other. One heartbeat is one round trip: a script adding this one,
dropping the silent and counting, on Redis's clock (pods' clocks may differ).
Redis unreachable: the last count stands and the next heartbeat tries again — the
quotas then refuse anyway (quota store errors), so nothing is admitted on a stale share
for long."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Callable

import redis.asyncio as aioredis
import structlog

from pipeline.router.tasks import cancel_and_wait

log = structlog.get_logger(__name__)

# KEYS[1] the set; ARGV: member, ttl_s, now ("" = Redis's TIME). Add, drop the silent,
# count — atomically, on one clock.
_BEAT = """
local now = tonumber(ARGV[3])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
redis.call('EXPIRE', KEYS[1], math.max(1, math.ceil(ttl * 2)))
return redis.call('ZCARD', KEYS[1])
"""


class RouterPeers:
    def __init__(self, client: aioredis.Redis, key: str, on_count: Callable[[int], None], *,
                 interval_s: float = 5.0, ttl_s: float | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        self._client = client
        self._key = key
        self._on_count = on_count
        self._interval_s = interval_s
        self._ttl_s = ttl_s if ttl_s is not None else 3 * interval_s
        self._clock = clock  # None: Redis's own clock (pods' clocks may differ)
        self._beat = client.register_script(_BEAT)
        self.member = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.count = 1
        self._joined = False
        self._started: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    async def beat(self) -> int:
        """One heartbeat: this process counted as alive now, the silent ones dropped;
        returns (and hands `on_count`) how many are alive."""
        now = "" if self._clock is None else repr(self._clock())
        count = await self._beat(keys=[self._key],
                                 args=[self.member, self._ttl_s, now])
        self._joined = True
        self.count = max(1, int(count))
        self._on_count(self.count)
        return self.count

    async def start(self) -> None:
        """The first heartbeat — so the first requests are admitted on a counted share,
        not on all the limits — then one every `interval_s` in the background.
        Idempotent; concurrent callers wait for the same first heartbeat."""
        if self._started is None:
            self._started = asyncio.ensure_future(self._first())
        await asyncio.shield(self._started)

    async def _first(self) -> None:
        await self._beat_logged(min(self._interval_s, 1.0))  # never hold requests long
        self._task = asyncio.create_task(self._run(), name="router-peers")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self._beat_logged(self._interval_s)

    async def _beat_logged(self, timeout_s: float) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                await self.beat()
        except Exception as exc:  # keep the last count; the next beat tries again
            log.warning("router_peers_heartbeat_failed", error=repr(exc))

    async def close(self) -> None:
        """Stop, and leave the set at once (the others' next heartbeat counts one less)."""
        if self._started is not None and not self._started.done():
            await cancel_and_wait(self._started)  # type: ignore[arg-type]
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        if self._joined:  # leave the set (a router that never beat is not in it)
            try:
                async with asyncio.timeout(1.0):  # a stop is not held up by Redis
                    await self._client.zrem(self._key, self.member)
            except Exception as exc:  # gone with the TTL anyway
                log.warning("router_peers_leave_failed", error=repr(exc))
        await self._client.aclose()
